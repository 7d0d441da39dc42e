// Norms and means. Statistics accumulate in double like the CPU reference; each block owns one
// row so a row is read from global memory (then L1/L2) once per pass.

// Layer norm over the last dim. With `scale` set it is DiT modulation (x̂ (1 + scale) + shift);
// otherwise the optional affine `weight`, `bias`. Absent vectors are null pointers. `y_bf16`, when
// set, gets the same values rounded to bf16 (the input of the fast mode's bf16 GEMMs); `y` may
// then be null (only the bf16 values are wanted).
extern "C" __global__ void layer_norm_f32(const float* __restrict__ x, float* __restrict__ y,
                                          int dim, float eps, const float* __restrict__ weight,
                                          const float* __restrict__ bias,
                                          const float* __restrict__ shift,
                                          const float* __restrict__ scale,
                                          u16* __restrict__ y_bf16) {
    __shared__ double scratch[32];
    const float* xr = x + (u64)blockIdx.x * dim;
    float* yr = y ? y + (u64)blockIdx.x * dim : 0;
    double s = 0.0;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) s += (double)xr[c];
    const double mean = block_sum_d(s, scratch) / dim;
    double q = 0.0;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) {
        const double d = (double)xr[c] - mean;
        q += d * d;
    }
    const double var = block_sum_d(q, scratch) / dim;
    const double inv = 1.0 / sqrt(var + (double)eps);
    for (int c = threadIdx.x; c < dim; c += blockDim.x) {
        float v = (float)(((double)xr[c] - mean) * inv);
        if (scale) {
            v = v * (1.0f + scale[c]) + shift[c];
        } else {
            if (weight) v = v * weight[c];
            if (bias) v = v + bias[c];
        }
        if (yr) yr[c] = v;
        if (y_bf16) y_bf16[(u64)blockIdx.x * dim + c] = bf16_bits(v);
    }
}

// The affine step of the layer norms and their stores: four normalised values `o` of element
// group t of the row at `first` (modulated by scale/shift, else times weight plus bias).
__device__ __forceinline__ void ln_finish4(float (&o)[4], int t, u64 first,
                                           const float* __restrict__ weight,
                                           const float* __restrict__ bias,
                                           const float* __restrict__ shift,
                                           const float* __restrict__ scale, float* __restrict__ y,
                                           u16* __restrict__ y_bf16) {
    if (scale) {
        const float4 sc = reinterpret_cast<const float4*>(scale)[t];
        const float4 sh = reinterpret_cast<const float4*>(shift)[t];
        o[0] = o[0] * (1.0f + sc.x) + sh.x;
        o[1] = o[1] * (1.0f + sc.y) + sh.y;
        o[2] = o[2] * (1.0f + sc.z) + sh.z;
        o[3] = o[3] * (1.0f + sc.w) + sh.w;
    } else {
        if (weight) {
            const float4 w = reinterpret_cast<const float4*>(weight)[t];
            o[0] = o[0] * w.x;
            o[1] = o[1] * w.y;
            o[2] = o[2] * w.z;
            o[3] = o[3] * w.w;
        }
        if (bias) {
            const float4 b = reinterpret_cast<const float4*>(bias)[t];
            o[0] = o[0] + b.x;
            o[1] = o[1] + b.y;
            o[2] = o[2] + b.z;
            o[3] = o[3] + b.w;
        }
    }
    if (y) reinterpret_cast<float4*>(y + first)[t] = make_float4(o[0], o[1], o[2], o[3]);
    if (y_bf16) {
        // Little-endian: element 4t in the lowest half of the first word.
        const unsigned int lo = bf16_bits(o[0]) | ((unsigned int)bf16_bits(o[1]) << 16);
        const unsigned int hi = bf16_bits(o[2]) | ((unsigned int)bf16_bits(o[3]) << 16);
        reinterpret_cast<uint2*>(y_bf16 + first)[t] = make_uint2(lo, hi);
    }
}

// layer_norm_f32 for rows of 4·k values (k ≤ 1024), one float4 per thread: the row is read from
// global memory once and kept in registers, and the stores are 16 (f32) or 8 (bf16) bytes wide.
// The same per-element arithmetic; only the order the double sums add up in differs.
extern "C" __global__ void layer_norm_vec4_f32(const float* __restrict__ x, float* __restrict__ y,
                                               int dim, float eps,
                                               const float* __restrict__ weight,
                                               const float* __restrict__ bias,
                                               const float* __restrict__ shift,
                                               const float* __restrict__ scale,
                                               u16* __restrict__ y_bf16) {
    __shared__ double scratch[32];
    const int t = threadIdx.x;
    const bool active = t < (dim >> 2);
    const u64 first = (u64)blockIdx.x * dim;
    float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (active) v = reinterpret_cast<const float4*>(x + first)[t];
    const double s = active ? ((double)v.x + (double)v.y) + ((double)v.z + (double)v.w) : 0.0;
    const double mean = block_sum_d(s, scratch) / dim;
    double q = 0.0;
    if (active) {
        const double a = (double)v.x - mean, b = (double)v.y - mean;
        const double c = (double)v.z - mean, d = (double)v.w - mean;
        q = (a * a + b * b) + (c * c + d * d);
    }
    const double var = block_sum_d(q, scratch) / dim;
    const double inv = 1.0 / sqrt(var + (double)eps);
    if (!active) return;
    float o[4] = {(float)(((double)v.x - mean) * inv), (float)(((double)v.y - mean) * inv),
                  (float)(((double)v.z - mean) * inv), (float)(((double)v.w - mean) * inv)};
    ln_finish4(o, t, first, weight, bias, shift, scale, y, y_bf16);
}

// layer_norm_f32 for rows of 128·k values (k ≤ LN_WARP_MAX), one warp per row: each lane keeps k
// float4s of the row in registers and both sums are warp shuffles, with no block barrier (the
// block-per-row kernel above waits on two block-wide reductions per row, which made it
// latency-bound at the DiT's rows of 1536: ~0.06 ms for 8448 rows). The same per-element
// arithmetic; only the order the double sums add up in differs.
#define LN_WARP_MAX 16
#define LN_WARP_ROWS 4
extern "C" __global__ void layer_norm_warp_f32(const float* __restrict__ x, float* __restrict__ y,
                                               int rows, int dim, float eps,
                                               const float* __restrict__ weight,
                                               const float* __restrict__ bias,
                                               const float* __restrict__ shift,
                                               const float* __restrict__ scale,
                                               u16* __restrict__ y_bf16) {
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * LN_WARP_ROWS + (threadIdx.x >> 5);
    if (row >= rows) return;  // the whole warp: the shuffles below see all 32 lanes
    const int per_lane = dim >> 7;
    const u64 first = (u64)row * dim;
    const float4* xr = reinterpret_cast<const float4*>(x + first);
    float4 v[LN_WARP_MAX];
    double s = 0.0;
#pragma unroll
    for (int j = 0; j < LN_WARP_MAX; ++j) {
        if (j < per_lane) {
            v[j] = xr[j * 32 + lane];
            s += ((double)v[j].x + (double)v[j].y) + ((double)v[j].z + (double)v[j].w);
        }
    }
    const double mean = warp_sum_d(s) / dim;
    double q = 0.0;
#pragma unroll
    for (int j = 0; j < LN_WARP_MAX; ++j) {
        if (j < per_lane) {
            const double a = (double)v[j].x - mean, b = (double)v[j].y - mean;
            const double c = (double)v[j].z - mean, d = (double)v[j].w - mean;
            q += (a * a + b * b) + (c * c + d * d);
        }
    }
    const double var = warp_sum_d(q) / dim;
    const double inv = 1.0 / sqrt(var + (double)eps);
#pragma unroll
    for (int j = 0; j < LN_WARP_MAX; ++j) {
        if (j >= per_lane) continue;
        const int t = j * 32 + lane;
        float o[4] = {(float)(((double)v[j].x - mean) * inv), (float)(((double)v[j].y - mean) * inv),
                      (float)(((double)v[j].z - mean) * inv), (float)(((double)v[j].w - mean) * inv)};
        ln_finish4(o, t, first, weight, bias, shift, scale, y, y_bf16);
    }
}

// rms_scaled (common.cuh) of a value already widened to double (exactly: every float is a
// double), so that the register form below converts each value once for its square and its
// output. Here rather than in common.cuh: that header is prepended to every source, and a change
// there recompiles every module.
__device__ __forceinline__ float rms_scaled_d(double x, double inv, float weight) {
    return __fmul_rn((float)__dmul_rn(x, inv), weight);
}

// layer_norm_warp_f32 for rows of at most LN_WARP_REGS_MAX float4s a lane (the DiT's 1536: 12),
// with each value widened to double once and its difference from the mean held in registers
// (CudaOptions::row_norm_regs): layer_norm_warp_f32 holds the floats and converts each value three
// times (sum, variance, output), and conversions to and from double issue at a quarter of the
// FP64 rate on sm_90. The same expressions in the same order: the same bits as
// layer_norm_warp_f32.
#define LN_WARP_REGS_MAX 12
extern "C" __global__ void layer_norm_warp_regs_f32(
    const float* __restrict__ x, float* __restrict__ y, int rows, int dim, float eps,
    const float* __restrict__ weight, const float* __restrict__ bias,
    const float* __restrict__ shift, const float* __restrict__ scale, u16* __restrict__ y_bf16) {
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * LN_WARP_ROWS + (threadIdx.x >> 5);
    if (row >= rows) return;  // the whole warp: the shuffles below see all 32 lanes
    const int per_lane = dim >> 7;
    const u64 first = (u64)row * dim;
    const float4* xr = reinterpret_cast<const float4*>(x + first);
    float4 v[LN_WARP_REGS_MAX];
#pragma unroll
    for (int j = 0; j < LN_WARP_REGS_MAX; ++j) {
        if (j < per_lane) v[j] = xr[j * 32 + lane];
    }
    double a[LN_WARP_REGS_MAX][4];
    double s = 0.0;
#pragma unroll
    for (int j = 0; j < LN_WARP_REGS_MAX; ++j) {
        if (j < per_lane) {
            a[j][0] = (double)v[j].x;
            a[j][1] = (double)v[j].y;
            a[j][2] = (double)v[j].z;
            a[j][3] = (double)v[j].w;
            s += (a[j][0] + a[j][1]) + (a[j][2] + a[j][3]);
        }
    }
    const double mean = warp_sum_d(s) / dim;
    double q = 0.0;
#pragma unroll
    for (int j = 0; j < LN_WARP_REGS_MAX; ++j) {
        if (j < per_lane) {
            const double a0 = a[j][0] - mean, b = a[j][1] - mean;
            const double c = a[j][2] - mean, d = a[j][3] - mean;
            a[j][0] = a0;
            a[j][1] = b;
            a[j][2] = c;
            a[j][3] = d;
            q += (a0 * a0 + b * b) + (c * c + d * d);
        }
    }
    const double var = warp_sum_d(q) / dim;
    const double inv = 1.0 / sqrt(var + (double)eps);
#pragma unroll
    for (int j = 0; j < LN_WARP_REGS_MAX; ++j) {
        if (j >= per_lane) continue;
        const int t = j * 32 + lane;
        float o[4] = {(float)(a[j][0] * inv), (float)(a[j][1] * inv), (float)(a[j][2] * inv),
                      (float)(a[j][3] * inv)};
        ln_finish4(o, t, first, weight, bias, shift, scale, y, y_bf16);
    }
}

extern "C" __global__ void rms_norm_f32(const float* __restrict__ x, float* __restrict__ y, int dim,
                                        float eps, const float* __restrict__ weight) {
    __shared__ double scratch[32];
    const float* xr = x + (u64)blockIdx.x * dim;
    float* yr = y + (u64)blockIdx.x * dim;
    double q = 0.0;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) q = add_square(q, xr[c]);
    const double inv = rms_inverse(block_sum_d(q, scratch), dim, eps);
    for (int c = threadIdx.x; c < dim; c += blockDim.x) yr[c] = rms_scaled(xr[c], inv, weight[c]);
}

// rms_norm_f32 with the row held in registers (CudaOptions::row_norm_regs): each thread loads
// all of its values (c = threadIdx.x + j · blockDim.x, at most ROW_REGS_MAX of them: rows of up
// to 1536 values) before the first use, widens each to double once and scales the held doubles:
// no second read of the row, and two conversions per value (f32 → f64 once, the result back to
// f32) where the loop form spends three. Conversions to and from double issue at a quarter of the
// FP64 rate on sm_90. The same launch (one block per row, row_config's size) and the same sums in
// the same order: the same bits as rms_norm_f32.
#define ROW_REGS_MAX 6
__device__ __forceinline__ float row_value(const float* row, int c) { return row[c]; }
__device__ __forceinline__ float row_value(const u16* row, int c) { return bf16_value(row[c]); }

template <typename In>
__device__ __forceinline__ void rms_norm_regs_body(const In* __restrict__ x, float* __restrict__ y,
                                                   int dim, float eps,
                                                   const float* __restrict__ weight) {
    __shared__ double scratch[32];
    const In* xr = x + (u64)blockIdx.x * dim;
    float* yr = y + (u64)blockIdx.x * dim;
    float v[ROW_REGS_MAX];
#pragma unroll
    for (int j = 0; j < ROW_REGS_MAX; ++j) {
        const int c = threadIdx.x + j * blockDim.x;
        v[j] = c < dim ? row_value(xr, c) : 0.0f;
    }
    double d[ROW_REGS_MAX];
    double q = 0.0;
#pragma unroll
    for (int j = 0; j < ROW_REGS_MAX; ++j) {
        d[j] = (double)v[j];
        if (threadIdx.x + j * blockDim.x < dim) q = __fma_rn(d[j], d[j], q);
    }
    const double inv = rms_inverse(block_sum_d(q, scratch), dim, eps);
#pragma unroll
    for (int j = 0; j < ROW_REGS_MAX; ++j) {
        const int c = threadIdx.x + j * blockDim.x;
        if (c < dim) yr[c] = rms_scaled_d(d[j], inv, weight[c]);
    }
}

extern "C" __global__ void __launch_bounds__(256, 8)
    rms_norm_regs_f32(const float* __restrict__ x, float* __restrict__ y, int dim, float eps,
                      const float* __restrict__ weight) {
    rms_norm_regs_body(x, y, dim, eps, weight);
}

// The same from bf16 storage (the cross-attention's q projection, `linear_compact`): the values
// it holds, widened exactly, give what rms_norm_regs_f32 gives for them.
extern "C" __global__ void __launch_bounds__(256, 8)
    rms_norm_regs_bf16_input(const u16* __restrict__ x, float* __restrict__ y, int dim, float eps,
                             const float* __restrict__ weight) {
    rms_norm_regs_body(x, y, dim, eps, weight);
}

// (N, G, D) -> (N, D)
// The same over bf16 storage (the KV cache in fast mode): no widened copy of the keys.
extern "C" __global__ void group_mean_bf16(const unsigned short* __restrict__ x,
                                           float* __restrict__ y, u64 n, u64 group, u64 dim) {
    GRID_LOOP(i, n * dim) {
        const u64 row = i / dim, d = i % dim;
        double acc = 0.0;
        for (u64 g = 0; g < group; ++g)
            acc += (double)__uint_as_float((unsigned int)x[(row * group + g) * dim + d] << 16);
        y[i] = (float)(acc / (double)group);
    }
}

extern "C" __global__ void group_mean_f32(const float* __restrict__ x, float* __restrict__ y, u64 n,
                                          u64 group, u64 dim) {
    GRID_LOOP(i, n * dim) {
        const u64 row = i / dim, d = i % dim;
        double acc = 0.0;
        for (u64 g = 0; g < group; ++g) acc += (double)x[(row * group + g) * dim + d];
        y[i] = (float)(acc / (double)group);
    }
}

// group_mean_f32 / group_mean_bf16 for an even D: a thread per two adjacent outputs of block row
// blockIdx.y (one 8- or 4-byte load per input row), GROUP_MEAN_BATCH loads in flight before they
// are added. Each output still sums its G values in order from 0.0 in double: the same bits as the
// one-output-per-thread kernels above, which wait on one 4- or 2-byte load at a time.
#define GROUP_MEAN_BATCH 8

__device__ __forceinline__ float2 group_mean_widen(float2 v) { return v; }

// Two bf16 values; little-endian: the lower-indexed one in the low half.
__device__ __forceinline__ float2 group_mean_widen(unsigned int v) {
    return make_float2(__uint_as_float(v << 16), __uint_as_float(v & 0xffff0000u));
}

template <typename Pair>
__device__ __forceinline__ void group_mean_pairs(const Pair* __restrict__ x, float* __restrict__ y,
                                                 u64 group, u64 dim) {
    const u64 c = 2 * ((u64)blockIdx.x * blockDim.x + threadIdx.x);
    if (c >= dim) return;
    const u64 row = blockIdx.y, stride = dim / 2;  // in pairs
    const Pair* p = x + (row * group * dim + c) / 2;
    double a0 = 0.0, a1 = 0.0;
    u64 g = 0;
    for (; g + GROUP_MEAN_BATCH <= group; g += GROUP_MEAN_BATCH) {
        Pair v[GROUP_MEAN_BATCH];
#pragma unroll
        for (int j = 0; j < GROUP_MEAN_BATCH; ++j) v[j] = p[(g + j) * stride];
#pragma unroll
        for (int j = 0; j < GROUP_MEAN_BATCH; ++j) {
            const float2 f = group_mean_widen(v[j]);
            a0 += (double)f.x;
            a1 += (double)f.y;
        }
    }
    for (; g < group; ++g) {
        const float2 f = group_mean_widen(p[g * stride]);
        a0 += (double)f.x;
        a1 += (double)f.y;
    }
    *reinterpret_cast<float2*>(y + row * dim + c) =
        make_float2((float)(a0 / (double)group), (float)(a1 / (double)group));
}

extern "C" __global__ void group_mean_pairs_f32(const float2* __restrict__ x,
                                                float* __restrict__ y, u64 group, u64 dim) {
    group_mean_pairs(x, y, group, dim);
}

extern "C" __global__ void group_mean_pairs_bf16(const unsigned int* __restrict__ x,
                                                 float* __restrict__ y, u64 group, u64 dim) {
    group_mean_pairs(x, y, group, dim);
}
