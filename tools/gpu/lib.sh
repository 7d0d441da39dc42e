# Shared by the device-call scripts (run from the repository root, gpu-carry/ beside them):
# the environment, and the steps each call combines. Results go to $OUT.
export LD_LIBRARY_PATH=/usr/local/cuda/targets/x86_64-linux/lib:/usr/local/cuda/lib64 XDG_CACHE_HOME=/tmp/fvcache
export FLASHVSR_GOLDEN=$PWD/gpu-carry/golden
D=gpu-carry/bin
H1080="bench --resolution 1920x1080 --frames 45 --mode tiny --attention sage --random-weights --device cuda --json"
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv,noheader >> $OUT/checks.txt

# check NAME CMD...: CMD with poisoned outputs; its log and exit status into checks.txt.
check() {
  local name=$1; shift
  FLASHVSR_CUDA_POISON=1 "$@" >> $OUT/checks.txt 2>&1
  echo "rc $name $?" >> $OUT/checks.txt
}

# fps NAME BIN ARGS...: one bench of BIN; into fps.txt its fps (median, min, max), run walls, NVML
# peak MiB, mask density and validity, empty query rows, pass phases (ms).
fps() {
  local name=$1 bin=$2; shift 2
  $bin "$@" > $OUT/f.json 2> $OUT/f.err || tail -3 $OUT/f.err >> $OUT/fps.txt
  python3 - "$name" $OUT/f.json >> $OUT/fps.txt <<'PY'
import json, sys
d = json.load(open(sys.argv[2]))
walls = [round(x * 1000, 1) for x in d["run_walls_s"]]
phases = {k: round(v, 1) for k, v in d["pass_phases_ms"].items()}
print(sys.argv[1], round(d["fps"], 3), "min", round(d["fps_min"], 2), "max", round(d["fps_max"], 2),
      walls, "nvml_MiB", d["peak_device_memory_bytes"] >> 20, "density", round(d["mask_density"], 4),
      "valid", d["masks_valid"], "empty", d["empty_query_rows"], phases)
PY
}

# alternate NAME_A BIN_A NAME_B BIN_B: two rounds of A then B at 1920×1080 (3 timed runs each).
alternate() {
  for i in 1 2; do fps "$1" "$2" $H1080 --runs 3; fps "$3" "$4" $H1080 --runs 3; done
}

# profile NAME BIN (environment before the call): one op-profiled 1080p pass into prof_NAME.err.
profile() {
  FLASHVSR_CUDA_OP_PROFILE=1 $2 $H1080 --runs 1 --warmup 1 > /dev/null 2> $OUT/prof_$1.err
}

# decoder_stream_bytes BIN ON OFF: `upscale` of 45 frames 480×270 → 1920×1080 with --decoder-stream ON and OFF
# (e.g. on off, or auto off); their sizes and md5 into checks.txt, and whether the bytes are the same.
decoder_stream_bytes() {
  local bin=$1 a=$2 b=$3
  python3 tools/gpu/mky4m.py /tmp/in1080.y4m 45 480x270
  for m in $a $b; do
    $bin upscale /tmp/in1080.y4m -o /tmp/o_$m.y4m --random-weights release --device cuda --decoder-stream $m -y > /tmp/u_$m.log 2>&1
    echo "rc upscale 1080p decoder-stream $m $? $(stat -c %s /tmp/o_$m.y4m) $(md5sum < /tmp/o_$m.y4m)" >> $OUT/checks.txt
  done
  grep -h "second stream" /tmp/u_$a.log >> $OUT/checks.txt
  cmp /tmp/o_$a.y4m /tmp/o_$b.y4m && echo "1080p decoder stream $a = $b: identical bytes" >> $OUT/checks.txt
  rm -f /tmp/o_*.y4m
}
