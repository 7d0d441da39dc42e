// Row softmax of the GEMM attention (ops/attention_gemm.rs): the scores S = q·kᵀ come from a
// cuBLASLt GEMM, this turns each row into probabilities P = softmax(S·scale) for the P·v GEMM.
// One block per row. The max and the sum are found in one pass (online: the sum is rescaled
// whenever the max grows), the probabilities written in a second pass that reads the row again
// (from L2: a row of 16k scores is 64 KB).

#define SOFTMAX_THREADS 256

// (m, l) pairs: l = Σ exp2(x − m) over the values seen. m = −inf means none seen (l = 0).
__device__ __forceinline__ void softmax_merge(float& m, float& l, float m2, float l2) {
    if (m2 == NEG_INF) return;
    if (m == NEG_INF) {
        m = m2;
        l = l2;
        return;
    }
    const float hi = fmaxf(m, m2);
    l = l * exp2f(m - hi) + l2 * exp2f(m2 - hi);
    m = hi;
}

// s: rows × cols scores, row stride ld (f32). Writes p (f32, may be s itself: each element is read
// before it is overwritten by the same thread) or p_bf16 (bf16 bits), row stride ld, whichever is
// non-null. scale_log2 = scale · log2(e), so that exp(scale · (x − max)) = exp2((x − max) ·
// scale_log2).
extern "C" __global__ void __launch_bounds__(SOFTMAX_THREADS)
    softmax_rows_f32(const float* s, float* p, u16* p_bf16, int cols, u64 ld, float scale_log2) {
    __shared__ float red_m[32], red_l[32];
    const u64 row = blockIdx.x;
    const float* src = s + row * ld;
    float m = NEG_INF, l = 0.0f;
    for (int j = threadIdx.x; j < cols; j += SOFTMAX_THREADS) {
        const float x = src[j] * scale_log2;
        if (x > m) {
            l = (m == NEG_INF ? 0.0f : l * exp2f(m - x)) + 1.0f;
            m = x;
        } else {
            l += exp2f(x - m);
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float m2 = __shfl_xor_sync(FULL_MASK, m, o);
        const float l2 = __shfl_xor_sync(FULL_MASK, l, o);
        softmax_merge(m, l, m2, l2);
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) {
        red_m[warp] = m;
        red_l[warp] = l;
    }
    __syncthreads();
    if (warp == 0) {
        m = lane < SOFTMAX_THREADS / 32 ? red_m[lane] : NEG_INF;
        l = lane < SOFTMAX_THREADS / 32 ? red_l[lane] : 0.0f;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float m2 = __shfl_xor_sync(FULL_MASK, m, o);
            const float l2 = __shfl_xor_sync(FULL_MASK, l, o);
            softmax_merge(m, l, m2, l2);
        }
        if (lane == 0) {
            red_m[0] = m;
            red_l[0] = l;
        }
    }
    __syncthreads();
    const float row_max = red_m[0], inv = 1.0f / red_l[0];
    if (p_bf16 != 0) {
        u16* dst = p_bf16 + row * ld;
        for (int j = threadIdx.x; j < cols; j += SOFTMAX_THREADS)
            dst[j] = bf16_bits(exp2f(src[j] * scale_log2 - row_max) * inv);
    } else {
        float* dst = p + row * ld;
        for (int j = threadIdx.x; j < cols; j += SOFTMAX_THREADS)
            dst[j] = exp2f(src[j] * scale_log2 - row_max) * inv;
    }
}
