#!/bin/bash
# Checks of the new binaries, then 1080p base/new alternating, then op profiles.
export LD_LIBRARY_PATH=/usr/local/cuda/targets/x86_64-linux/lib:/usr/local/cuda/lib64 XDG_CACHE_HOME=/tmp/fvcache
export FLASHVSR_GOLDEN=$PWD/gpu-carry/golden
D=gpu-carry/bin
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv > $OUT/smi.txt
FLASHVSR_CUDA_POISON=1 $D/gpu_ops "channels-last" > $OUT/checks.txt 2>&1; echo "rc channels-last $?" >> $OUT/checks.txt
FLASHVSR_CUDA_POISON=1 $D/gpu_ops "sage int8" >> $OUT/checks.txt 2>&1; echo "rc sage $?" >> $OUT/checks.txt
FLASHVSR_TEST_DEVICE=cuda FLASHVSR_CUDA_POISON=1 FLASHVSR_TEST_PRECISION=fast $D/golden_parity >> $OUT/checks.txt 2>&1; echo "rc golden fast $?" >> $OUT/checks.txt
B="bench --resolution 1920x1080 --frames 45 --mode tiny --attention sage --random-weights --device cuda --json"
for i in 1 2; do
  for v in base new; do
    bin=$D/flashvsr; [ $v = base ] && bin=$D/flashvsr.base
    $bin $B --runs 3 > $OUT/f.json 2>/dev/null
    python3 -c "import json;d=json.load(open('$OUT/f.json'));print('$v', round(d['fps'],3), d['pass_phases_ms'], d['peak_device_memory_bytes']>>20, d['stages_ms']['decode'])" >> $OUT/fps.txt
  done
done
for v in new c128off; do
  e=""; [ $v = c128off ] && e="FLASHVSR_CUDA_DIRECT_CONV3_C128=0"
  env $e FLASHVSR_CUDA_OP_PROFILE=1 $D/flashvsr $B --runs 1 --warmup 1 > /dev/null 2> $OUT/prof_$v.err
  python3 gpu-carry/opsum.py $OUT/prof_$v.err > $OUT/opsum_$v.txt
done
FLASHVSR_CUDA_OP_PROFILE=1 $D/flashvsr.base $B --runs 1 --warmup 1 > /dev/null 2> $OUT/prof_base.err
