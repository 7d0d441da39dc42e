#!/bin/bash
# Session 14 call 4: the decoder stream at low priority against the same priority; one stream
# (off) against the base.
. tools/gpu/lib.sh
B=$D/flashvsr.split N=$D/flashvsr.ds
for i in 1 2; do
  fps "1080p base" $B $H1080 --runs 3
  fps "1080p ds low" $N $H1080 --runs 3
  FLASHVSR_CUDA_SIBLING_PRIORITY=same fps "1080p ds same" $N $H1080 --runs 3
  fps "1080p off" $N $H1080 --runs 3 --decoder-stream off
done
A="bench --resolution 1408x768 --frames 77 --mode tiny --attention sage --random-weights --device cuda --json --runs 3"
fps "A ds low" $N $A --decoder-stream on
FLASHVSR_CUDA_SIBLING_PRIORITY=same fps "A ds same" $N $A --decoder-stream on
fps "A off" $N $A
