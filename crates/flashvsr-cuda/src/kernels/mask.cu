// Block-sparse attention masks on the device (FLASHVSR.md §5.3–5.4, §5.6), so that a DiT layer
// enqueues its work without a host round trip:
//   scores:     pooled queries and keys -> per-head block scores (head_scores_f32).
//   selection:  block scores -> softmax in f64 (mask_softmax_f64) -> per (head, query group) the
//               (K+1)-th largest probability by radix select, then the 0/1 mask
//               (mask_topk_select_f64). Same arithmetic as the CPU reference up to the order of
//               the row sums and the last ulp of exp.
//   compaction: 0/1 mask -> per (head, query block) counts (mask_row_counts), offsets and the
//               heaviest-first work order (mask_offsets_order), selected key-block lists
//               (mask_row_blocks): what attention.cu and flash.cu read.

#define MASK_TOPK_THREADS 1024
#define MASK_SCAN_THREADS 1024
#define MASK_LOADS 4

__device__ __forceinline__ double warp_max_d(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// Warps per block of the one-warp-per-row kernels: blockDim.x / 32, rows in a grid-stride loop.
#define WARP_ROW_LOOP(row, rows)                                                               \
    for (u64 row = (u64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); row < (u64)(rows); \
         row += (u64)gridDim.x * (blockDim.x >> 5))

#define SCORE_TILE 32
#define SCORE_ROWS 8

// s[h][i][j] = q[i][h * hd .. + hd] . k[j][h * hd .. + hd]; q: [nq][dim], k: [nk][dim] (all heads
// of one call instead of a GEMM per head). Block (SCORE_TILE, SCORE_ROWS) per (key tile, query
// tile, head); each thread sums SCORE_TILE / SCORE_ROWS entries over d in order, with fmaf.
extern "C" __global__ void __launch_bounds__(SCORE_TILE * SCORE_ROWS)
    head_scores_f32(const float* __restrict__ q, const float* __restrict__ k,
                    float* __restrict__ s, int nq, int nk, int dim, int hd) {
    __shared__ float qs[SCORE_TILE][SCORE_TILE + 1];
    __shared__ float ks[SCORE_TILE][SCORE_TILE + 1];
    const int h = blockIdx.z, i0 = blockIdx.y * SCORE_TILE, j0 = blockIdx.x * SCORE_TILE;
    const int tx = threadIdx.x, ty = threadIdx.y;
    const u64 col = (u64)h * hd;
    float acc[SCORE_TILE / SCORE_ROWS] = {};
    for (int d0 = 0; d0 < hd; d0 += SCORE_TILE) {
        const int d = d0 + tx;
        for (int r = ty; r < SCORE_TILE; r += SCORE_ROWS) {
            const int i = i0 + r, j = j0 + r;
            qs[r][tx] = (i < nq && d < hd) ? q[(u64)i * dim + col + d] : 0.0f;
            ks[r][tx] = (j < nk && d < hd) ? k[(u64)j * dim + col + d] : 0.0f;
        }
        __syncthreads();
        const int dn = min(SCORE_TILE, hd - d0);
        for (int e = 0; e < dn; ++e) {
            const float kv = ks[tx][e];
#pragma unroll
            for (int r = 0; r < SCORE_TILE / SCORE_ROWS; ++r)
                acc[r] = fmaf(qs[ty + SCORE_ROWS * r][e], kv, acc[r]);
        }
        __syncthreads();
    }
    const int j = j0 + tx;
#pragma unroll
    for (int r = 0; r < SCORE_TILE / SCORE_ROWS; ++r) {
        const int i = i0 + ty + SCORE_ROWS * r;
        if (i < nq && j < nk) s[((u64)h * nq + i) * nk + j] = acc[r];
    }
}

#define SCORE_MT 64
#define SCORE_MD 32

// head_scores_f32's scores with register tiles, the same sums in the same order (the same bits):
// block (16, 16) per (64 keys, 64 queries, head), each thread 4 queries × 4 keys, one fmaf per
// entry and d in order; q and k staged 32 dims at a time, transposed, so that a thread's 4
// queries and 4 keys of one d are two 16-byte shared loads. head_scores_f32 loads a shared value
// per fmaf: at 1920×1080 (135 × 1080 blocks, 12 heads) it took 0.082 ms a call.
extern "C" __global__ void __launch_bounds__(256)
    head_scores_tiled_f32(const float* __restrict__ q, const float* __restrict__ k,
                          float* __restrict__ s, int nq, int nk, int dim, int hd) {
    __shared__ __align__(16) float qs[SCORE_MD][SCORE_MT + 4];
    __shared__ __align__(16) float ks[SCORE_MD][SCORE_MT + 4];
    const int h = blockIdx.z, i0 = blockIdx.y * SCORE_MT, j0 = blockIdx.x * SCORE_MT;
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const u64 col = (u64)h * hd;
    float acc[4][4];
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[r][c] = 0.0f;
    for (int d0 = 0; d0 < hd; d0 += SCORE_MD) {
        // A warp reads 32 consecutive dims of one row.
        for (int e = tid; e < SCORE_MT * SCORE_MD; e += 256) {
            const int r = e / SCORE_MD, d = e % SCORE_MD;
            const int i = i0 + r, j = j0 + r, dd = d0 + d;
            qs[d][r] = (i < nq && dd < hd) ? q[(u64)i * dim + col + dd] : 0.0f;
            ks[d][r] = (j < nk && dd < hd) ? k[(u64)j * dim + col + dd] : 0.0f;
        }
        __syncthreads();
        const int dn = min(SCORE_MD, hd - d0);
        for (int e = 0; e < dn; ++e) {
            const float4 a = *reinterpret_cast<const float4*>(&qs[e][4 * ty]);
            const float4 b = *reinterpret_cast<const float4*>(&ks[e][4 * tx]);
            const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
            for (int r = 0; r < 4; ++r)
#pragma unroll
                for (int c = 0; c < 4; ++c) acc[r][c] = fmaf(av[r], bv[c], acc[r][c]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int r = 0; r < 4; ++r) {
        const int i = i0 + 4 * ty + r;
#pragma unroll
        for (int c = 0; c < 4; ++c) {
            const int j = j0 + 4 * tx + c;
            if (i < nq && j < nk) s[((u64)h * nq + i) * nk + j] = acc[r][c];
        }
    }
}

// scores, probs: [rows][key_blocks], rows = heads * query_blocks; allowed: [pattern_rows]
// [pattern_cols], entry (bq, bk) eligible iff allowed[bq % pattern_rows][bk % pattern_cols] != 0.
// One warp per row: p = softmax of score * scale over the eligible entries, all 0 when none is.
// __dmul_rn / __dsub_rn keep the products and differences rounded as the CPU's (no FMA).
extern "C" __global__ void mask_softmax_f64(const float* __restrict__ scores,
                                            const float* __restrict__ allowed,
                                            double* __restrict__ probs, u64 rows, int query_blocks,
                                            int key_blocks, int pattern_rows, int pattern_cols,
                                            double scale) {
    const int lane = threadIdx.x & 31;
    const double neg_inf = __longlong_as_double(0xfff0000000000000ull);
    WARP_ROW_LOOP(row, rows) {
        const float* s = scores + row * key_blocks;
        const float* ok = allowed + (u64)((int)(row % query_blocks) % pattern_rows) * pattern_cols;
        double* p = probs + row * key_blocks;
        double mx = neg_inf;
        for (int k = lane; k < key_blocks; k += 32) {
            const double v = ok[k % pattern_cols] != 0.0f ? __dmul_rn((double)s[k], scale) : neg_inf;
            p[k] = v;
            mx = fmax(mx, v);
        }
        mx = warp_max_d(mx);
        if (mx == neg_inf) {
            for (int k = lane; k < key_blocks; k += 32) p[k] = 0.0;
            continue;
        }
        double sum = 0.0;
        for (int k = lane; k < key_blocks; k += 32) {
            const double e = exp(__dsub_rn(p[k], mx));
            p[k] = e;
            sum += e;
        }
        sum = warp_sum_d(sum);
        for (int k = lane; k < key_blocks; k += 32) p[k] = __ddiv_rn(p[k], sum);
    }
}

// The total order of f64 (Rust's total_cmp) as unsigned integers, and back.
__device__ __forceinline__ u64 mask_key(double x) {
    const u64 b = (u64)__double_as_longlong(x);
    return (b >> 63) ? ~b : (b | 0x8000000000000000ull);
}

__device__ __forceinline__ double mask_unkey(u64 k) {
    return __longlong_as_double((long long)((k >> 63) ? (k & 0x7fffffffffffffffull) : ~k));
}

// The keys of positions i0 + j·blockDim.x + threadIdx.x (j < MASK_LOADS) of p, loaded together:
// MASK_LOADS independent loads in flight per thread, as the passes are bound by L2 latency.
// Positions at or past n have `in_range` false.
__device__ __forceinline__ void mask_load_keys(const double* __restrict__ p, u64 n, u64 i0,
                                               u64 key[MASK_LOADS], bool in_range[MASK_LOADS]) {
    double v[MASK_LOADS];
#pragma unroll
    for (int j = 0; j < MASK_LOADS; ++j) {
        const u64 i = i0 + (u64)j * blockDim.x + threadIdx.x;
        in_range[j] = i < n;
        v[j] = in_range[j] ? p[i] : 0.0;
    }
#pragma unroll
    for (int j = 0; j < MASK_LOADS; ++j) key[j] = mask_key(v[j]);
}

// Adds to hist[256] the digit at `shift` of each of p[0..n)'s keys whose digits above it (`high`)
// equal `prefix`: per warp first (__match_any_sync), since probabilities share their leading bits
// and would all hit one shared counter.
__device__ __forceinline__ void mask_digit_histogram(const double* __restrict__ p, u64 n, u64 prefix,
                                                     u64 high, int shift, unsigned int* hist) {
    const int lane = threadIdx.x & 31;
    for (u64 i0 = 0; i0 < n; i0 += MASK_LOADS * blockDim.x) {
        u64 keys[MASK_LOADS];
        bool in_range[MASK_LOADS];
        mask_load_keys(p, n, i0, keys, in_range);
#pragma unroll
        for (int j = 0; j < MASK_LOADS; ++j) {
            const u64 key = keys[j];
            const int digit =
                in_range[j] && (key & high) == prefix ? (int)((key >> shift) & 255) : -1;
            const unsigned int peers = __match_any_sync(FULL_MASK, digit);
            if (digit >= 0 && lane == __ffs(peers) - 1) atomicAdd(&hist[digit], __popc(peers));
        }
    }
}

// One warp: the digit at `shift` that holds descending rank `want`, from the counts of digits
// 255 - 8·lane - j (j < 8) in c (lane l holds digits 255 - 8l down to 248 - 8l: a descending scan
// over the lanes). The lane that finds it writes the new prefix, the rank within the digit, and
// whether the digit is one key's alone.
__device__ __forceinline__ void mask_pick_digit(const unsigned int (&c)[8], u64 prefix, u64 want,
                                                int shift, u64* s_prefix, u64* s_rank,
                                                int* s_unique) {
    const int lane = threadIdx.x & 31;
    unsigned int total = 0;
#pragma unroll
    for (int j = 0; j < 8; ++j) total += c[j];
    unsigned int incl = total;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const unsigned int y = __shfl_up_sync(FULL_MASK, incl, o);
        if (lane >= o) incl += y;
    }
    u64 above = incl - total;
    if (above <= want && want < above + total) {
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            if (want < above + c[j]) {
                *s_prefix = prefix | ((u64)(255 - 8 * lane - j) << shift);
                *s_rank = want - above;
                *s_unique = c[j] == 1;
                break;
            }
            above += c[j];
        }
    }
}

// `found(key)` for the keys of p[0..n) whose digits from `shift` up equal `prefix` (one key, once
// the digit at `shift` was one key's alone).
template <typename Found>
__device__ __forceinline__ void mask_find_key(const double* __restrict__ p, u64 n, u64 prefix,
                                              int shift, Found found) {
    const u64 high_now = ~0ull << shift;
    for (u64 i0 = 0; i0 < n; i0 += MASK_LOADS * blockDim.x) {
        u64 keys[MASK_LOADS];
        bool in_range[MASK_LOADS];
        mask_load_keys(p, n, i0, keys, in_range);
#pragma unroll
        for (int j = 0; j < MASK_LOADS; ++j) {
            if (in_range[j] && (keys[j] & high_now) == prefix) found(keys[j]);
        }
    }
}

// One CTA per (head, query group): the group's pattern_rows rows of probs, n values. Finds τ, the
// value of descending rank `rank` (0-based: the (K+1)-th largest, K = rank < n), by an 8-bit radix
// select over the total-order keys from the most significant digit, then writes mask = p > τ for
// the group. Digits are histogrammed per warp first (__match_any_sync), since probabilities share
// their leading bits and would all hit one shared counter. Once the digit holding rank `want` is
// one value's alone (distinct probabilities: after ~3 of the 8 digits), one pass picks that
// value's key instead of the remaining histograms: the same τ. With few CTAs (12 at the DiT's
// steady chunks) each pass is latency-bound, so passes are what the kernel's time is made of.
extern "C" __global__ void __launch_bounds__(MASK_TOPK_THREADS)
    mask_topk_select_f64(const double* __restrict__ probs, float* __restrict__ mask,
                         int query_blocks, int key_blocks, int pattern_rows, u64 rank) {
    __shared__ unsigned int hist[256];
    __shared__ u64 s_prefix, s_rank, s_key;
    __shared__ int s_unique;
    const int groups = query_blocks / pattern_rows;
    const int head = blockIdx.x / groups, group = blockIdx.x - head * groups;
    const u64 n = (u64)pattern_rows * key_blocks;
    const u64 base = ((u64)head * query_blocks + (u64)group * pattern_rows) * key_blocks;
    const double* p = probs + base;
    const int tid = threadIdx.x, lane = tid & 31;

    u64 prefix = 0, want = rank;
    for (int shift = 56; shift >= 0; shift -= 8) {
        // Keys whose digits above `shift` equal the prefix found so far are the candidates.
        const u64 high = shift == 56 ? 0 : ~0ull << (shift + 8);
        for (int i = tid; i < 256; i += blockDim.x) hist[i] = 0;
        __syncthreads();
        mask_digit_histogram(p, n, prefix, high, shift, hist);
        __syncthreads();
        if (tid < 32) {
            unsigned int c[8];
#pragma unroll
            for (int j = 0; j < 8; ++j) c[j] = hist[255 - 8 * lane - j];
            mask_pick_digit(c, prefix, want, shift, &s_prefix, &s_rank, &s_unique);
        }
        __syncthreads();
        prefix = s_prefix;
        want = s_rank;
        if (s_unique && shift > 0) {
            // The one key whose digits down to this one are `prefix` is τ's.
            mask_find_key(p, n, prefix, shift, [&](u64 key) { s_key = key; });
            __syncthreads();
            prefix = s_key;
            break;
        }
    }
    const double tau = mask_unkey(prefix);
    for (u64 i = tid; i < n; i += blockDim.x) mask[base + i] = p[i] > tau ? 1.0f : 0.0f;
}

// The selection of mask_topk_select_f64 (the same τ, so the same mask) by a cluster of
// MASK_CLUSTER_CTAS CTAs per (head, query group) on sm_90 (the default there;
// `FLASHVSR_CUDA_TOPK_CLUSTER=0` turns it off): at 1920×1152 a steady chunk has only 24 groups, so the one-CTA
// form streams ~72k probabilities per digit pass on 24 SMs. Each CTA histograms its slice of the
// group; rank 0 sums the cluster's histograms through distributed shared memory and picks the
// digit; every CTA reads the choice from rank 0's shared memory. grid = groups · CTAs per cluster.
#define MASK_CLUSTER_CTAS 8

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define MASK_CLUSTER_DIMS __cluster_dims__(MASK_CLUSTER_CTAS, 1, 1)

__device__ __forceinline__ unsigned int mask_cluster_rank() {
    unsigned int r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
    return r;
}

// Every thread of every CTA of the cluster; orders their shared-memory writes before the reads
// after it.
__device__ __forceinline__ void mask_cluster_sync() {
    asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::
                     : "memory");
}

// The address of `p` (a __shared__ variable) in the shared memory of cluster CTA `rank`.
__device__ __forceinline__ unsigned int mask_remote(const void* p, unsigned int rank) {
    const unsigned int local = (unsigned int)__cvta_generic_to_shared(p);
    unsigned int remote;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local), "r"(rank));
    return remote;
}

__device__ __forceinline__ unsigned int mask_remote_u32(unsigned int addr) {
    unsigned int v;
    asm volatile("ld.shared::cluster.u32 %0, [%1];" : "=r"(v) : "r"(addr) : "memory");
    return v;
}

__device__ __forceinline__ u64 mask_remote_u64(unsigned int addr) {
    u64 v;
    asm volatile("ld.shared::cluster.u64 %0, [%1];" : "=l"(v) : "r"(addr) : "memory");
    return v;
}

__device__ __forceinline__ void mask_remote_store_u64(unsigned int addr, u64 v) {
    asm volatile("st.shared::cluster.u64 [%0], %1;" ::"r"(addr), "l"(v) : "memory");
}
#else
#define MASK_CLUSTER_DIMS
#endif

extern "C" __global__ void __launch_bounds__(MASK_TOPK_THREADS) MASK_CLUSTER_DIMS
    mask_topk_select_cluster_f64(const double* __restrict__ probs, float* __restrict__ mask,
                                 int query_blocks, int key_blocks, int pattern_rows, u64 rank) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    __shared__ unsigned int hist[256];
    __shared__ u64 s_prefix, s_rank, s_key;
    __shared__ int s_unique;
    const unsigned int me = mask_cluster_rank();
    const int groups = query_blocks / pattern_rows;
    const int g = blockIdx.x / MASK_CLUSTER_CTAS;
    const int head = g / groups, group = g - head * groups;
    const u64 n = (u64)pattern_rows * key_blocks;
    const u64 base = ((u64)head * query_blocks + (u64)group * pattern_rows) * key_blocks;
    // This CTA's slice of the group's values.
    const u64 lo = n * me / MASK_CLUSTER_CTAS, hi = n * (me + 1) / MASK_CLUSTER_CTAS;
    const double* p = probs + base + lo;
    const u64 m = hi - lo;
    const int tid = threadIdx.x, lane = tid & 31;

    u64 prefix = 0, want = rank;
    for (int shift = 56; shift >= 0; shift -= 8) {
        const u64 high = shift == 56 ? 0 : ~0ull << (shift + 8);
        // Rank 0 read this histogram before the last pass's second barrier: free to clear.
        for (int i = tid; i < 256; i += blockDim.x) hist[i] = 0;
        __syncthreads();
        mask_digit_histogram(p, m, prefix, high, shift, hist);
        mask_cluster_sync();
        if (me == 0 && tid < 32) {
            // mask_topk_select_f64's scan over the cluster's summed histograms.
            unsigned int c[8];
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                unsigned int sum = 0;
                for (unsigned int r = 0; r < MASK_CLUSTER_CTAS; ++r)
                    sum += mask_remote_u32(mask_remote(&hist[255 - 8 * lane - j], r));
                c[j] = sum;
            }
            mask_pick_digit(c, prefix, want, shift, &s_prefix, &s_rank, &s_unique);
        }
        mask_cluster_sync();
        prefix = mask_remote_u64(mask_remote(&s_prefix, 0));
        want = mask_remote_u64(mask_remote(&s_rank, 0));
        const bool unique = mask_remote_u32(mask_remote(&s_unique, 0)) != 0;
        if (unique && shift > 0) {
            // The one key of the group whose digits down to this one are `prefix`: its CTA
            // stores it in rank 0's s_key.
            const unsigned int key_at = mask_remote(&s_key, 0);
            mask_find_key(p, m, prefix, shift, [&](u64 key) { mask_remote_store_u64(key_at, key); });
            mask_cluster_sync();
            prefix = mask_remote_u64(mask_remote(&s_key, 0));
            break;
        }
    }
    // Rank 0's shared memory stays readable until every CTA has read τ's key from it.
    mask_cluster_sync();
    const double tau = mask_unkey(prefix);
    for (u64 i = tid; i < m; i += blockDim.x) mask[base + lo + i] = p[i] > tau ? 1.0f : 0.0f;
#endif
}

// One warp per row of mask [rows][key_blocks]: counts[row] = its non-zero entries.
extern "C" __global__ void mask_row_counts(const float* __restrict__ mask, int* __restrict__ counts,
                                           u64 rows, int key_blocks) {
    const int lane = threadIdx.x & 31;
    WARP_ROW_LOOP(row, rows) {
        const float* m = mask + row * key_blocks;
        int count = 0;
        for (int k0 = 0; k0 < key_blocks; k0 += 32) {
            const int k = k0 + lane;
            count += __popc(__ballot_sync(FULL_MASK, k < key_blocks && m[k] != 0.0f));
        }
        if (lane == 0) counts[row] = count;
    }
}

// Exclusive prefix sum of x[0..n) in place, over the whole CTA (MASK_SCAN_THREADS threads), in
// tiles of one value per thread. Returns the total to every thread.
__device__ int mask_block_scan(int* x, int n, int* warp_totals) {
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    int carry = 0;
    for (int base = 0; base < n; base += MASK_SCAN_THREADS) {
        const int i = base + tid;
        const int v = i < n ? x[i] : 0;
        int incl = v;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const int y = __shfl_up_sync(FULL_MASK, incl, o);
            if (lane >= o) incl += y;
        }
        __syncthreads();  // warp_totals of the previous tile are read
        if (lane == 31) warp_totals[warp] = incl;
        __syncthreads();
        if (warp == 0) {
            int t = warp_totals[lane];
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                const int y = __shfl_up_sync(FULL_MASK, t, o);
                if (lane >= o) t += y;
            }
            warp_totals[lane] = t;
        }
        __syncthreads();
        const int before = carry + (warp > 0 ? warp_totals[warp - 1] : 0);
        if (i < n) x[i] = before + incl - v;
        carry += warp_totals[31];
    }
    return carry;
}

// One CTA of MASK_SCAN_THREADS threads. offsets[0..rows] = exclusive prefix sums of counts
// (offsets[rows] = the total). When order != 0: the rows (work items head * query_blocks + qb)
// sorted stably by ascending key = (by_head ? head * (key_blocks + 1) : 0) + key_blocks - count,
// i.e. heaviest first (within each head when by_head), by a counting sort over n_bins keys held
// in dynamic shared memory.
extern "C" __global__ void __launch_bounds__(MASK_SCAN_THREADS)
    mask_offsets_order(const int* __restrict__ counts, int* __restrict__ offsets,
                       int* __restrict__ order, int rows, int query_blocks, int key_blocks,
                       int by_head, int n_bins) {
    extern __shared__ int bins[];
    __shared__ int warp_totals[32];
    const int tid = threadIdx.x, lane = tid & 31;
    for (int i = tid; i < rows; i += blockDim.x) offsets[i] = counts[i];
    __syncthreads();
    const int total = mask_block_scan(offsets, rows, warp_totals);
    if (tid == 0) offsets[rows] = total;
    if (!order) return;

    auto key = [&](int row) {
        const int head_key = by_head ? (row / query_blocks) * (key_blocks + 1) : 0;
        return head_key + key_blocks - counts[row];
    };
    for (int i = tid; i < n_bins; i += blockDim.x) bins[i] = 0;
    __syncthreads();
    for (int i = tid; i < rows; i += blockDim.x) atomicAdd(&bins[key(i)], 1);
    __syncthreads();
    mask_block_scan(bins, n_bins, warp_totals);
    __syncthreads();
    // One warp places the rows in index order: stable within a key.
    if (tid < 32) {
        for (int base = 0; base < rows; base += 32) {
            const int i = base + lane;
            const int k = i < rows ? key(i) : -1;
            const unsigned int peers = __match_any_sync(FULL_MASK, k);
            const int rank_in_warp = __popc(peers & ((1u << lane) - 1));
            const int start = k >= 0 ? bins[k] : 0;
            __syncwarp();
            if (k >= 0) {
                order[start + rank_in_warp] = i;
                if (rank_in_warp == 0) bins[k] = start + __popc(peers);
            }
            __syncwarp();
        }
    }
}

// One warp per row: blocks[offsets[row] ..] = the indices of the row's non-zero entries, ascending.
extern "C" __global__ void mask_row_blocks(const float* __restrict__ mask,
                                           const int* __restrict__ offsets,
                                           int* __restrict__ blocks, u64 rows, int key_blocks) {
    const int lane = threadIdx.x & 31;
    WARP_ROW_LOOP(row, rows) {
        const float* m = mask + row * key_blocks;
        int pos = offsets[row];
        for (int k0 = 0; k0 < key_blocks; k0 += 32) {
            const int k = k0 + lane;
            const bool sel = k < key_blocks && m[k] != 0.0f;
            const unsigned int ballot = __ballot_sync(FULL_MASK, sel);
            if (sel) blocks[pos + __popc(ballot & ((1u << lane) - 1))] = k;
            pos += __popc(ballot);
        }
    }
}
