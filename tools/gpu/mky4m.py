import sys
# A WxH (default 352x192) 4:2:0 y4m of N frames: moving gradients and a checker, deterministic.
# Usage: mky4m.py OUT [N] [WxH]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 77
w, h = map(int, sys.argv[3].split("x")) if len(sys.argv) > 3 else (352, 192)
with open(sys.argv[1], "wb") as f:
    f.write(f"YUV4MPEG2 W{w} H{h} F25:1 Ip A1:1 C420jpeg\n".encode())
    for t in range(n):
        f.write(b"FRAME\n")
        y = bytes(((x * 255 // w + 3 * t) ^ ((x // 16 + yy // 16 + t // 4) % 2) * 64) & 255 for yy in range(h) for x in range(w))
        u = bytes((128 + (x - w // 4) // 2 + t) & 255 for yy in range(h // 2) for x in range(w // 2))
        v = bytes((128 + (yy - h // 4) + 2 * t) & 255 for yy in range(h // 2) for x in range(w // 2))
        f.write(y + u + v)
