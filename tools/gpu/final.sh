#!/bin/bash
# Final checks and every Done-when config, base (gpu-carry/bin/flashvsr.base: the commit compared
# against) alternating, and the reference beside them (gpu-carry/refbench.py with its .ref/).
. tools/gpu/lib.sh
L=$OUT/checks.txt
t0=$(date +%s)
check gpu_ops $D/gpu_ops
FLASHVSR_TEST_DEVICE=cuda check "golden exact" $D/golden_parity
FLASHVSR_TEST_DEVICE=cuda FLASHVSR_TEST_PRECISION=fast check "golden fast" $D/golden_parity --nocapture
FLASHVSR_TEST_DEVICE=cuda check colour_fix_paths $D/colour_fix_paths --ignored
echo "checks $(( $(date +%s) - t0 )) s" >> $L
python3 tools/gpu/mky4m.py /tmp/in.y4m 77
for i in 1 2; do
  $D/flashvsr upscale /tmp/in.y4m -o /tmp/out$i.y4m --random-weights release --device cuda -y > /tmp/up$i.log 2>&1
  echo "rc upscale$i $? $(stat -c %s /tmp/out$i.y4m) $(md5sum < /tmp/out$i.y4m)" >> $L
done
cmp /tmp/out1.y4m /tmp/out2.y4m && echo "upscale deterministic: identical bytes" >> $L
tail -3 /tmp/up1.log >> $L
# The decoder stream (on by default at this size) against one stream: the same bytes.
decoder_stream_bytes $D/flashvsr auto off
A="bench --resolution 1408x768 --frames 77 --mode tiny --random-weights --device cuda --json"
for i in 1 2; do
  fps "1080p new" $D/flashvsr $H1080 --runs 5
  fps "1080p base" $D/flashvsr.base $H1080 --runs 5
  fps "1080p new, one stream" $D/flashvsr $H1080 --runs 5 --decoder-stream off
done
fps "A sage new" $D/flashvsr $A --attention sage --runs 5
fps "A sage base" $D/flashvsr.base $A --attention sage --runs 5
fps "A block new" $D/flashvsr $A --attention block --runs 5
fps "A block base" $D/flashvsr.base $A --attention block --runs 5
fps "A sage new, decoder stream on" $D/flashvsr $A --attention sage --runs 5 --decoder-stream on
fps "B 1920x1024 new" $D/flashvsr bench --resolution 1920x1024 --frames 45 --mode tiny --attention sage --random-weights --device cuda --json --runs 5
fps "B 1920x1024 base" $D/flashvsr.base bench --resolution 1920x1024 --frames 45 --mode tiny --attention sage --random-weights --device cuda --json --runs 5
fps "full sage new" $D/flashvsr bench --resolution 1408x768 --frames 77 --mode full --attention sage --random-weights --device cuda --json --runs 3
fps "A sage new (2)" $D/flashvsr $A --attention sage --runs 5
echo "bench done $(( $(date +%s) - t0 )) s" >> $L
if [ "${REF:-1}" = 1 ]; then
  (cd gpu-carry && timeout 200 python3 refbench.py --configs A,B --runs 3 --config-budget 40 --out /tmp/ref > /tmp/ref.log 2>&1; echo "rc refbench $?" >> $L; tail -30 /tmp/ref.log > $OUT/ref.txt; cp /tmp/ref/results.json $OUT/ref_results.json 2>/dev/null)
fi
echo "all done $(( $(date +%s) - t0 )) s" >> $L
