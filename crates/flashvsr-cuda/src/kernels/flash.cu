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
// A query block with no selected key block (or a dense call with no keys) writes exact zeros.
//
// Needs sm_80+ (bf16 mma, cp.async); on older targets the kernels compile to nothing and the host
// never launches them.

typedef unsigned int u32;
typedef unsigned short u16;

#define FA_QBLOCK 128
#define FA_HD 128
#define FA_KT 64
// One K (or V) tile: FA_KT rows of 256 bytes.
#define FA_TILE_BYTES (FA_KT * FA_HD * 2)
// Key/value segments of one call (the KV cache's groups, read in place).
#define FA_MAX_SEGMENTS 16

// K and V as segments of rows: keys first_key[s] .. first_key[s + 1] - 1 (the last segment up to
// lk) are rows 0.. of k[s], v[s]. Every segment but the last holds a multiple of FA_KT keys, so
// that a key tile never straddles two.
struct FaSegments {
    u64 k[FA_MAX_SEGMENTS];
    u64 v[FA_MAX_SEGMENTS];
    int first_key[FA_MAX_SEGMENTS];
    int count;
};

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define FA_ENABLED 1
#else
#define FA_ENABLED 0
#endif

#if FA_ENABLED
__device__ __forceinline__ u32 fa_pack_bf16(float lo, float hi) {
    u32 r;
    // The first source goes to the upper half.
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

// Two values as bf16 the way `f32_to_bf16` rounds them (low half first).
__device__ __forceinline__ u32 fa_bf16_pair(float lo, float hi) {
    return (u32)bf16_bits(lo) | ((u32)bf16_bits(hi) << 16);
}

__device__ __forceinline__ float fa_ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

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

// 16 bytes global -> shared; src_bytes = 0 fills the destination with zeros.
__device__ __forceinline__ void fa_cp_async16(u32 dst, const void* src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src),
                 "r"(src_bytes)
                 : "memory");
}

__device__ __forceinline__ void fa_cp_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }

template <int N>
__device__ __forceinline__ void fa_cp_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
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
// when order is given (heaviest first), else blockIdx.x / SPLIT; SPLIT = 128 / (16 * WARPS) CTAs
// share an item, blockIdx.x % SPLIT picks the rows. Sparse (seg_off != 0): the item's key
// blocks are seg_blocks[seg_off[item] .. seg_off[item + 1]), each of key_block rows (a multiple of
// 64). Dense (seg_off == 0): keys 0 .. lk. Keys at or past lk are masked in both cases.
template <int WARPS, int STAGES>
__device__ __forceinline__ void flash_body(const float* __restrict__ q, const FaSegments& kv,
                                           float* __restrict__ o,
                                           u16* __restrict__ o_bf16, int lq, int lk, int dim, float scale_log2,
                                           const int* __restrict__ seg_off,
                                           const int* __restrict__ seg_blocks,
                                           const int* __restrict__ order, int query_blocks,
                                           int key_block, u64 kv_row_stride, u64 kv_head_stride) {
#if FA_ENABLED
    constexpr int THREADS = WARPS * 32;
    constexpr int SPLIT = FA_QBLOCK / (WARPS * 16);
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
    // The segments in shared memory, searched per tile in a few steps (the unrolled search over
    // the parameter struct cost the kernel ~15 %). seg_first ends with a sentinel past every key.
    __shared__ u64 seg_k[FA_MAX_SEGMENTS], seg_v[FA_MAX_SEGMENTS];
    __shared__ int seg_first[FA_MAX_SEGMENTS + 1];
    if (tid == 0) {
#pragma unroll
        for (int s = 0; s < FA_MAX_SEGMENTS; ++s) {
            seg_k[s] = kv.k[s];
            seg_v[s] = kv.v[s];
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
        const u16* kh = (const u16*)seg_k[seg] + head_off;
        const u16* vh = (const u16*)seg_v[seg] + head_off;
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

    // Q fragments (A operand of m16n8k16) straight from global f32, rounded to bf16.
    const int r0 = qb * FA_QBLOCK + part * (WARPS * 16) + warp * 16 + g;
    u32 qa[8][4];
    {
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

    float acc[16][4];
#pragma unroll
    for (int j = 0; j < 16; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
    // Row g (index 0) and row g + 8 (index 1) of the warp's 16: running max (raw score units)
    // and this thread's partial row sum.
    float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.0f, 0.0f};

    // ldmatrix row addresses, relative to a stage's K (V) tile, before the k-step offset.
    // K (non-transposed): lanes 0-7 keys 0-7 chunk 0, 8-15 keys 0-7 chunk 1, 16-23 keys 8-15
    // chunk 0, 24-31 keys 8-15 chunk 1 -> b0b1, b2b3 of key n-tile 0, then of n-tile 1.
    const int k_row = ((lane >> 4) << 3) + (lane & 7);
    const int k_chunk = (lane >> 3) & 1;
    // V (transposed): lanes 0-7 keys 0-7 chunk 0, 8-15 keys 8-15 chunk 0, 16-23 keys 0-7
    // chunk 1, 24-31 keys 8-15 chunk 1 -> b0b1, b2b3 of dim n-tile 0, then of n-tile 1.
    const int v_row = (((lane >> 3) & 1) << 3) + (lane & 7);
    const int v_chunk = lane >> 4;

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

        // S = Q Kᵀ: 16 x 64 per warp, 8 n-tiles of 8 keys.
        float s[8][4];
#pragma unroll
        for (int j = 0; j < 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
        for (int ks = 0; ks < 8; ++ks) {
#pragma unroll
            for (int np = 0; np < 4; ++np) {
                u32 b0, b1, b2, b3;
                fa_ldsm_x4(sk + fa_swz(np * 16 + k_row, ks * 2 + k_chunk), b0, b1, b2, b3);
                fa_mma(s[2 * np], qa[ks], b0, b1);
                fa_mma(s[2 * np + 1], qa[ks], b2, b3);
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
                if (key >= lk) s[j][0] = s[j][2] = NEG_INF;
                if (key + 1 >= lk) s[j][1] = s[j][3] = NEG_INF;
            }
        }

        // Online softmax over the tile.
        float mx[2] = {m[0], m[1]};
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            mx[0] = fmaxf(mx[0], fmaxf(s[j][0], s[j][1]));
            mx[1] = fmaxf(mx[1], fmaxf(s[j][2], s[j][3]));
        }
        float ms[2], alpha[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(FULL_MASK, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(FULL_MASK, mx[r], 2));
            // All keys so far masked: keep the exponent finite (every p is 0 then).
            ms[r] = mx[r] == NEG_INF ? 0.0f : mx[r] * scale_log2;
            alpha[r] = fa_ex2(m[r] * scale_log2 - ms[r]);
            m[r] = mx[r];
        }
        float rs[2] = {0.0f, 0.0f};
        u32 pa[4][4];
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            const float p0 = fa_ex2(fmaf(s[j][0], scale_log2, -ms[0]));
            const float p1 = fa_ex2(fmaf(s[j][1], scale_log2, -ms[0]));
            const float p2 = fa_ex2(fmaf(s[j][2], scale_log2, -ms[1]));
            const float p3 = fa_ex2(fmaf(s[j][3], scale_log2, -ms[1]));
            rs[0] += p0 + p1;
            rs[1] += p2 + p3;
            // A fragment of k-step j / 2: n-tile 2kk -> regs 0, 1; n-tile 2kk + 1 -> regs 2, 3.
            pa[j >> 1][(j & 1) * 2 + 0] = fa_pack_bf16(p0, p1);
            pa[j >> 1][(j & 1) * 2 + 1] = fa_pack_bf16(p2, p3);
        }
        l[0] = l[0] * alpha[0] + rs[0];
        l[1] = l[1] * alpha[1] + rs[1];
#pragma unroll
        for (int j = 0; j < 16; ++j) {
            acc[j][0] *= alpha[0];
            acc[j][1] *= alpha[0];
            acc[j][2] *= alpha[1];
            acc[j][3] *= alpha[1];
        }

        // O += P V: 4 k-steps of 16 keys, 16 n-tiles of 8 dims.
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
#pragma unroll
            for (int dp = 0; dp < 8; ++dp) {
                u32 b0, b1, b2, b3;
                fa_ldsm_x4_t(sv + fa_swz(kk * 16 + v_row, dp * 2 + v_chunk), b0, b1, b2, b3);
                fa_mma(acc[2 * dp], pa[kk], b0, b1);
                fa_mma(acc[2 * dp + 1], pa[kk], b2, b3);
            }
        }
    }
    fa_cp_wait<0>();

    // Finish the row sums over the 4 lanes of a row; no key at all -> exact zeros.
    float inv[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        float x = l[r];
        x += __shfl_xor_sync(FULL_MASK, x, 1);
        x += __shfl_xor_sync(FULL_MASK, x, 2);
        inv[r] = x > 0.0f ? 1.0f / x : 0.0f;
    }
    float* o0 = o + (u64)r0 * dim + hoff + 2 * t4;
    float* o1 = o0 + 8 * (u64)dim;
    const bool ok0 = r0 < lq, ok1 = r0 + 8 < lq;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
        if (ok0) *(float2*)(o0 + 8 * j) = make_float2(acc[j][0] * inv[0], acc[j][1] * inv[0]);
        if (ok1) *(float2*)(o1 + 8 * j) = make_float2(acc[j][2] * inv[1], acc[j][3] * inv[1]);
    }
    if (o_bf16) {
        u32* b0 = (u32*)(o_bf16 + (o0 - o));
        u32* b1 = (u32*)(o_bf16 + (o1 - o));
#pragma unroll
        for (int j = 0; j < 16; ++j) {
            if (ok0) b0[4 * j] = fa_bf16_pair(acc[j][0] * inv[0], acc[j][1] * inv[0]);
            if (ok1) b1[4 * j] = fa_bf16_pair(acc[j][2] * inv[1], acc[j][3] * inv[1]);
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

// attention_flash_bf16_hd128_w<WARPS>s<STAGES>; 8 warps: one CTA per SM, 4 warps: two.
#define FLASH_INSTANCE(W, S)                                                                    \
    extern "C" __global__ void __launch_bounds__(W * 32, 8 / W)                                 \
        attention_flash_bf16_hd128_w##W##s##S(FLASH_ARGS) {                                     \
        flash_body<W, S>(FLASH_PASS);                                                           \
    }

// 4 warps, 3 stages is the default (H100: two CTAs of 96 KB per SM); the others are for tuning.
FLASH_INSTANCE(4, 3)
FLASH_INSTANCE(4, 2)
FLASH_INSTANCE(8, 3)
