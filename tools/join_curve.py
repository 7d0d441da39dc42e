# Usage: python3 tools/join_curve.py FLASHVSR_BINARY INPUT.y4m FRAMES SEGMENT_FRAMES (needs numpy, Pillow, 2 GPUs).
# The join-difference curve (docs/SEGMENTS.md) on GPUs with full-size random weights: the single
# stream vs parallel jobs (--devices 0,1) with W warm-up and X cross-fade frames, 8-bit RGB codes.
import os, subprocess, sys, numpy as np
from PIL import Image
B, inp = sys.argv[1], sys.argv[2]
total, segment = int(sys.argv[3]), int(sys.argv[4])
common = ["--random-weights", "release", "--output-format", "png", "-q", "-y"]
def run(out, extra):
    subprocess.run([B, "upscale", inp, "-o", out] + common + extra, check=True)
    names = sorted(os.listdir(out))
    assert len(names) == total, (out, len(names))
    return [np.asarray(Image.open(os.path.join(out, n)).convert("RGB"), dtype=np.float64) for n in names]
s = run("/tmp/jc_stream", ["--device", "cuda:0"])
joins = list(range(segment, total, segment))
rows = []
for w in [8, 24, 56, 120]:
    for x in [0, 8]:
        p = run(f"/tmp/jc_w{w}x{x}", ["--devices", "0,1", "--segment-frames", str(segment),
                                        "--warmup-frames", str(w), "--crossfade-frames", str(x)])
        d = lambda j: np.abs(p[j] - s[j]).mean()
        after = [d(j) for a in joins for j in range(a, a + 8)]
        around = [d(j) for a in joins for j in range(a - 8, a + 8)]
        far = [d(j) for a in joins for j in range(a + 8, min(a + segment - 8, total))]
        seams = [max(np.abs((p[j + 1] - p[j]) - (s[j + 1] - s[j])).mean() for j in range(a - 9, a + 8)) for a in joins]
        rows.append(f"| {w:>3} | {x} | {np.mean(after):.3f} | {np.max(after):.3f} | {np.mean(around):.3f} | {np.mean(far):.3f} | {np.mean(seams):.3f} |")
        print(rows[-1], flush=True)
print("| W | X | after join: mean | after join: max | ±8 around join: mean | rest of segment: mean | seam: max excess step |")
print("|---|---|---|---|---|---|---|")
print("\n".join(rows))
