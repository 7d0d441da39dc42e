// AdaIN colour transfer per plane: statistics in double like the CPU (cpu/adain.rs), population
// variance + 1e-5, then each value mapped and clamped to [-1, 1].

// One CTA per plane: stats[2 · blockIdx.x] = mean, stats[2 · blockIdx.x + 1] = √(var + eps).
extern "C" __global__ void plane_mean_std_f32(const float* __restrict__ x, double* __restrict__ stats,
                                              u64 plane) {
    __shared__ double scratch[32];
    const float* p = x + (u64)blockIdx.x * plane;
    double s = 0.0;
    for (u64 i = threadIdx.x; i < plane; i += blockDim.x) s += (double)p[i];
    const double mean = block_sum_d(s, scratch) / (double)plane;
    double q = 0.0;
    for (u64 i = threadIdx.x; i < plane; i += blockDim.x) {
        const double d = (double)p[i] - mean;
        q += d * d;
    }
    const double var = block_sum_d(q, scratch) / (double)plane;
    if (threadIdx.x == 0) {
        stats[2 * blockIdx.x] = mean;
        stats[2 * blockIdx.x + 1] = sqrt(var + 1e-5);
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
