#!/bin/bash
# Session 14 call 2: the decoder on a second stream (--decoder-stream), 1080p and A; the same
# bytes with it on and off.
. tools/gpu/lib.sh
B=$D/flashvsr.split N=$D/flashvsr.ds
decoder_stream_bytes $N on off
for i in 1 2; do
  fps "1080p base" $B $H1080 --runs 3
  fps "1080p ds" $N $H1080 --runs 3
  FLASHVSR_CUDA_POOL_CROSS_WAITS=1 fps "1080p ds cross-waits" $N $H1080 --runs 3
done
A="bench --resolution 1408x768 --frames 77 --mode tiny --attention sage --random-weights --device cuda --json --runs 3"
fps "A base" $B $A
fps "A ds on" $N $A --decoder-stream on
fps "A ds auto" $N $A
BB="bench --resolution 1920x1024 --frames 45 --mode tiny --attention sage --random-weights --device cuda --json --runs 3"
fps "B base" $B $BB
fps "B ds" $N $BB
fps "full base" $B bench --resolution 1408x768 --frames 77 --mode full --attention sage --random-weights --device cuda --json --runs 3
fps "full ds on" $N bench --resolution 1408x768 --frames 77 --mode full --attention sage --random-weights --device cuda --json --runs 3 --decoder-stream on
