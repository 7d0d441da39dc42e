#!/bin/bash
export LD_LIBRARY_PATH=/usr/local/cuda/targets/x86_64-linux/lib:/usr/local/cuda/lib64 XDG_CACHE_HOME=/tmp/fvcache
D=gpu-carry/bin
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv,noheader > $OUT/checks.txt
FLASHVSR_CUDA_POISON=1 $D/gpu_ops "channels-last" >> $OUT/checks.txt 2>&1; echo "rc channels-last $?" >> $OUT/checks.txt
B="bench --resolution 1920x1080 --frames 45 --mode tiny --attention sage --random-weights --device cuda --json"
for i in 1 2; do
  for v in prev new; do
    bin=$D/flashvsr; [ $v = prev ] && bin=$D/flashvsr.prev
    $bin $B --runs 3 > $OUT/f.json 2>/dev/null
    python3 -c "import json;d=json.load(open('$OUT/f.json'));w=d['run_walls_s'];print('$v', round(d['fps'],3), [round(x*1000,1) for x in w], {k:round(v,1) for k,v in d['pass_phases_ms'].items()}, d['peak_device_memory_bytes']>>20)" >> $OUT/fps.txt
  done
done
for v in new pieces; do
  e=""; [ $v = pieces ] && e="FLASHVSR_CUDA_CAT_PAIR=0"
  env $e FLASHVSR_CUDA_OP_PROFILE=1 $D/flashvsr $B --runs 1 --warmup 1 > /dev/null 2> $OUT/prof_$v.err
done
A="bench --resolution 1408x768 --frames 77 --mode tiny --attention sage --random-weights --device cuda --json --runs 3"
$D/flashvsr $A > $OUT/a.json 2>/dev/null; python3 -c "import json;d=json.load(open('$OUT/a.json'));print('A sage new', round(d['fps'],2), d['peak_device_memory_bytes']>>20)" >> $OUT/fps.txt
