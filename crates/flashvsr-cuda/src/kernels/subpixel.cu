// Nearest 2x upsampling followed by a 3x3 conv (zero pad 1), as one 2x2 conv over the small frame
// with four output phases and a pixel shuffle (ops/upsample_conv.rs). Output pixel (2i + a, 2j + b)
// sees the upsampled rows 2i + a − 1 .. 2i + a + 1, which are small rows i − 1, i, i (a = 0) or
// i, i, i + 1 (a = 1): two distinct rows, each weighted by the sum of the taps that land on it.
// Same for columns. The 2x2 conv with zero pad 1 gives (h + 1) x (w + 1) positions; position
// (r, s) covers small rows r − 1, r and columns s − 1, s, so phase (a, b) of pixel (i, j) is
// position (i + a, j + b).

typedef unsigned int u32;

__device__ __forceinline__ u32 sp_bf16_bits(float f) {
    const u32 b = __float_as_uint(f);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (b >> 16) | 0x40u;
    return (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
}

// First and last 3x3 tap (0..2) that kernel row (or column) r of phase a sums.
__device__ __forceinline__ int sp_first_tap(int a, int r) { return r == 0 ? 0 : (a == 0 ? 1 : 2); }
__device__ __forceinline__ int sp_last_tap(int a, int r) { return r == 0 ? a : 2; }

// w (O, C, 1, 3, 3) f32 → y bf16 KRSC [4·O][2][2][C], output channel (2a + b)·O + o.
extern "C" __global__ void subpixel_weight_bf16(const float* __restrict__ w, u16* __restrict__ y,
                                                u64 o_count, u64 c_count) {
    GRID_LOOP(i, 16 * o_count * c_count) {
        const u64 c = i % c_count;
        const int s = (int)((i / c_count) % 2), r = (int)((i / (2 * c_count)) % 2);
        const u64 k = i / (4 * c_count);
        const u64 phase = k / o_count, o = k % o_count;
        const int a = (int)(phase / 2), b = (int)(phase % 2);
        const float* src = w + (o * c_count + c) * 9;
        float acc = 0.0f;
        for (int ky = sp_first_tap(a, r); ky <= sp_last_tap(a, r); ++ky)
            for (int kx = sp_first_tap(b, s); kx <= sp_last_tap(b, s); ++kx) acc += src[ky * 3 + kx];
        y[i] = (u16)sp_bf16_bits(acc);
    }
}

// p: the phases' conv output, bf16 [frames][h + 1][w + 1][4·o8 groups of 8]; out: channels-last
// bf16 [frames][2h][2w][o8 groups], bias (may be null) added in f32, then ReLU when `relu` (on the
// rounded value, which equals rounding after the ReLU). `I`: the index type. With 64-bit indices
// every 16 bytes cost six 64-bit divisions and remainders (a library routine each); the 32-bit
// form (subpixel_shuffle_bf16_i32, both arrays below 2^31 groups) costs a fraction of that.
template <typename I>
__device__ __forceinline__ void sp_shuffle(const uint4* __restrict__ p, const float* __restrict__ bias,
                                           uint4* __restrict__ out, I frames, I h, I w, I o8,
                                           bool relu) {
    const I oh = 2 * h, ow = 2 * w, n = frames * oh * ow * o8;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x) {
        const I k = i % o8, pos = i / o8;
        const I x = pos % ow, rest = pos / ow;
        const I yy = rest % oh, f = rest / oh;
        const I a = yy & 1, b = x & 1;
        const I at = ((f * (h + 1) + (yy >> 1) + a) * (w + 1) + (x >> 1) + b) * (4 * o8);
        const uint4 v = p[at + (2 * a + b) * o8 + k];
        u32 words[4] = {v.x, v.y, v.z, v.w};
        if (bias != 0) {
#pragma unroll
            for (int m = 0; m < 4; ++m) {
                const float lo = __uint_as_float(words[m] << 16) + bias[k * 8 + 2 * m];
                const float hi = __uint_as_float(words[m] & 0xffff0000u) + bias[k * 8 + 2 * m + 1];
                words[m] = sp_bf16_bits(lo) | (sp_bf16_bits(hi) << 16);
            }
        }
        if (relu) {
#pragma unroll
            for (int m = 0; m < 4; ++m) {
                // As channels_last_relu: NaN -> 0, exact on bf16 values.
                const float lo = fmaxf(__uint_as_float(words[m] << 16), 0.0f);
                const float hi = fmaxf(__uint_as_float(words[m] & 0xffff0000u), 0.0f);
                words[m] = sp_bf16_bits(lo) | (sp_bf16_bits(hi) << 16);
            }
        }
        out[i] = make_uint4(words[0], words[1], words[2], words[3]);
    }
}

extern "C" __global__ void subpixel_shuffle_bf16(const uint4* __restrict__ p,
                                                 const float* __restrict__ bias,
                                                 uint4* __restrict__ out, u64 frames, u64 h, u64 w,
                                                 u64 o8, u64 relu) {
    sp_shuffle<u64>(p, bias, out, frames, h, w, o8, relu != 0);
}

extern "C" __global__ void subpixel_shuffle_bf16_i32(const uint4* __restrict__ p,
                                                     const float* __restrict__ bias,
                                                     uint4* __restrict__ out, u32 frames, u32 h,
                                                     u32 w, u32 o8, u32 relu) {
    sp_shuffle<u32>(p, bias, out, frames, h, w, o8, relu != 0);
}
