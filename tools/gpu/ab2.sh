#!/bin/bash
# Call 4: the rows pool (the pass's tail), tiled head scores; checks, base/new, a profile.
. tools/gpu/lib.sh
check head_scores $D/gpu_ops "head_scores"
FLASHVSR_TEST_DEVICE=cuda check "golden exact" $D/golden_parity
alternate base $D/flashvsr.base new $D/flashvsr
profile new $D/flashvsr
