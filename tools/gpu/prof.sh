#!/bin/bash
# One 1080p baseline and one profiled pass with the op timeline.
set -x
export LD_LIBRARY_PATH=/usr/local/cuda/targets/x86_64-linux/lib:/usr/local/cuda/lib64 XDG_CACHE_HOME=/tmp/fvcache
B=${B:-gpu-carry/bin/flashvsr}
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv > $OUT/smi.txt
$B bench --resolution 1920x1080 --frames 45 --mode tiny --attention sage --random-weights --device cuda --json --runs 3 > $OUT/fps.json 2> $OUT/fps.err
FLASHVSR_CUDA_OP_PROFILE=1 FLASHVSR_CUDA_OP_TIMELINE=$OUT/tl.tsv $B bench --resolution 1920x1080 --frames 45 --mode tiny --attention sage --random-weights --device cuda --json --runs 1 --warmup 1 > $OUT/prof.json 2> $OUT/prof.err
python3 gpu-carry/opsum.py $OUT/prof.err > $OUT/opsum.txt
gzip $OUT/tl.tsv
