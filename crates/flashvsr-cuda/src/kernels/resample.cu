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

// One thread per output pixel (t, y, x), all channels: the taps are read once per pixel, the
// channels' levels are adjacent, and each channel's plane is written coalesced along x.
extern "C" __global__ void resample_levels_f32(const float* __restrict__ levels,
                                               const float* __restrict__ taps_x,
                                               const float* __restrict__ taps_y,
                                               float* __restrict__ out, u64 frames, u64 h, u64 w,
                                               u64 channels, u64 cols, u64 x_columns, u64 rows,
                                               u64 y_columns, u64 ox, u64 oy, u64 out_w,
                                               u64 out_h, int bits) {
    const u64 plane = out_h * out_w;
    const unsigned int half = 1u << (bits - 1);
    GRID_LOOP(i, frames * plane) {
        const u64 t = i / plane, rem = i % plane;
        const u64 y = rem / out_w, x = rem % out_w;
        const TapRow tx = tap_row(taps_x, x_columns, min(x + ox, cols - 1), w);
        const TapRow ty = tap_row(taps_y, y_columns, min(y + oy, rows - 1), h);
        const float* frame = levels + t * h * w * channels;
        for (u64 c = 0; c < channels; ++c) {
            unsigned int acc_v = half;
            for (u64 j = 0; j < ty.count; ++j) {
                const float* src = frame + min(ty.start + j, h - 1) * w * channels + c;
                unsigned int acc_h = half;
                for (u64 k = 0; k < tx.count; ++k) {
                    const u64 col = min(tx.start + k, w - 1);
                    acc_h += (unsigned int)__float2int_rz(src[col * channels]) *
                             (unsigned int)__float2int_rz(tx.weights[k]);
                }
                acc_v += clip8(acc_h, bits) * (unsigned int)__float2int_rz(ty.weights[j]);
            }
            const float level = (float)clip8(acc_v, bits);
            // v / 255 · 2 − 1 with each step rounded, as the host computes it.
            out[(c * frames + t) * plane + rem] =
                __fsub_rn(__fmul_rn(__fdiv_rn(level, 255.0f), 2.0f), 1.0f);
        }
    }
}
