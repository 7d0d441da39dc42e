#!/bin/bash
# Call 2: the K-mean sample, the 128-channel last conv, staging copies; checks, base/new, profiles.
. tools/gpu/lib.sh
check channels-last $D/gpu_ops "channels-last"
check sage $D/gpu_ops "sage int8"
FLASHVSR_TEST_DEVICE=cuda FLASHVSR_TEST_PRECISION=fast check "golden fast" $D/golden_parity
alternate base $D/flashvsr.base new $D/flashvsr
profile new $D/flashvsr
FLASHVSR_CUDA_DIRECT_CONV3_C128=0 profile c128off $D/flashvsr
profile base $D/flashvsr.base
python3 tools/gpu/opsum.py $OUT/prof_new.err > $OUT/opsum_new.txt
