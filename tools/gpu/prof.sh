#!/bin/bash
# Call 1: a 1080p baseline and one op-profiled pass with the op timeline.
. tools/gpu/lib.sh
fps new $D/flashvsr $H1080 --runs 3
FLASHVSR_CUDA_OP_TIMELINE=$OUT/tl.tsv profile new $D/flashvsr
python3 tools/gpu/opsum.py $OUT/prof_new.err > $OUT/opsum.txt
gzip $OUT/tl.tsv
