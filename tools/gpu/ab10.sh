#!/bin/bash
# Session 14 call 3: the decoder stream with queue-point hand-overs (no wait for the DiT's
# stream at each chunk); the same bytes with it on and off.
. tools/gpu/lib.sh
B=$D/flashvsr.split N=$D/flashvsr.ds
decoder_stream_bytes $N on off
alternate "1080p base" $B "1080p ds" $N
A="bench --resolution 1408x768 --frames 77 --mode tiny --attention sage --random-weights --device cuda --json --runs 3"
fps "A base" $B $A
fps "A ds on" $N $A --decoder-stream on
