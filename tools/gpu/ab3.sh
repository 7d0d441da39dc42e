#!/bin/bash
# Call 5: the q/k/v projection stored bf16; checks, base/new, a profile with the op timeline.
. tools/gpu/lib.sh
check qkv $D/gpu_ops "qkv split"
FLASHVSR_TEST_DEVICE=cuda FLASHVSR_TEST_PRECISION=fast check "golden fast" $D/golden_parity
alternate base $D/flashvsr.base new $D/flashvsr
FLASHVSR_CUDA_OP_TIMELINE=$OUT/tl.tsv profile new $D/flashvsr
gzip $OUT/tl.tsv
