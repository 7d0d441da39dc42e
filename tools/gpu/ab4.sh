#!/bin/bash
# Call 7: the cross-attention q stored bf16; ordinary pinned staging (FLASHVSR_CUDA_UPLOAD_WC=0).
. tools/gpu/lib.sh
check qkv $D/gpu_ops "qkv split"
check norms $D/gpu_ops "row norm forms"
FLASHVSR_TEST_DEVICE=cuda FLASHVSR_TEST_PRECISION=fast check "golden fast" $D/golden_parity
for i in 1 2; do
  fps base $D/flashvsr.base $H1080 --runs 3
  fps new $D/flashvsr $H1080 --runs 3
  FLASHVSR_CUDA_UPLOAD_WC=0 fps wc0 $D/flashvsr $H1080 --runs 3
done
FLASHVSR_CUDA_UPLOAD_WC=0 profile new $D/flashvsr
