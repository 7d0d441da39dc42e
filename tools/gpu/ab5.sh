#!/bin/bash
# Call 9: h29's merge; base/new; where the engine thread's host time goes at a pass's start.
. tools/gpu/lib.sh
check sage $D/gpu_ops "sage int8"
alternate base $D/flashvsr.base new $D/flashvsr
FLASHVSR_HOST_STALLS_MS=0.02 $D/flashvsr $H1080 --runs 1 --warmup 1 > /dev/null 2> $OUT/stalls.err
