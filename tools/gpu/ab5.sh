#!/bin/bash
export LD_LIBRARY_PATH=/usr/local/cuda/targets/x86_64-linux/lib:/usr/local/cuda/lib64 XDG_CACHE_HOME=/tmp/fvcache
export FLASHVSR_GOLDEN=$PWD/gpu-carry/golden
D=gpu-carry/bin
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv,noheader > $OUT/checks.txt
FLASHVSR_CUDA_POISON=1 $D/gpu_ops "sage int8" >> $OUT/checks.txt 2>&1; echo "rc sage $?" >> $OUT/checks.txt
B="bench --resolution 1920x1080 --frames 45 --mode tiny --attention sage --random-weights --device cuda --json"
for i in 1 2; do
  for v in base new; do
    bin=$D/flashvsr; [ $v = base ] && bin=$D/flashvsr.base
    $bin $B --runs 3 > $OUT/f.json 2>/dev/null
    python3 -c "import json;d=json.load(open('$OUT/f.json'));w=d['run_walls_s'];print('$v', round(d['fps'],3), [round(x*1000,1) for x in w], {k:round(v,1) for k,v in d['pass_phases_ms'].items()}, d['peak_device_memory_bytes']>>20)" >> $OUT/fps.txt
  done
done
FLASHVSR_HOST_STALLS_MS=0.02 $D/flashvsr $B --runs 1 --warmup 1 > /dev/null 2> $OUT/stalls.err
python3 - $OUT/stalls.err > $OUT/stalls.txt <<'PY'
import sys, collections
rows=[]
for l in open(sys.argv[1]):
    p=l.split()
    if len(p)>=5 and p[0]=='host' and p[1]=='stall':
        rows.append((' '.join(p[2:-3]), float(p[-3]), float(p[-1])))
if not rows: print('no stalls'); sys.exit()
# last pass: take events after the largest gap in time
times=[r[2] for r in rows]
gaps=[(times[i+1]-times[i], i) for i in range(len(times)-1)]
start=max(gaps)[1]+1 if gaps else 0
last=rows[start:]
t0=last[0][2]
first=[r for r in last if r[2]-t0 < 0.012]
agg=collections.defaultdict(lambda:[0,0.0])
for r in first: agg[r[0]][0]+=1; agg[r[0]][1]+=r[1]
print('events in the last pass', len(last), 'first 12 ms:')
for k,v in sorted(agg.items(), key=lambda x:-x[1][1]): print(f'{v[1]:8.3f} ms {v[0]:5d} {k}')
for r in first[:60]: print(f'{(r[2]-t0)*1e3:8.3f} {r[1]:7.3f} {r[0]}')
PY
