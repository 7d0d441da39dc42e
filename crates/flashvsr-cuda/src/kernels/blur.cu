// The wavelet colour fix's dilated 3×3 binomial blur (FLASHVSR.md §8) of every (h, w) plane, with
// replicated borders. Summed row by row of the kernel in f32 and divided by 16 at the end, as
// the CPU backend does: the weights are powers of two, so every product (fused or not) is exact
// and the two agree bit for bit. `d` ≤ max(h, w): the host caps it, so `r + d` cannot overflow.

extern "C" __global__ void dilated_blur_f32(const float* __restrict__ x, float* __restrict__ y,
                                            u64 planes, u64 h, u64 w, u64 d) {
    const float taps[3] = {1.0f, 2.0f, 1.0f};
    const u64 plane = h * w;
    GRID_LOOP(i, planes * plane) {
        const u64 p = i / plane, rem = i % plane;
        const u64 r = rem / w, c = rem % w;
        const u64 rows[3] = {r >= d ? r - d : 0, r, r + d < h ? r + d : h - 1};
        const u64 cols[3] = {c >= d ? c - d : 0, c, c + d < w ? c + d : w - 1};
        const float* src = x + p * plane;
        float acc = 0.0f;
#pragma unroll
        for (int ky = 0; ky < 3; ++ky) {
            const float* row = src + rows[ky] * w;
#pragma unroll
            for (int kx = 0; kx < 3; ++kx) acc += taps[ky] * taps[kx] * row[cols[kx]];
        }
        y[i] = acc / 16.0f;
    }
}
