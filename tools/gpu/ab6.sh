#!/bin/bash
# Call 11: the double-buffered last conv (not kept) against the previous binary.
. tools/gpu/lib.sh
check channels-last $D/gpu_ops "channels-last"
alternate prev $D/flashvsr.prev new $D/flashvsr
profile new $D/flashvsr
FLASHVSR_CUDA_DIRECT_CONV3_C128=0 profile generic $D/flashvsr
