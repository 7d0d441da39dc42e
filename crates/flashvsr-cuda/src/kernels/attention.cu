// Reference-quality attention: one warp per (query row, head), online softmax over 32 keys at a
// time. Lane j scores key j of the tile; the P·V update is coalesced over head_dim. NPL (values
// per lane) is a template so the accumulator stays in registers; the host picks the smallest
// NPL with 32 * NPL >= head_dim. A tensor-core flash kernel replaces this behind the same launcher.

#define ATT_WARPS 4

template <int NPL>
__device__ __forceinline__ void attend_row(const float* __restrict__ q, const float* __restrict__ k,
                                           const float* __restrict__ v, float* __restrict__ o,
                                           u64 row, int head, int dim, int hd, float scale,
                                           const int* __restrict__ blocks, int nblocks,
                                           int key_block, float* qs) {
    const int lane = threadIdx.x & 31;
    const u64 hoff = (u64)head * hd;
    const float* qrow = q + row * dim + hoff;
    for (int d = lane; d < hd; d += 32) qs[d] = qrow[d];
    __syncwarp();
    const bool vec4 = (hd & 3) == 0 && (dim & 3) == 0;
    float m = NEG_INF, l = 0.0f;
    float acc[NPL];
#pragma unroll
    for (int i = 0; i < NPL; ++i) acc[i] = 0.0f;
    for (int b = 0; b < nblocks; ++b) {
        const u64 k0 = blocks ? (u64)blocks[b] * key_block : 0;
        for (int t = 0; t < key_block; t += 32) {
            const int j = t + lane;
            const bool valid = j < key_block;
            float s = NEG_INF;
            if (valid) {
                const float* krow = k + (k0 + j) * dim + hoff;
                float dot = 0.0f;
                if (vec4) {
                    const float4* k4 = (const float4*)krow;
                    const float4* q4 = (const float4*)qs;
                    for (int d = 0; d < hd / 4; ++d) {
                        const float4 a = q4[d], c = k4[d];
                        dot += a.x * c.x;
                        dot += a.y * c.y;
                        dot += a.z * c.z;
                        dot += a.w * c.w;
                    }
                } else {
                    for (int d = 0; d < hd; ++d) dot += qs[d] * krow[d];
                }
                s = dot * scale;
            }
            // Lane 0 is always valid, so m_new is finite and exp(m - m_new) is 0 on the first tile.
            const float m_new = fmaxf(m, warp_max(s));
            const float alpha = expf(m - m_new);
            const float p = valid ? expf(s - m_new) : 0.0f;
            l = l * alpha + warp_sum(p);
            m = m_new;
#pragma unroll
            for (int i = 0; i < NPL; ++i) acc[i] *= alpha;
            const int count = min(32, key_block - t);
            for (int jj = 0; jj < count; ++jj) {
                const float pj = __shfl_sync(FULL_MASK, p, jj);
                const float* vrow = v + (k0 + t + jj) * dim + hoff;
#pragma unroll
                for (int i = 0; i < NPL; ++i) {
                    const int d = lane + 32 * i;
                    if (d < hd) acc[i] += pj * vrow[d];
                }
            }
        }
    }
    // No selected key block: l stays 0 and the row is written as exact zeros.
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    float* orow = o + row * dim + hoff;
#pragma unroll
    for (int i = 0; i < NPL; ++i) {
        const int d = lane + 32 * i;
        if (d < hd) orow[d] = acc[i] * inv;
    }
}

template <int NPL>
__device__ __forceinline__ void dense_body(const float* q, const float* k, const float* v, float* o,
                                           int lq, int lk, int dim, int hd, float scale) {
    extern __shared__ float4 smem4[];
    const int warp = threadIdx.x >> 5;
    const u64 row = (u64)blockIdx.x * ATT_WARPS + warp;
    if (row >= (u64)lq) return;
    attend_row<NPL>(q, k, v, o, row, blockIdx.y, dim, hd, scale, 0, 1, lk,
                    (float*)smem4 + warp * hd);
}

// seg_off[head * query_blocks + qb] .. [+1] indexes seg_blocks: the selected key blocks.
template <int NPL>
__device__ __forceinline__ void sparse_body(const float* q, const float* k, const float* v, float* o,
                                            int lq, int dim, int hd, float scale,
                                            const int* seg_off, const int* seg_blocks,
                                            int query_block, int query_blocks, int key_block) {
    extern __shared__ float4 smem4[];
    const int warp = threadIdx.x >> 5;
    const u64 row = (u64)blockIdx.x * ATT_WARPS + warp;
    if (row >= (u64)lq) return;
    const int idx = blockIdx.y * query_blocks + (int)(row / query_block);
    const int start = seg_off[idx];
    attend_row<NPL>(q, k, v, o, row, blockIdx.y, dim, hd, scale, seg_blocks + start,
                    seg_off[idx + 1] - start, key_block, (float*)smem4 + warp * hd);
}

#define ATTENTION_INSTANCES(NPL)                                                               \
    extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32) attention_dense_f32_n##NPL(    \
        const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,  \
        float* __restrict__ o, int lq, int lk, int dim, int hd, float scale) {                  \
        dense_body<NPL>(q, k, v, o, lq, lk, dim, hd, scale);                                    \
    }                                                                                           \
    extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32) attention_sparse_f32_n##NPL(   \
        const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,  \
        float* __restrict__ o, int lq, int dim, int hd, float scale,                            \
        const int* __restrict__ seg_off, const int* __restrict__ seg_blocks, int query_block,   \
        int query_blocks, int key_block) {                                                      \
        sparse_body<NPL>(q, k, v, o, lq, dim, hd, scale, seg_off, seg_blocks, query_block,      \
                         query_blocks, key_block);                                              \
    }

ATTENTION_INSTANCES(1)
ATTENTION_INSTANCES(2)
ATTENTION_INSTANCES(4)
ATTENTION_INSTANCES(8)
ATTENTION_INSTANCES(12)
ATTENTION_INSTANCES(16)
ATTENTION_INSTANCES(32)
