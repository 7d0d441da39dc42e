// AdaIN colour transfer per plane: statistics in double like the CPU (cpu/adain.rs), population
// variance + 1e-5, then each value mapped and clamped to [-1, 1]. A plane (a 1408×768 frame
// channel has a million values) is summed by ADAIN_PARTS CTAs, whose partial sums are added in
// a fixed order: the same bits on every run (resumed jobs must reproduce their frames).

#define ADAIN_PARTS 64

// grid (ADAIN_PARTS, planes): partial[plane · ADAIN_PARTS + part] = Σ x over the part's slice, or
// Σ (x − mean)² when `stats` is given (its means, from the first pass).
extern "C" __global__ void plane_partial_sums_f32(const float* __restrict__ x,
                                                  const double* __restrict__ stats,
                                                  double* __restrict__ partial, u64 plane) {
    __shared__ double scratch[32];
    const u64 p = blockIdx.y, part = blockIdx.x;
    const u64 begin = plane * part / ADAIN_PARTS, end = plane * (part + 1) / ADAIN_PARTS;
    const float* xp = x + p * plane;
    const double mean = stats ? stats[2 * p] : 0.0;
    double s = 0.0;
    for (u64 i = begin + threadIdx.x; i < end; i += blockDim.x) {
        const double v = (double)xp[i];
        s += stats ? (v - mean) * (v - mean) : v;
    }
    s = block_sum_d(s, scratch);
    if (threadIdx.x == 0) partial[p * ADAIN_PARTS + part] = s;
}

// One thread per plane: the mean (`deviation` 0) or √(var + eps) (`deviation` 1) from the parts.
extern "C" __global__ void plane_stats_finish(const double* __restrict__ partial,
                                              double* __restrict__ stats, u64 plane, u64 planes,
                                              int deviation) {
    GRID_LOOP(p, planes) {
        double s = 0.0;
        for (int k = 0; k < ADAIN_PARTS; ++k) s += partial[p * ADAIN_PARTS + k];
        if (deviation) {
            stats[2 * p + 1] = sqrt(s / (double)plane + 1e-5);
        } else {
            stats[2 * p] = s / (double)plane;
        }
    }
}

// y = clamp((x − μx)/σx · σr + μr) with x's statistics `xs` and the reference's `rs` per plane.
extern "C" __global__ void adain_apply_f32(const float* __restrict__ x,
                                           const double* __restrict__ xs,
                                           const double* __restrict__ rs, float* __restrict__ y,
                                           u64 plane, u64 n) {
    GRID_LOOP(i, n) {
        const u64 p = i / plane;
        const double v = ((double)x[i] - xs[2 * p]) / xs[2 * p + 1] * rs[2 * p + 1] + rs[2 * p];
        y[i] = fminf(fmaxf((float)v, -1.0f), 1.0f);
    }
}
