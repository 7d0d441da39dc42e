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

// Elements 4t .. 4t + 3 of `out` (an array of float4 or of bf16 quadruples), rounded to bf16 (as
// f32_to_bf16 does) or not.
__device__ __forceinline__ void store_quad(void* out, u64 t, float4 v, int bf16) {
    if (bf16) {
        // Little-endian: element 4t in the low half of the first word.
        const unsigned int lo = bf16_bits(v.x) | ((unsigned int)bf16_bits(v.y) << 16);
        const unsigned int hi = bf16_bits(v.z) | ((unsigned int)bf16_bits(v.w) << 16);
        reinterpret_cast<uint2*>(out)[t] = make_uint2(lo, hi);
    } else {
        reinterpret_cast<float4*>(out)[t] = v;
    }
}

// Channels 4t .. 4t + 3 of a row normalised (x / rms · weight) and rotated: pairs 2t and 2t + 1,
// by angles (2t) % half and (2t + 1) % half of the row's tables `cr`, `sr` (as rope_f32).
__device__ __forceinline__ float4 norm_rope_quad(float4 a, double inv, float4 w, int t, int half,
                                                 const float* __restrict__ cr,
                                                 const float* __restrict__ sr) {
    const int p0 = (2 * t) % half, p1 = (2 * t + 1) % half;
    const float2 r0 =
        rope_rotate(rms_scaled(a.x, inv, w.x), rms_scaled(a.y, inv, w.y), cr[p0], sr[p0]);
    const float2 r1 =
        rope_rotate(rms_scaled(a.z, inv, w.z), rms_scaled(a.w, inv, w.w), cr[p1], sr[p1]);
    return make_float4(r0.x, r0.y, r1.x, r1.y);
}

// qkv_split_norm_rope_f32 for rows of dim = 128·k (k ≤ RMS_WARP_MAX), one warp per row
// (QKV_WARP_ROWS rows a block; `rows` rows from first_row), taken exactly where rms_norm takes
// rms_norm_warp_f32: the sums of squares of the q and k thirds add up in its order (add_squares4
// per lane, then warp_sum_d: q equals rms_norm_warp_f32 + rope_f32 bit for bit), with no block
// barrier, and every load and store is 16 (f32) or 8 (bf16) bytes wide. Off by default
// (FLASHVSR_CUDA_RMS_WARP=1). A first form kept both thirds in registers (2 × 16 float4s a lane)
// and loaded v only in the store loop: 0.190 ms a call on an H100 at the DiT's rows against the
// block-per-row kernel's 0.135 (PERF_NOTES.md, h21). This form holds nothing across the
// reductions: a first pass streams q and k into the sums, a second reads them again (the row was
// just read: L1/L2) with v, so that registers stay few and many warps keep loads in flight. Not
// yet run on a GPU.
#define QKV_WARP_ROWS 4
extern "C" __global__ void qkv_split_norm_rope_warp_f32(
    const float* __restrict__ x, const float* __restrict__ norm_q,
    const float* __restrict__ norm_k, const float* __restrict__ cos_t,
    const float* __restrict__ sin_t, float* __restrict__ q, void* __restrict__ k,
    void* __restrict__ v, int rows, int dim, int half, float eps, int kv_bf16, int first_row) {
    const int lane = threadIdx.x & 31;
    const int local = blockIdx.x * QKV_WARP_ROWS + (threadIdx.x >> 5);
    if (local >= rows) return;  // the whole warp: the shuffles below see all 32 lanes
    const u64 row = (u64)first_row + local;
    const int per_lane = dim >> 7;
    const float4* xq = reinterpret_cast<const float4*>(x + row * 3 * dim);
    const float4* xk = xq + dim / 4;
    const float4* xv = xk + dim / 4;
    double sq = 0.0, sk = 0.0;
#pragma unroll 4
    for (int j = 0; j < per_lane; ++j) {
        sq = add_squares4(sq, xq[j * 32 + lane]);
        sk = add_squares4(sk, xk[j * 32 + lane]);
    }
    const double inv_q = rms_inverse(warp_sum_d(sq), dim, eps);
    const double inv_k = rms_inverse(warp_sum_d(sk), dim, eps);

    const float* cr = cos_t + row * half;
    const float* sr = sin_t + row * half;
    float4* qr = reinterpret_cast<float4*>(q + row * dim);
    const u64 kv_first = (u64)local * (dim / 4);  // in quadruples
#pragma unroll 4
    for (int j = 0; j < per_lane; ++j) {
        const int t = j * 32 + lane;
        const float4 a = xq[t], b = xk[t], c = xv[t];
        const float4 wq = reinterpret_cast<const float4*>(norm_q)[t];
        const float4 wk = reinterpret_cast<const float4*>(norm_k)[t];
        qr[t] = norm_rope_quad(a, inv_q, wq, t, half, cr, sr);
        store_quad(k, kv_first + t, norm_rope_quad(b, inv_k, wk, t, half, cr, sr), kv_bf16);
        store_quad(v, kv_first + t, c, kv_bf16);
    }
}
