// The self-attention's q, k, v from the output of the fused q/k/v projection, in one pass over
// it: per token row, the RMS norms of the q and k thirds, their rope, and the v third copied.
// Launched like rms_norm_f32 (one block per row, the block size it gets for a row of `dim`): each
// thread then sums the squares of the same elements in the same order, and with the shared
// helpers of common.cuh q equals rms_norm_f32 + rope_f32 and k, v their `compact`, bit for bit.
//
// x: (rows, 3·dim), f32 or bf16 bits; cos_t, sin_t: (rows, half), half = head_dim / 2;
// q: (rows, dim) f32; k, v: (rows, dim), bf16 bits when `kv_bf16` (the fast mode's compact
// storage), else f32.
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

// Elements 2p, 2p + 1 of a row of x, as f32 (bf16 bits widened exactly).
__device__ __forceinline__ float2 load_pair(const float* row, int p) {
    return reinterpret_cast<const float2*>(row)[p];
}
__device__ __forceinline__ float2 load_pair(const u16* row, int p) {
    const unsigned int w = reinterpret_cast<const unsigned int*>(row)[p];
    return make_float2(bf16_value((u16)(w & 0xffffu)), bf16_value((u16)(w >> 16)));
}
__device__ __forceinline__ float load_one(const float* row, int c) { return row[c]; }
__device__ __forceinline__ float load_one(const u16* row, int c) { return bf16_value(row[c]); }

template <typename In>
__device__ __forceinline__ void qkv_split_norm_rope_body(
    const In* __restrict__ x, const float* __restrict__ norm_q, const float* __restrict__ norm_k,
    const float* __restrict__ cos_t, const float* __restrict__ sin_t, float* __restrict__ q,
    void* __restrict__ k, void* __restrict__ v, int dim, int half, float eps, int kv_bf16,
    int first_row) {
    __shared__ double scratch[32];
    const u64 row = (u64)first_row + blockIdx.x;
    const In* xq = x + row * 3 * dim;
    const In* xk = xq + dim;
    const In* xv = xk + dim;
    double sq = 0.0, sk = 0.0;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) {
        sq = add_square(sq, load_one(xq, c));
        sk = add_square(sk, load_one(xk, c));
    }
    const double inv_q = rms_inverse(block_sum_d(sq, scratch), dim, eps);
    const double inv_k = rms_inverse(block_sum_d(sk, scratch), dim, eps);

    const float* cr = cos_t + row * half;
    const float* sr = sin_t + row * half;
    const u64 out = row * dim;
    const u64 kv_out = (u64)blockIdx.x * dim;
    // Pair p is channels 2p, 2p + 1, rotated by angle p % half of its head (as rope_f32). The
    // pairs are read and written whole: `dim` is even, so every row starts aligned.
    for (int p = threadIdx.x; p < dim / 2; p += blockDim.x) {
        const float co = cr[p % half], si = sr[p % half];
        const float2 a = load_pair(xq, p);
        const float2 wa = reinterpret_cast<const float2*>(norm_q)[p];
        const float2 b = load_pair(xk, p);
        const float2 wb = reinterpret_cast<const float2*>(norm_k)[p];
        const float2 rq = rope_rotate(rms_scaled(a.x, inv_q, wa.x), rms_scaled(a.y, inv_q, wa.y),
                                      co, si);
        const float2 rk = rope_rotate(rms_scaled(b.x, inv_k, wb.x), rms_scaled(b.y, inv_k, wb.y),
                                      co, si);
        reinterpret_cast<float2*>(q + out)[p] = rq;
        store_pair(k, kv_out + 2 * p, rk, kv_bf16);
        store_pair(v, kv_out + 2 * p, load_pair(xv, p), kv_bf16);
    }
}

extern "C" __global__ void qkv_split_norm_rope_f32(
    const float* __restrict__ x, const float* __restrict__ norm_q,
    const float* __restrict__ norm_k, const float* __restrict__ cos_t,
    const float* __restrict__ sin_t, float* __restrict__ q, void* __restrict__ k,
    void* __restrict__ v, int dim, int half, float eps, int kv_bf16, int first_row) {
    qkv_split_norm_rope_body(x, norm_q, norm_k, cos_t, sin_t, q, k, v, dim, half, eps, kv_bf16,
                             first_row);
}

// The same from a bf16-stored projection (`linear_compact` in fast mode): the values it holds,
// widened exactly, give what the f32 kernel gives for them.
extern "C" __global__ void qkv_split_norm_rope_bf16_input(
    const u16* __restrict__ x, const float* __restrict__ norm_q,
    const float* __restrict__ norm_k, const float* __restrict__ cos_t,
    const float* __restrict__ sin_t, float* __restrict__ q, void* __restrict__ k,
    void* __restrict__ v, int dim, int half, float eps, int kv_bf16, int first_row) {
    qkv_split_norm_rope_body(x, norm_q, norm_k, cos_t, sin_t, q, k, v, dim, half, eps, kv_bf16,
                             first_row);
}
