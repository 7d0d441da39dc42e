# Regenerate with: python3 gen_pil_reference.py > pil_reference.txt (needs Pillow).
# Generates tests/data/pil_reference.txt with Pillow (version printed in the header line).
import PIL
from PIL import Image
M = (1 << 64) - 1
def noise(n, seed):
    x = seed
    out = bytearray()
    for _ in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) & M
        out.append(x >> 56)
    return bytes(out)
cases = [
    (13, 11, 3, 5, 4, 1), (13, 11, 3, 7, 17, 2), (13, 11, 3, 29, 23, 3), (13, 11, 3, 3, 30, 4),
    (13, 11, 3, 52, 44, 5), (13, 11, 3, 1, 1, 6), (13, 11, 3, 13, 5, 7), (13, 11, 3, 40, 11, 8),
    (64, 48, 3, 10, 7, 9), (9, 7, 1, 20, 3, 10), (2, 2, 3, 9, 9, 11), (1, 1, 3, 4, 4, 12),
    (17, 9, 3, 51, 27, 13), (100, 3, 1, 7, 1, 14), (13, 11, 3, 26, 5, 15), (13, 11, 3, 13, 4, 16),
]
print(f"# Pillow {PIL.__version__} Image.resize(BICUBIC); w h channels out_w out_h seed output_hex")
for w, h, c, ow, oh, seed in cases:
    mode = {1: "L", 3: "RGB"}[c]
    img = Image.frombytes(mode, (w, h), noise(w * h * c, seed))
    out = img.resize((ow, oh), Image.BICUBIC).tobytes()
    print(w, h, c, ow, oh, seed, out.hex())
