#!/bin/bash
# Session 14 call 3: the decoder stream with queue-point hand-overs (no wait for the DiT's
# stream at each chunk); the same bytes with it on and off.
. tools/gpu/lib.sh
L=$OUT/checks.txt
B=$D/flashvsr.split N=$D/flashvsr.ds
python3 tools/gpu/mky4m.py /tmp/in.y4m 45 480x270
for m in on off; do
  $N upscale /tmp/in.y4m -o /tmp/out_$m.y4m --random-weights release --device cuda --decoder-stream $m -y > /tmp/up_$m.log 2>&1
  echo "rc upscale $m $? $(stat -c %s /tmp/out_$m.y4m) $(md5sum < /tmp/out_$m.y4m)" >> $L
done
cmp /tmp/out_on.y4m /tmp/out_off.y4m && echo "decoder stream on/off: identical bytes" >> $L
for i in 1 2; do
  fps "1080p base" $B $H1080 --runs 3
  fps "1080p ds" $N $H1080 --runs 3
done
A="bench --resolution 1408x768 --frames 77 --mode tiny --attention sage --random-weights --device cuda --json --runs 3"
fps "A base" $B $A
fps "A ds on" $N $A --decoder-stream on
