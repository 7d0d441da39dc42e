#!/bin/bash
# Session 14: resume with the decoder stream on a GPU. 45 frames 480×270 → 1920×1080 in segments of 16
# output frames (stream checkpoints with chunks between the two streams), once straight through, once
# stopped by SIGINT after its first commit and run again; both against the one-stream bytes.
# (Run once in session 14 with a 12-second cap on the wait: the job ended first, so its interrupt step
# tested nothing; this form waits while the job runs. It also found the lost frames of BENCHMARKS.md.)
. tools/gpu/lib.sh
L=$OUT/checks.txt
python3 tools/gpu/mky4m.py /tmp/in1080.y4m 45 480x270
up() { $D/flashvsr upscale /tmp/in1080.y4m -o $1 --random-weights release --device cuda --segment-frames 16 "${@:2}"; }
up /tmp/one.y4m --decoder-stream off -y > /tmp/one.log 2>&1; echo "rc one stream $? $(md5sum < /tmp/one.y4m)" >> $L
up /tmp/two.y4m -y > /tmp/two.log 2>&1; echo "rc decoder stream $? $(md5sum < /tmp/two.y4m)" >> $L
grep -h "second stream" /tmp/two.log >> $L
up /tmp/cut.y4m -y > /tmp/cut1.log 2>&1 &
pid=$!
while kill -0 $pid 2>/dev/null && [ -z "$(ls /tmp/cut.y4m.flashvsr/done 2>/dev/null)" ]; do
  sleep 0.02
done
kill -INT $pid; wait $pid; echo "rc interrupted $? after $(ls /tmp/cut.y4m.flashvsr/done 2>/dev/null | wc -l) commit(s)" >> $L
tail -1 /tmp/cut1.log >> $L
up /tmp/cut.y4m > /tmp/cut2.log 2>&1; echo "rc resumed $? $(md5sum < /tmp/cut.y4m)" >> $L
grep -h "resuming" /tmp/cut2.log >> $L
cmp /tmp/one.y4m /tmp/two.y4m && echo "segmented: decoder stream = one stream" >> $L
cmp /tmp/one.y4m /tmp/cut.y4m && echo "resumed with the decoder stream = one stream" >> $L
