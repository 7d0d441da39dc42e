// The self-attention's q, k, v from the output of the fused q/k/v projection, in one pass over
// it: per token row, the RMS norms of the q and k thirds, their rope, and the v third copied.
// Launched like rms_norm_f32 (one block per row, the block size it gets for a row of `dim`): each
// thread then sums the squares of the same elements in the same order, and with the shared
// helpers of common.cuh q equals rms_norm_f32 + rope_f32 and k, v their `compact`, bit for bit.
//
// x: (rows, 3·dim); cos_t, sin_t: (rows, half), half = head_dim / 2; q: (rows, dim) f32;
// k, v: (rows, dim), bf16 bits when `kv_bf16` (the fast mode's compact storage), else f32.
// One launch per KV-cache group: block b handles row first_row + b of x, the tables and q, and
// row b of the group's own k and v.

// Elements i and i + 1 (i even) of `out`, rounded to bf16 (as f32_to_bf16 does) or not.
__device__ __forceinline__ void store_pair(void* out, u64 i, float2 v, int bf16) {
    if (bf16) {
        // Little-endian: element i in the low half.
        const unsigned int lo = bf16_bits(v.x), hi = bf16_bits(v.y);
        reinterpret_cast<unsigned int*>(out)[i / 2] = lo | (hi << 16);
    } else {
        reinterpret_cast<float2*>(out)[i / 2] = v;
    }
}

extern "C" __global__ void qkv_split_norm_rope_f32(
    const float* __restrict__ x, const float* __restrict__ norm_q,
    const float* __restrict__ norm_k, const float* __restrict__ cos_t,
    const float* __restrict__ sin_t, float* __restrict__ q, void* __restrict__ k,
    void* __restrict__ v, int dim, int half, float eps, int kv_bf16, int first_row) {
    __shared__ double scratch[32];
    const u64 row = (u64)first_row + blockIdx.x;
    const float* xq = x + row * 3 * dim;
    const float* xk = xq + dim;
    const float* xv = xk + dim;
    double sq = 0.0, sk = 0.0;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) {
        sq = add_square(sq, xq[c]);
        sk = add_square(sk, xk[c]);
    }
    const double inv_q = rms_inverse(block_sum_d(sq, scratch), dim, eps);
    const double inv_k = rms_inverse(block_sum_d(sk, scratch), dim, eps);

    const float* cr = cos_t + row * half;
    const float* sr = sin_t + row * half;
    const u64 out = row * dim;
    const u64 kv_out = (u64)blockIdx.x * dim;
    // Pair p is channels 2p, 2p + 1, rotated by angle p % half of its head (as rope_f32). The
    // pairs are read and written as float2: `dim` is even, so every row starts 8-byte aligned.
    for (int p = threadIdx.x; p < dim / 2; p += blockDim.x) {
        const float co = cr[p % half], si = sr[p % half];
        const float2 a = reinterpret_cast<const float2*>(xq)[p];
        const float2 wa = reinterpret_cast<const float2*>(norm_q)[p];
        const float2 b = reinterpret_cast<const float2*>(xk)[p];
        const float2 wb = reinterpret_cast<const float2*>(norm_k)[p];
        const float2 rq = rope_rotate(rms_scaled(a.x, inv_q, wa.x), rms_scaled(a.y, inv_q, wa.y),
                                      co, si);
        const float2 rk = rope_rotate(rms_scaled(b.x, inv_k, wb.x), rms_scaled(b.y, inv_k, wb.y),
                                      co, si);
        reinterpret_cast<float2*>(q + out)[p] = rq;
        store_pair(k, kv_out + 2 * p, rk, kv_bf16);
        store_pair(v, kv_out + 2 * p, reinterpret_cast<const float2*>(xv)[p], kv_bf16);
    }
}

// rms_scaled (common.cuh) of a value already widened to double (exactly: every float is a
// double), so that the register forms convert each value once for its square and its output.
// Here and in norm.cu rather than in common.cuh: that header is prepended to every source, and a
// change there recompiles every module.
__device__ __forceinline__ float rms_scaled_d(double x, double inv, float weight) {
    return __fmul_rn((float)__dmul_rn(x, inv), weight);
}

// The row a row kernel's block (or warp) `b` of `rows` handles: the last first when `reversed`
// (FLASHVSR_CUDA_ROWS_REVERSED), so that the rows its producer wrote last, those still in L2,
// are read before the kernel's own traffic evicts them. The same values either way.
__device__ __forceinline__ u64 row_of(u64 b, u64 rows, int reversed) {
    return reversed ? rows - 1 - b : b;
}

// qkv_split_norm_rope_f32 with each thread's values held in registers (FLASHVSR_CUDA_ROW_REGS):
// all of a thread's q, k and v values are loaded before the first use (no second read of the
// row), and each q and k value is widened to double once, for its square and its output, where
// the loop form converts it twice on the way in (conversions to and from double issue at a
// quarter of the FP64 rate on sm_90). The same launch and element-to-thread map as the sums of
// qkv_split_norm_rope_f32 (element c = threadIdx.x + j · blockDim.x), so the same sums; rope's
// partner of element c, c ^ 1, is the neighbouring lane's (blockDim.x is even) and comes by a
// shuffle. The same rounding steps as rope_rotate: the same bits as qkv_split_norm_rope_f32.
// Rows of the group in reverse order when `reversed` (row_of).
#define QKV_REGS_MAX 6
extern "C" __global__ void __launch_bounds__(256, 4) qkv_split_norm_rope_regs_f32(
    const float* __restrict__ x, const float* __restrict__ norm_q,
    const float* __restrict__ norm_k, const float* __restrict__ cos_t,
    const float* __restrict__ sin_t, float* __restrict__ q, void* __restrict__ k,
    void* __restrict__ v, int dim, int half, float eps, int kv_bf16, int first_row,
    int reversed) {
    __shared__ double scratch[32];
    const u64 group_row = row_of(blockIdx.x, gridDim.x, reversed);
    const u64 row = (u64)first_row + group_row;
    const float* xq = x + row * 3 * dim;
    const float* xk = xq + dim;
    const float* xv = xk + dim;
    double dq[QKV_REGS_MAX], dk[QKV_REGS_MAX];
    float fv[QKV_REGS_MAX];
#pragma unroll
    for (int j = 0; j < QKV_REGS_MAX; ++j) {
        const int c = threadIdx.x + j * blockDim.x;
        const bool in = c < dim;
        dq[j] = (double)(in ? xq[c] : 0.0f);
        dk[j] = (double)(in ? xk[c] : 0.0f);
        fv[j] = in ? xv[c] : 0.0f;
    }
    double sq = 0.0, sk = 0.0;
#pragma unroll
    for (int j = 0; j < QKV_REGS_MAX; ++j) {
        if (threadIdx.x + j * blockDim.x < dim) {
            sq = __fma_rn(dq[j], dq[j], sq);
            sk = __fma_rn(dk[j], dk[j], sk);
        }
    }
    const double inv_q = rms_inverse(block_sum_d(sq, scratch), dim, eps);
    const double inv_k = rms_inverse(block_sum_d(sk, scratch), dim, eps);

    const float* cr = cos_t + row * half;
    const float* sr = sin_t + row * half;
    const u64 out = row * dim;
    const u64 kv_out = group_row * dim;
#pragma unroll
    for (int j = 0; j < QKV_REGS_MAX; ++j) {
        const int c = threadIdx.x + j * blockDim.x;
        // Every lane takes part in the shuffles (lanes past the row's end shuffle zeros).
        const bool in = c < dim;
        const float nq = in ? rms_scaled_d(dq[j], inv_q, norm_q[c]) : 0.0f;
        const float nk = in ? rms_scaled_d(dk[j], inv_k, norm_k[c]) : 0.0f;
        const float pq = __shfl_xor_sync(FULL_MASK, nq, 1);
        const float pk = __shfl_xor_sync(FULL_MASK, nk, 1);
        if (!in) continue;
        const int p = (c >> 1) % half;
        const float co = cr[p], si = sr[p];
        // rope_rotate(a, b): (a c − b s, b c + a s); this element is a when c is even, else b.
        const bool even = (c & 1) == 0;
        const float tq = __fmul_rn(pq, si), tk = __fmul_rn(pk, si);
        const float rq = __fmaf_rn(nq, co, even ? -tq : tq);
        const float rk = __fmaf_rn(nk, co, even ? -tk : tk);
        q[out + c] = rq;
        if (kv_bf16) {
            reinterpret_cast<u16*>(k)[kv_out + c] = bf16_bits(rk);
            reinterpret_cast<u16*>(v)[kv_out + c] = bf16_bits(fv[j]);
        } else {
            reinterpret_cast<float*>(k)[kv_out + c] = rk;
            reinterpret_cast<float*>(v)[kv_out + c] = fv[j];
        }
    }
}
