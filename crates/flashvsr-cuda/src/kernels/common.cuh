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
