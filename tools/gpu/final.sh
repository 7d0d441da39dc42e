#!/bin/bash
# Final checks and every Done-when config, base (flashvsr.base = session start f6ad01b) alternating,
# and the reference beside them. Writes ≤ 8 files to $OUT.
export LD_LIBRARY_PATH=/usr/local/cuda/targets/x86_64-linux/lib:/usr/local/cuda/lib64 XDG_CACHE_HOME=/tmp/fvcache
export FLASHVSR_GOLDEN=$PWD/gpu-carry/golden
D=$PWD/gpu-carry/bin
L=$OUT/checks.txt
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader > $L
t0=$(date +%s)
FLASHVSR_CUDA_POISON=1 $D/gpu_ops > $OUT/gpu_ops.txt 2>&1; echo "rc gpu_ops $? $(tail -1 $OUT/gpu_ops.txt)" >> $L
FLASHVSR_TEST_DEVICE=cuda FLASHVSR_CUDA_POISON=1 $D/golden_parity > $OUT/golden.txt 2>&1; echo "rc golden exact $?" >> $L
FLASHVSR_TEST_DEVICE=cuda FLASHVSR_CUDA_POISON=1 FLASHVSR_TEST_PRECISION=fast $D/golden_parity --nocapture >> $OUT/golden.txt 2>&1; echo "rc golden fast $?" >> $L
FLASHVSR_TEST_DEVICE=cuda $D/colour_fix_paths --ignored >> $OUT/golden.txt 2>&1; echo "rc colour_fix_paths $?" >> $L
echo "checks $(( $(date +%s) - t0 )) s" >> $L
python3 gpu-carry/mky4m.py /tmp/in.y4m 77
for i in 1 2; do $D/flashvsr upscale /tmp/in.y4m -o /tmp/out$i.y4m --random-weights release --device cuda -y > /tmp/up$i.log 2>&1; echo "rc upscale$i $? $(stat -c %s /tmp/out$i.y4m) $(md5sum < /tmp/out$i.y4m)" >> $L; done
cmp /tmp/out1.y4m /tmp/out2.y4m && echo "upscale deterministic: identical bytes" >> $L
tail -3 /tmp/up1.log >> $L
B="bench --random-weights --device cuda --json"
bench() { # name binary args...
  local name=$1 bin=$2; shift 2
  $bin $B "$@" > /tmp/f.json 2>/tmp/f.err
  python3 -c "import json;d=json.load(open('/tmp/f.json'));print('$name', round(d['fps'],2), 'min',round(d['fps_min'],2),'max',round(d['fps_max'],2), 'nvml_MiB', d['peak_device_memory_bytes']>>20, 'density', round(d['mask_density'],4), 'valid', d['masks_valid'], 'empty', d['empty_query_rows'], {k:round(v,1) for k,v in d['pass_phases_ms'].items()})" >> $OUT/fps.txt 2>&1 || tail -3 /tmp/f.err >> $OUT/fps.txt
}
A="--resolution 1408x768 --frames 77 --mode tiny"
H="--resolution 1920x1080 --frames 45 --mode tiny --attention sage"
for i in 1 2; do
  bench "1080p new" $D/flashvsr $H --runs 5
  bench "1080p base" $D/flashvsr.base $H --runs 5
  FLASHVSR_CUDA_PARALLEL_COPY_MIN=1048576 bench "1080p new copies>=1M" $D/flashvsr $H --runs 5
done
bench "A sage new" $D/flashvsr $A --attention sage --runs 5
bench "A sage base" $D/flashvsr.base $A --attention sage --runs 5
bench "A block new" $D/flashvsr $A --attention block --runs 5
bench "A block base" $D/flashvsr.base $A --attention block --runs 5
bench "full sage new" $D/flashvsr --resolution 1408x768 --frames 77 --mode full --attention sage --runs 3
bench "A sage new (2)" $D/flashvsr $A --attention sage --runs 5
cp /tmp/f.json $OUT/last_bench.json
echo "bench done $(( $(date +%s) - t0 )) s" >> $L
if [ "${REF:-1}" = 1 ]; then
  (cd gpu-carry && timeout 200 python3 refbench.py --configs A,B --runs 3 --config-budget 40 --out /tmp/ref > /tmp/ref.log 2>&1; echo "rc refbench $?" >> $L; tail -30 /tmp/ref.log > $OUT/ref.txt; cp /tmp/ref/results.json $OUT/ref_results.json 2>/dev/null)
fi
echo "all done $(( $(date +%s) - t0 )) s" >> $L
