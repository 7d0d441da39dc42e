// The Wan VAE's channel RMS norm, optionally followed by SiLU, in one pass over the activations
// (ops/norm_silu.rs), written at a frame offset of the output: the causal conv that follows reads
// its two history frames and the new ones from one buffer, so the history is copied in front
// (2 frames) instead of the whole input being concatenated after the norm.

typedef unsigned int u32;

__device__ __forceinline__ float ns_silu(float x) { return x / (1.0f + expf(-x)); }

#define CRN_POSITIONS 32
// Warps of a block of the f32 kernel, each summing every CRN_LANES-th channel.
#define CRN_LANES 16

// f32 row-major: x (C, n) → y[c * y_stride + y_offset + q] for q < n (n = frames · plane). A block
// takes 32 consecutive positions, one per lane of a warp (each channel's row read coalesced, 128
// bytes), and its CRN_LANES warps split the channels: with 3072 channels at 4224 positions (the
// LQ projector) one thread per position would leave most of the GPU idle and read 4 bytes a
// position per pass. The sum of squares in double (per warp, then the warps' partial sums in a
// fixed order: the result does not depend on the launch), the scale and SiLU as
// channel_rms_norm_f32 and unary_f32 computed them.
extern "C" __global__ void __launch_bounds__(CRN_POSITIONS * CRN_LANES)
    channel_rms_norm_silu_f32(const float* __restrict__ x, const float* __restrict__ gamma,
                              float* __restrict__ y, u64 channels, u64 n, u64 y_stride,
                              u64 y_offset, int silu) {
    __shared__ double crn_partial[CRN_LANES][CRN_POSITIONS];
    __shared__ float crn_scale[CRN_POSITIONS];
    const u64 px = threadIdx.x % CRN_POSITIONS, lane = threadIdx.x / CRN_POSITIONS;
    for (u64 q0 = (u64)blockIdx.x * CRN_POSITIONS; q0 < n; q0 += (u64)gridDim.x * CRN_POSITIONS) {
        const u64 q = q0 + px;
        const bool active = q < n;
        double acc = 0.0;
        if (active) {
#pragma unroll 4
            for (u64 c = lane; c < channels; c += CRN_LANES) {
                const double v = (double)x[c * n + q];
                acc += v * v;
            }
        }
        crn_partial[lane][px] = acc;
        __syncthreads();
        if (lane == 0) {
            double sum = 0.0;
            for (int l = 0; l < CRN_LANES; ++l) sum += crn_partial[l][px];
            crn_scale[px] = (float)(sqrt((double)channels) / fmax(sqrt(sum), 1e-12));
        }
        __syncthreads();
        if (active) {
            const float k = crn_scale[px];
            for (u64 c = lane; c < channels; c += CRN_LANES) {
                const float v = x[c * n + q] * k * gamma[c];
                y[c * y_stride + y_offset + q] = silu ? ns_silu(v) : v;
            }
        }
        // The partial sums and scales are rewritten by the next round.
        __syncthreads();
    }
}

// Round to nearest even; NaN stays a (quiet) NaN.
__device__ __forceinline__ u32 ns_bf16_bits(float f) {
    const u32 b = __float_as_uint(f);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (b >> 16) | 0x40u;
    return (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
}

#define NS_THREADS 256
// Threads that sum the squares of one position: 32 positions a block.
#define NS_LANES 8

// Channels-last bf16: x [n positions][c8 groups of 8 channels] → y at y_offset (in groups), same
// layout. A block stages `pt` positions (≤ 32) in shared memory with coalesced 16-byte loads,
// NS_LANES threads sum each position's squares (fp32, a fixed order: the result does not depend
// on the launch), then the block writes the scaled values back, coalesced.
extern "C" __global__ void __launch_bounds__(NS_THREADS)
    channel_rms_norm_silu_cl(const uint4* __restrict__ x, const float* __restrict__ gamma,
                             uint4* __restrict__ y, u64 n, u64 c8, u64 y_offset, int pt, int silu) {
    extern __shared__ uint4 ns_tile[];
    __shared__ float ns_scale[NS_THREADS / NS_LANES];
    const float root_c = sqrtf((float)(c8 * 8));
    for (u64 p0 = (u64)blockIdx.x * pt; p0 < n; p0 += (u64)gridDim.x * pt) {
        const u64 np = n - p0 < (u64)pt ? n - p0 : (u64)pt;
        const u64 count = np * c8;
        const uint4* src = x + p0 * c8;
        for (u64 i = threadIdx.x; i < count; i += NS_THREADS) ns_tile[i] = src[i];
        __syncthreads();
        const u64 pos = threadIdx.x / NS_LANES;
        float acc = 0.0f;
        if (pos < np) {
            for (u64 g = threadIdx.x % NS_LANES; g < c8; g += NS_LANES) {
                const uint4 v = ns_tile[pos * c8 + g];
                const u32 w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
                for (int k = 0; k < 4; ++k) {
                    const float lo = __uint_as_float(w[k] << 16);
                    const float hi = __uint_as_float(w[k] & 0xffff0000u);
                    acc = fmaf(lo, lo, acc);
                    acc = fmaf(hi, hi, acc);
                }
            }
        }
#pragma unroll
        for (int o = NS_LANES / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(FULL_MASK, acc, o);
        if (threadIdx.x % NS_LANES == 0 && pos < np)
            ns_scale[pos] = root_c / fmaxf(sqrtf(acc), 1e-12f);
        __syncthreads();
        uint4* dst = y + y_offset + p0 * c8;
        for (u64 i = threadIdx.x; i < count; i += NS_THREADS) {
            const uint4 v = ns_tile[i];
            const float s = ns_scale[i / c8];
            const float* gm = gamma + (i % c8) * 8;
            u32 w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                float lo = __uint_as_float(w[k] << 16) * s * gm[2 * k];
                float hi = __uint_as_float(w[k] & 0xffff0000u) * s * gm[2 * k + 1];
                if (silu) {
                    lo = ns_silu(lo);
                    hi = ns_silu(hi);
                }
                w[k] = ns_bf16_bits(lo) | (ns_bf16_bits(hi) << 16);
            }
            dst[i] = make_uint4(w[0], w[1], w[2], w[3]);
        }
        // The tile and the scales are rewritten by the next round.
        __syncthreads();
    }
}
