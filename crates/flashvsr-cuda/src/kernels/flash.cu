// Tensor-core attention for head_dim 128 (the DiT's self- and cross-attention): flash-attention 2
// style, bf16 operands, fp32 accumulation and fp32 online softmax.
//
// One CTA of WARPS warps per (head, 128-row query block), or per half of one with 4 warps (two
// CTAs per SM then); warp w owns 16 query rows and keeps its Q fragments (bf16) and its 16 x 128
// output accumulator in registers. The CTA walks the block's key tiles of 64 rows (a 128-row key
// block is two tiles): K and V tiles (bf16, read in place from the segments of the KV cache or
// converted once per call by `to_bf16_f32` or, laid out head-major, by `to_bf16_heads_f32`) are
// staged in shared memory by cp.async, STAGES deep, rows XOR-swizzled in 16-byte chunks so that
// ldmatrix is conflict free. S = Q·Kᵀ and O += P·V run on
// `mma.sync.m16n8k16.row.col.f32.bf16.bf16.f32`; P is rounded to bf16 for P·V (as flash-attention
// does), the row sums use the fp32 P. Scores are scaled by scale·log2(e) and exponentiated with ex2.
//
// The `m2` instances give each warp 32 rows (two m16 tiles, as flash-attention 2's own head_dim
// 128 kernel does), so that every K and V fragment loaded from shared memory feeds four MMAs
// instead of two: per 64-key tile a warp issues 80 ldmatrix.x4 for 256 MMAs instead of 64 for 128
// (shared-memory bandwidth is what bounds the 16-row kernel). Their 32 x 128 accumulator (128
// registers per thread) and S (64) leave no room for both tiles' Q fragments (another 64), so Q
// is staged once per CTA in shared memory (bf16, swizzled like K) and read by ldmatrix per k-step:
// 16 ldmatrix.x4 of the 80. Per row the arithmetic is the same whatever the rows per warp, so
// both give the same bits.
//
// A query block with no selected key block (or a dense call with no keys) writes exact zeros.
//
// Needs sm_80+ (bf16 mma, cp.async); on older targets the kernels compile to nothing and the host
// never launches them.

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define FA_ENABLED 1
#else
#define FA_ENABLED 0
#endif

#if FA_ENABLED
__device__ __forceinline__ void fa_mma(float* c, const u32* a, u32 b0, u32 b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void fa_ldsm_x4(u32 addr, u32& r0, u32& r1, u32& r2, u32& r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

__device__ __forceinline__ void fa_ldsm_x4_t(u32 addr, u32& r0, u32& r1, u32& r2, u32& r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

// Byte offset of 16-byte chunk `chunk` (0..15) of tile row `row`.
__device__ __forceinline__ u32 fa_swz(int row, int chunk) {
    return (u32)(row * 256 + ((chunk ^ (row & 7)) << 4));
}
#endif

// `x` (n floats) to bf16, round to nearest even. `n4` = n / 4 when x is 16-byte aligned, else 0.
extern "C" __global__ void to_bf16_f32(const float* __restrict__ x, u16* __restrict__ y, u64 n,
                                       u64 n4) {
#if FA_ENABLED
    const float4* x4 = (const float4*)x;
    uint2* y4 = (uint2*)y;
    GRID_LOOP(i, n4) {
        const float4 a = x4[i];
        y4[i] = make_uint2(fa_pack_bf16(a.x, a.y), fa_pack_bf16(a.z, a.w));
    }
    GRID_LOOP(i, n - 4 * n4) {
        const u64 j = 4 * n4 + i;
        y[j] = (u16)(fa_pack_bf16(x[j], 0.0f) & 0xffffu);
    }
#endif
}

// x f32 [rows, heads * 128] -> y bf16 [heads, rows, 128]: each head's keys contiguous, so that a
// 64-key tile is one 16 KB run. 16-byte aligned x.
extern "C" __global__ void to_bf16_heads_f32(const float* __restrict__ x, u16* __restrict__ y,
                                             u64 rows, int heads) {
#if FA_ENABLED
    const u64 per_row = (u64)heads * (FA_HD / 4);
    GRID_LOOP(i, rows * per_row) {
        const u64 r = i / per_row;
        const int c = (int)(i - r * per_row);
        const int h = c / (FA_HD / 4), d4 = c - h * (FA_HD / 4);
        const float4 a = ((const float4*)x)[i];
        ((uint2*)y)[((u64)h * rows + r) * (FA_HD / 4) + d4] =
            make_uint2(fa_pack_bf16(a.x, a.y), fa_pack_bf16(a.z, a.w));
    }
#endif
}

// q: f32 [lq, dim]; o: f32 [lq, dim]; o_bf16, when set, bf16 [lq, dim]: the same values rounded
// (the input of the fast mode's bf16 output projection); dim = heads * 128. kv: bf16 segments
// (FaSegments); row r of a segment, head h, at h * kv_head_stride + r * kv_row_stride (elements;
// rows [n, dim]: dim and 128, head-major [heads, n, 128], one segment only: 128 and n * 128),
// 16-byte aligned rows.
// Work item = head * query_blocks + 128-row query block, taken from order[blockIdx.x / SPLIT]
// when order is given (heaviest first), else blockIdx.x / SPLIT; SPLIT = 128 / (16 * MTILES *
// WARPS) CTAs share an item, blockIdx.x % SPLIT picks the rows. Sparse (seg_off != 0): the item's
// key blocks are seg_blocks[seg_off[item] .. seg_off[item + 1]), each of key_block rows (a
// multiple of 64). Dense (seg_off == 0): keys 0 .. lk. Keys at or past lk are masked in both
// cases. MTILES: m16 tiles of query rows per warp; with more than one, Q lives in shared memory
// after the STAGES K/V stages (16 * MTILES * WARPS rows of 256 bytes).
template <int WARPS, int STAGES, int MTILES>
__device__ __forceinline__ void flash_body(const float* __restrict__ q, const FaSegments& kv,
                                           float* __restrict__ o,
                                           u16* __restrict__ o_bf16, int lq, int lk, int dim, float scale_log2,
                                           const int* __restrict__ seg_off,
                                           const int* __restrict__ seg_blocks,
                                           const int* __restrict__ order, int query_blocks,
                                           int key_block, u64 kv_row_stride, u64 kv_head_stride) {
#if FA_ENABLED
    constexpr int THREADS = WARPS * 32;
    constexpr int WARP_ROWS = 16 * MTILES;
    constexpr int CTA_ROWS = WARPS * WARP_ROWS;
    constexpr int SPLIT = FA_QBLOCK / CTA_ROWS;
    constexpr bool Q_IN_SMEM = MTILES > 1;
    extern __shared__ __align__(128) unsigned char fa_smem[];
    const int cta_item = (int)(blockIdx.x / SPLIT);
    const int part = (int)(blockIdx.x - cta_item * SPLIT);
    const int item = order ? order[cta_item] : cta_item;
    const int head = item / query_blocks;
    const int qb = item - head * query_blocks;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t4 = lane & 3;

    const int* blocks = 0;
    int n_tiles, tiles_per_block = key_block / FA_KT;
    if (seg_off) {
        const int start = seg_off[item];
        blocks = seg_blocks + start;
        n_tiles = (seg_off[item + 1] - start) * tiles_per_block;
    } else {
        n_tiles = (lk + FA_KT - 1) / FA_KT;
    }

    const u32 smem_base = (u32)__cvta_generic_to_shared(fa_smem);
    const u64 hoff = (u64)head * FA_HD;
    const u64 head_off = (u64)head * kv_head_stride;
    // With MTILES > 1 the head's offset is folded into the segment pointers: two registers fewer
    // in the tile loop, where the two m-tiles leave none to spare.
    const u64 head_bytes_in_seg = Q_IN_SMEM ? head_off * 2 : 0;
    const u64 head_off_in_loop = Q_IN_SMEM ? 0 : head_off;
    // The segments in shared memory, searched per tile in a few steps (the unrolled search over
    // the parameter struct cost the kernel ~15 %). seg_first ends with a sentinel past every key.
    __shared__ u64 seg_k[FA_MAX_SEGMENTS], seg_v[FA_MAX_SEGMENTS];
    __shared__ int seg_first[FA_MAX_SEGMENTS + 1];
    if (tid == 0) {
#pragma unroll
        for (int s = 0; s < FA_MAX_SEGMENTS; ++s) {
            seg_k[s] = kv.k[s] + head_bytes_in_seg;
            seg_v[s] = kv.v[s] + head_bytes_in_seg;
            seg_first[s] = s < kv.count ? kv.first_key[s] : 0x7fffffff;
        }
        seg_first[FA_MAX_SEGMENTS] = 0x7fffffff;
    }
    __syncthreads();

    // Issues the cp.async copies of key tile `tile` into stage `stage`.
    auto load_tile = [&](int tile, int stage) {
        int key0;
        if (blocks) {
            const int b = tile / tiles_per_block;
            key0 = blocks[b] * key_block + (tile - b * tiles_per_block) * FA_KT;
        } else {
            key0 = tile * FA_KT;
        }
        int seg = 0;
        while (key0 >= seg_first[seg + 1]) ++seg;
        const int seg_key0 = seg_first[seg];
        const u16* kh = (const u16*)seg_k[seg] + head_off_in_loop;
        const u16* vh = (const u16*)seg_v[seg] + head_off_in_loop;
        const u32 sk = smem_base + stage * (2 * FA_TILE_BYTES);
        const u32 sv = sk + FA_TILE_BYTES;
#pragma unroll
        for (int i = 0; i < FA_KT * 16 / THREADS; ++i) {
            const int c = tid + i * THREADS;
            const int row = c >> 4, chunk = c & 15;
            const int key = key0 + row;
            const bool ok = key < lk;
            const u64 off = (u64)(ok ? key - seg_key0 : 0) * kv_row_stride + chunk * 8;
            const u32 so = fa_swz(row, chunk);
            fa_cp_async16(sk + so, kh + off, ok ? 16 : 0);
            fa_cp_async16(sv + so, vh + off, ok ? 16 : 0);
        }
    };

#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < n_tiles) load_tile(s, s);
        fa_cp_commit();
    }

    const int cta_row0 = qb * FA_QBLOCK + part * CTA_ROWS;
    // Row g of the warp's first m-tile; m-tile mi starts 16 * mi rows further.
    const int r0 = cta_row0 + warp * WARP_ROWS + g;
    const u32 sq = smem_base + STAGES * (2 * FA_TILE_BYTES);
    // Q fragments (A operand of m16n8k16) rounded to bf16 from global f32: in registers for one
    // m-tile, else in shared memory (rows past lq as zeros, as the fragments would hold them);
    // the first __syncthreads of the tile loop publishes them.
    u32 qa[Q_IN_SMEM ? 1 : 8][4];
    if constexpr (Q_IN_SMEM) {
#pragma unroll
        for (int i = 0; i < CTA_ROWS * 16 / THREADS; ++i) {
            const int c = tid + i * THREADS;
            const int row = c >> 4, chunk = c & 15;
            const int qrow = cta_row0 + row;
            u32 packed[4] = {0u, 0u, 0u, 0u};
            if (qrow < lq) {
                const float* src = q + (u64)qrow * dim + hoff + chunk * 8;
#pragma unroll
                for (int h = 0; h < 4; ++h) {
                    const float2 a = *(const float2*)(src + 2 * h);
                    packed[h] = fa_pack_bf16(a.x, a.y);
                }
            }
            asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};" ::"r"(sq + fa_swz(row, chunk)),
                         "r"(packed[0]), "r"(packed[1]), "r"(packed[2]), "r"(packed[3])
                         : "memory");
        }
    } else {
        const bool ok0 = r0 < lq, ok1 = r0 + 8 < lq;
        const float* q0 = q + (u64)r0 * dim + hoff + 2 * t4;
        const float* q1 = q0 + 8 * (u64)dim;
#pragma unroll
        for (int ks = 0; ks < 8; ++ks) {
            const float2 zero = make_float2(0.0f, 0.0f);
            const float2 a = ok0 ? *(const float2*)(q0 + ks * 16) : zero;
            const float2 b = ok1 ? *(const float2*)(q1 + ks * 16) : zero;
            const float2 c = ok0 ? *(const float2*)(q0 + ks * 16 + 8) : zero;
            const float2 d = ok1 ? *(const float2*)(q1 + ks * 16 + 8) : zero;
            qa[ks][0] = fa_pack_bf16(a.x, a.y);
            qa[ks][1] = fa_pack_bf16(b.x, b.y);
            qa[ks][2] = fa_pack_bf16(c.x, c.y);
            qa[ks][3] = fa_pack_bf16(d.x, d.y);
        }
    }

    float acc[MTILES][16][4];
#pragma unroll
    for (int mi = 0; mi < MTILES; ++mi) {
#pragma unroll
        for (int j = 0; j < 16; ++j) {
            acc[mi][j][0] = acc[mi][j][1] = acc[mi][j][2] = acc[mi][j][3] = 0.0f;
        }
    }
    // Row g (index 0) and row g + 8 (index 1) of each m-tile: running max (raw score units) and
    // this thread's partial row sum.
    float m[MTILES][2], l[MTILES][2];
#pragma unroll
    for (int mi = 0; mi < MTILES; ++mi) {
        m[mi][0] = m[mi][1] = NEG_INF;
        l[mi][0] = l[mi][1] = 0.0f;
    }

    // ldmatrix row addresses, relative to a stage's K (V) tile, before the k-step offset.
    // K (non-transposed): lanes 0-7 keys 0-7 chunk 0, 8-15 keys 0-7 chunk 1, 16-23 keys 8-15
    // chunk 0, 24-31 keys 8-15 chunk 1 -> b0b1, b2b3 of key n-tile 0, then of n-tile 1.
    const int k_row = ((lane >> 4) << 3) + (lane & 7);
    const int k_chunk = (lane >> 3) & 1;
    // V (transposed): lanes 0-7 keys 0-7 chunk 0, 8-15 keys 8-15 chunk 0, 16-23 keys 0-7
    // chunk 1, 24-31 keys 8-15 chunk 1 -> b0b1, b2b3 of dim n-tile 0, then of n-tile 1.
    const int v_row = (((lane >> 3) & 1) << 3) + (lane & 7);
    const int v_chunk = lane >> 4;
    // Q (A operand, non-transposed), the same lane pattern as V: rows 0-7, 8-15 of chunk 0, then
    // of chunk 1 -> a0, a1, a2, a3 of the m-tile. Relative to the CTA's Q rows.
    const int q_row = warp * WARP_ROWS + v_row;
    const int q_chunk = v_chunk;
    // With MTILES > 1 registers are short (255 with the two m-tiles' accumulators and S), and the
    // compiler hoists every distinct swizzled offset out of the tile loop: 8 per operand. As the
    // XOR only touches a chunk's low 3 bits, chunk pair i + 4 lies 128 bytes past pair i, and 16
    // rows further are 4096 bytes further; so 4 offsets per operand address every ldmatrix.
    u32 k_off[4], v_off[4], q_off[4];
    if constexpr (Q_IN_SMEM) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            k_off[i] = fa_swz(k_row, 2 * i + k_chunk);
            v_off[i] = fa_swz(v_row, 2 * i + v_chunk);
            q_off[i] = fa_swz(q_row, 2 * i + q_chunk);
        }
    }
    // fa_swz(16 * row16 + lane row, 2 * pair + lane chunk), from the lane's offsets above.
    auto pair_off = [](const u32* off, int row16, int pair) {
        return off[pair & 3] + (u32)((pair >> 2) * 128 + row16 * 4096);
    };

    for (int tile = 0; tile < n_tiles; ++tile) {
        fa_cp_wait<STAGES - 2>();
        __syncthreads();
        // Every warp is past tile - 1, so its stage can be refilled.
        {
            const int next = tile + STAGES - 1;
            if (next < n_tiles) load_tile(next, next % STAGES);
            fa_cp_commit();
        }
        const int stage = tile % STAGES;
        const u32 sk = smem_base + stage * (2 * FA_TILE_BYTES);
        const u32 sv = sk + FA_TILE_BYTES;

        // S = Q Kᵀ: 16 x 64 per m-tile, 8 n-tiles of 8 keys; each K fragment serves every m-tile.
        float s[MTILES][8][4];
#pragma unroll
        for (int mi = 0; mi < MTILES; ++mi) {
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                s[mi][j][0] = s[mi][j][1] = s[mi][j][2] = s[mi][j][3] = 0.0f;
            }
        }
#pragma unroll
        for (int ks = 0; ks < 8; ++ks) {
            u32 qf[MTILES][4];
#pragma unroll
            for (int mi = 0; mi < MTILES; ++mi) {
                if constexpr (Q_IN_SMEM) {
                    fa_ldsm_x4(sq + pair_off(q_off, mi, ks), qf[mi][0], qf[mi][1], qf[mi][2],
                               qf[mi][3]);
                } else {
                    qf[mi][0] = qa[ks][0];
                    qf[mi][1] = qa[ks][1];
                    qf[mi][2] = qa[ks][2];
                    qf[mi][3] = qa[ks][3];
                }
            }
#pragma unroll
            for (int np = 0; np < 4; ++np) {
                u32 b0, b1, b2, b3;
                const u32 k_addr = Q_IN_SMEM ? sk + pair_off(k_off, np, ks)
                                             : sk + fa_swz(np * 16 + k_row, ks * 2 + k_chunk);
                fa_ldsm_x4(k_addr, b0, b1, b2, b3);
#pragma unroll
                for (int mi = 0; mi < MTILES; ++mi) {
                    fa_mma(s[mi][2 * np], qf[mi], b0, b1);
                    fa_mma(s[mi][2 * np + 1], qf[mi], b2, b3);
                }
            }
        }

        // Keys past lk (the last tile of a dense call whose lk is not a multiple of 64).
        int key0;
        if (blocks) {
            const int b = tile / tiles_per_block;
            key0 = blocks[b] * key_block + (tile - b * tiles_per_block) * FA_KT;
        } else {
            key0 = tile * FA_KT;
        }
        if (key0 + FA_KT > lk) {
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                const int key = key0 + 8 * j + 2 * t4;
#pragma unroll
                for (int mi = 0; mi < MTILES; ++mi) {
                    if (key >= lk) s[mi][j][0] = s[mi][j][2] = NEG_INF;
                    if (key + 1 >= lk) s[mi][j][1] = s[mi][j][3] = NEG_INF;
                }
            }
        }

        // Online softmax over the tile, per m-tile: the same arithmetic per row whatever MTILES.
        u32 pa[MTILES][4][4];
#pragma unroll
        for (int mi = 0; mi < MTILES; ++mi) {
            float mx[2] = {m[mi][0], m[mi][1]};
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                mx[0] = fmaxf(mx[0], fmaxf(s[mi][j][0], s[mi][j][1]));
                mx[1] = fmaxf(mx[1], fmaxf(s[mi][j][2], s[mi][j][3]));
            }
            float ms[2], alpha[2];
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                mx[r] = fmaxf(mx[r], __shfl_xor_sync(FULL_MASK, mx[r], 1));
                mx[r] = fmaxf(mx[r], __shfl_xor_sync(FULL_MASK, mx[r], 2));
                // All keys so far masked: keep the exponent finite (every p is 0 then).
                ms[r] = mx[r] == NEG_INF ? 0.0f : mx[r] * scale_log2;
                alpha[r] = fa_ex2(m[mi][r] * scale_log2 - ms[r]);
                m[mi][r] = mx[r];
            }
            float rs[2] = {0.0f, 0.0f};
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                const float p0 = fa_ex2(fmaf(s[mi][j][0], scale_log2, -ms[0]));
                const float p1 = fa_ex2(fmaf(s[mi][j][1], scale_log2, -ms[0]));
                const float p2 = fa_ex2(fmaf(s[mi][j][2], scale_log2, -ms[1]));
                const float p3 = fa_ex2(fmaf(s[mi][j][3], scale_log2, -ms[1]));
                rs[0] += p0 + p1;
                rs[1] += p2 + p3;
                // A fragment of k-step j / 2: n-tile 2kk -> regs 0, 1; n-tile 2kk + 1 -> regs 2, 3.
                pa[mi][j >> 1][(j & 1) * 2 + 0] = fa_pack_bf16(p0, p1);
                pa[mi][j >> 1][(j & 1) * 2 + 1] = fa_pack_bf16(p2, p3);
            }
            l[mi][0] = l[mi][0] * alpha[0] + rs[0];
            l[mi][1] = l[mi][1] * alpha[1] + rs[1];
#pragma unroll
            for (int j = 0; j < 16; ++j) {
                acc[mi][j][0] *= alpha[0];
                acc[mi][j][1] *= alpha[0];
                acc[mi][j][2] *= alpha[1];
                acc[mi][j][3] *= alpha[1];
            }
        }

        // O += P V: 4 k-steps of 16 keys, 16 n-tiles of 8 dims; each V fragment serves every
        // m-tile.
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
#pragma unroll
            for (int dp = 0; dp < 8; ++dp) {
                u32 b0, b1, b2, b3;
                const u32 v_addr = Q_IN_SMEM ? sv + pair_off(v_off, kk, dp)
                                             : sv + fa_swz(kk * 16 + v_row, dp * 2 + v_chunk);
                fa_ldsm_x4_t(v_addr, b0, b1, b2, b3);
#pragma unroll
                for (int mi = 0; mi < MTILES; ++mi) {
                    fa_mma(acc[mi][2 * dp], pa[mi][kk], b0, b1);
                    fa_mma(acc[mi][2 * dp + 1], pa[mi][kk], b2, b3);
                }
            }
        }
    }
    fa_cp_wait<0>();

#pragma unroll
    for (int mi = 0; mi < MTILES; ++mi) {
        // Finish the row sums over the 4 lanes of a row; no key at all -> exact zeros.
        float inv[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            float x = l[mi][r];
            x += __shfl_xor_sync(FULL_MASK, x, 1);
            x += __shfl_xor_sync(FULL_MASK, x, 2);
            inv[r] = x > 0.0f ? 1.0f / x : 0.0f;
        }
        const int row = r0 + 16 * mi;
        float* o0 = o + (u64)row * dim + hoff + 2 * t4;
        float* o1 = o0 + 8 * (u64)dim;
        const bool ok0 = row < lq, ok1 = row + 8 < lq;
#pragma unroll
        for (int j = 0; j < 16; ++j) {
            const float* a = acc[mi][j];
            if (ok0) *(float2*)(o0 + 8 * j) = make_float2(a[0] * inv[0], a[1] * inv[0]);
            if (ok1) *(float2*)(o1 + 8 * j) = make_float2(a[2] * inv[1], a[3] * inv[1]);
        }
        if (o_bf16) {
            u32* b0 = (u32*)(o_bf16 + (o0 - o));
            u32* b1 = (u32*)(o_bf16 + (o1 - o));
#pragma unroll
            for (int j = 0; j < 16; ++j) {
                const float* a = acc[mi][j];
                if (ok0) b0[4 * j] = fa_bf16_pair(a[0] * inv[0], a[1] * inv[0]);
                if (ok1) b1[4 * j] = fa_bf16_pair(a[2] * inv[1], a[3] * inv[1]);
            }
        }
    }
#endif
}

#define FLASH_ARGS                                                                              \
    const float *__restrict__ q, const FaSegments kv, float *__restrict__ o,                    \
        u16 *__restrict__ o_bf16, int lq, int lk, int dim, float scale_log2,                    \
        const int *__restrict__ seg_off, const int *__restrict__ seg_blocks,                    \
        const int *__restrict__ order, int query_blocks, int key_block, u64 kv_row_stride,      \
        u64 kv_head_stride
#define FLASH_PASS                                                                              \
    q, kv, o, o_bf16, lq, lk, dim, scale_log2, seg_off, seg_blocks, order, query_blocks,        \
        key_block, kv_row_stride, kv_head_stride

#define FLASH_KERNEL(NAME, W, S, M, CTAS_PER_SM)                                                \
    extern "C" __global__ void __launch_bounds__(W * 32, CTAS_PER_SM) NAME(FLASH_ARGS) {         \
        flash_body<W, S, M>(FLASH_PASS);                                                        \
    }

// attention_flash_bf16_hd128_w<WARPS>s<STAGES>, 16 rows per warp; 8 warps: one CTA per SM,
// 4 warps: two.
#define FLASH_INSTANCE(W, S) FLASH_KERNEL(attention_flash_bf16_hd128_w##W##s##S, W, S, 1, 8 / W)
// attention_flash_bf16_hd128_w<WARPS>s<STAGES>m<M>, 16 * M rows per warp. The register cap is
// 255 per thread either way (2 CTAs of 128 threads fill the 64K registers); CTAS_PER_SM only
// says what shared memory allows.
#define FLASH_INSTANCE_M(W, S, M, CTAS_PER_SM)                                                  \
    FLASH_KERNEL(attention_flash_bf16_hd128_w##W##s##S##m##M, W, S, M, CTAS_PER_SM)

// 4 warps, 3 stages is the default (H100: two CTAs of 96 KB per SM); the others are for tuning.
FLASH_INSTANCE(4, 3)
FLASH_INSTANCE(4, 2)
FLASH_INSTANCE(8, 3)
// One CTA of 4 warps x 32 rows per query block: 2 stages + Q = 96 KB (two CTAs per SM), 3 stages
// + Q = 128 KB (one).
FLASH_INSTANCE_M(4, 2, 2, 2)
FLASH_INSTANCE_M(4, 3, 2, 1)
