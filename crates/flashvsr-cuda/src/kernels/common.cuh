// Prepended to every kernel source. NVRTC gets no include path, so nothing is #included.
typedef unsigned long long u64;
typedef long long i64;
typedef unsigned short u16;

#define FULL_MASK 0xffffffffu
#define NEG_INF (__int_as_float(0xff800000))

// Grid-stride loops: a launch caps its grid at a few waves and each thread walks the rest.
#define GRID_LOOP(i, n) \
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (u64)(n); \
         i += (u64)gridDim.x * blockDim.x)

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

// Sum over a block whose size is a multiple of 32; every thread gets the total. `scratch` holds
// 32 doubles; the leading barrier lets one scratch serve consecutive calls.
__device__ __forceinline__ double block_sum_d(double v, double* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int warps = (blockDim.x + 31) >> 5;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    return warp_sum_d(lane < warps ? scratch[lane] : 0.0);
}

// bf16 storage (fast mode). The rounding is done on the bits so that it is the same on every
// architecture: round to nearest even; NaN stays NaN (quiet), infinities stay infinite.
__device__ __forceinline__ u16 bf16_bits(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (u16)(u >> 16);
}

__device__ __forceinline__ float bf16_value(u16 b) { return __uint_as_float((unsigned int)b << 16); }

// RMS norm and rope, shared by the kernels that compute them (rms_norm_f32, rope_f32 and the
// fused qkv_split_norm_rope_f32), which must agree bit for bit. The roundings are spelled out:
// left to the compiler, a multiply-add may be contracted in one kernel and not in another.
// They are the ones NVRTC 13 chose for the plain expressions, so that no result changed.

// acc + v², the sum of squares accumulated in double like the CPU reference.
__device__ __forceinline__ double add_square(double acc, float v) {
    const double d = (double)v;
    return __fma_rn(d, d, acc);
}

// 1 / sqrt(mean square + eps) of a row of `dim` values whose squares sum to `sum`.
__device__ __forceinline__ double rms_inverse(double sum, int dim, float eps) {
    return 1.0 / sqrt(sum / dim + (double)eps);
}

// x / rms · weight, `inv` = 1 / rms.
__device__ __forceinline__ float rms_scaled(float x, double inv, float weight) {
    return __fmul_rn((float)__dmul_rn((double)x, inv), weight);
}

// The pair (a, b) rotated by the angle of cosine c and sine s: (a c − b s, a s + b c).
__device__ __forceinline__ float2 rope_rotate(float a, float b, float c, float s) {
    return make_float2(__fmaf_rn(a, c, -__fmul_rn(b, s)), __fmaf_rn(b, c, __fmul_rn(a, s)));
}
