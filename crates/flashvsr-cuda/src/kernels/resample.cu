// Tensor::resample_levels: source levels (n, h, w, c) through separable fixed-point taps onto a
// canvas window, (c, n, H, W) in [-1, 1] (the LQ frames' Pillow bicubic upscale, FLASHVSR.md §2.2).
// The integers of the CPU backend (flashvsr-tensor cpu/resample.rs), so the two agree bit for bit:
// at each output pixel, the horizontal pass at each source row the vertical taps read, then the
// vertical pass over those; each pass summed in wrapping 32-bit integers (unsigned here, where
// wrapping is defined), shifted arithmetically and clipped to 0..255. The conversions from the
// f32 entries are the intrinsics (saturating, NaN → 0) so that they match Rust's `as`.
//
// Tables: per output, the row [start, count, w0, ..., w(k-1)] of `columns` = 2 + k floats. The
// host caps the window origin at the resampled size, so `x + ox` cannot overflow.

typedef unsigned int u32;

struct TapRow {
    u64 start;
    u64 count;
    const float* weights;
};

// Output i's taps, reading `len` inputs: the start is kept inside them as the host does.
__device__ __forceinline__ TapRow tap_row(const float* table, u64 columns, u64 i, u64 len) {
    const float* row = table + i * columns;
    TapRow t;
    t.start = min(__float2ull_rz(row[0]), len - 1);
    t.count = min(__float2ull_rz(row[1]), columns - 2);
    t.weights = row + 2;
    return t;
}

// Pillow's clip8 of a fixed-point sum.
__device__ __forceinline__ unsigned int clip8(unsigned int acc, int bits) {
    const int v = (int)acc >> bits;
    return (unsigned int)(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// Two passes, as Pillow computes it: the horizontal taps once per (source row, output column) into
// 8-bit levels, then the vertical taps over those. (One fused pass redid the horizontal sum for
// every output row that reads a source row: four times at ×4.) Sizes fit 32 bits (the host checks).

// levels (n, h, w, c) f32 → rows (n, h, out_w, c) u8: one thread per (t, r, x), all channels.
extern "C" __global__ void resample_rows_u8(const float* __restrict__ levels,
                                            const float* __restrict__ taps_x,
                                            unsigned char* __restrict__ rows_out, u32 frames,
                                            u32 h, u32 w, u32 channels, u32 cols, u32 x_columns,
                                            u32 ox, u32 out_w, int bits) {
    const unsigned int half = 1u << (bits - 1);
    const u32 n = frames * h * out_w;
    for (u32 i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const u32 x = i % out_w, tr = i / out_w;
        const TapRow tx = tap_row(taps_x, x_columns, min(x + ox, cols - 1), w);
        const float* src = levels + (u64)tr * w * channels;
        unsigned char* dst = rows_out + (u64)i * channels;
        for (u32 c = 0; c < channels; ++c) {
            unsigned int acc = half;
            for (u32 k = 0; k < (u32)tx.count; ++k) {
                const u32 col = min((u32)tx.start + k, w - 1);
                acc += (unsigned int)__float2int_rz(src[col * channels + c]) *
                       (unsigned int)__float2int_rz(tx.weights[k]);
            }
            dst[c] = (unsigned char)clip8(acc, bits);
        }
    }
}

// rows (n, h, out_w, c) u8 → out (c, n, out_h, out_w) in [-1, 1]: one thread per (t, y, x).
extern "C" __global__ void resample_columns_f32(const unsigned char* __restrict__ rows_in,
                                               const float* __restrict__ taps_y,
                                               float* __restrict__ out, u32 frames, u32 h,
                                               u32 channels, u32 rows, u32 y_columns, u32 oy,
                                               u32 out_w, u32 out_h, int bits) {
    const unsigned int half = 1u << (bits - 1);
    const u32 plane = out_h * out_w, n = frames * plane;
    for (u32 i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const u32 t = i / plane, rem = i % plane;
        const u32 y = rem / out_w, x = rem % out_w;
        const TapRow ty = tap_row(taps_y, y_columns, min(y + oy, rows - 1), h);
        const unsigned char* src = rows_in + ((u64)t * h * out_w + x) * channels;
        for (u32 c = 0; c < channels; ++c) {
            unsigned int acc = half;
            for (u32 j = 0; j < (u32)ty.count; ++j) {
                const u32 r = min((u32)ty.start + j, h - 1);
                acc += (unsigned int)src[(u64)r * out_w * channels + c] *
                       (unsigned int)__float2int_rz(ty.weights[j]);
            }
            const float level = (float)clip8(acc, bits);
            // v / 255 · 2 − 1 with each step rounded, as the host computes it.
            out[((u64)c * frames + t) * plane + rem] =
                __fsub_rn(__fmul_rn(__fdiv_rn(level, 255.0f), 2.0f), 1.0f);
        }
    }
}
