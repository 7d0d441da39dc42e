#!/bin/bash
# Call 12: the one-launch MemBlock cat (not kept) against the previous binary.
. tools/gpu/lib.sh
check channels-last $D/gpu_ops "channels-last"
alternate prev $D/flashvsr.prev new $D/flashvsr
profile new $D/flashvsr
FLASHVSR_CUDA_CAT_PAIR=0 profile pieces $D/flashvsr
fps "A sage new" $D/flashvsr bench --resolution 1408x768 --frames 77 --mode tiny --attention sage --random-weights --device cuda --json --runs 3
