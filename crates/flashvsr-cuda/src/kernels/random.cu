// The seeded normal generator of flashvsr-tensor's random.rs, value for value: SplitMix64
// counters and Box-Muller in double. CUDA's log and sincos in double may differ from glibc's in
// the last bit, which changes the float result only when it lies on a rounding boundary.

__device__ __forceinline__ u64 rn_splitmix(u64 z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

__device__ __forceinline__ double rn_uniform(u64 bits) {
    return ((double)(bits >> 11) + 1.0) / 9007199254740992.0;  // (0, 1]
}

// y[2i], y[2i + 1] from counters base + 2i, base + 2i + 1; n values.
extern "C" __global__ void random_normal_f32(float* __restrict__ y, u64 n, u64 base, float scale) {
    GRID_LOOP(i, (n + 1) / 2) {
        const double u1 = rn_uniform(rn_splitmix(base + 2 * i));
        const double u2 = rn_uniform(rn_splitmix(base + 2 * i + 1));
        const double r = sqrt(-2.0 * log(u1));
        double s, c;
        sincos(6.283185307179586 * u2, &s, &c);
        y[2 * i] = __fmul_rn((float)(r * c), scale);
        if (2 * i + 1 < n) y[2 * i + 1] = __fmul_rn((float)(r * s), scale);
    }
}
