// The flash attention kernel of flash.cu on Hopper's warpgroup MMA (wgmma, sm_90a only): the same
// interface and semantics (head_dim 128, bf16 operands, fp32 accumulation and fp32 online
// softmax, K/V read in place from up to FA_MAX_SEGMENTS segments, dense or block-sparse with
// 128-row query blocks and key blocks of a multiple of 64 rows, the bf16 copy of the output,
// exact zeros for a query block with no key block). Not promised to give flash.cu's bits (the
// MMAs may sum in another order), though on an H100 it did.
//
// One CTA of three warpgroups (384 threads) per (head, 128-row query block), flash-attention 3's
// layout with cp.async for copies. Warpgroups 0 and 1 are the consumers: warpgroup wg owns the
// block's rows 64 wg .. 64 wg + 63 (wgmma's M = 64), and within it warp w (of 4) rows 16 w ..
// 16 w + 15, laid out in registers like an m16n8 mma.sync fragment. Per 64-key tile:
// - S = Q·Kᵀ: 8 `wgmma.m64n64k16` (k-steps of 16 over the 128 dims), Q and K both from shared
//   memory (K-major, 128-byte swizzle, descriptors);
// - the fp32 online softmax on S's accumulator fragments, P rounded to bf16 in registers (the row
//   sums use the fp32 P, as in flash.cu);
// - O += P·V: 4 `wgmma.m64n128k16` (k-steps of 16 keys), P as the register A operand, V from
//   shared memory as an N-major ("transposed") B operand.
// The S of tile i + 1 is issued before the P·V of tile i, and its softmax runs while P·V is in
// flight (flash-attention 3's intra-warpgroup overlap); the two warpgroups interleave on the
// tensor cores too. Warpgroup 2 is the producer: its warps copy the K/V tiles by cp.async,
// round robin, and hand the stages over by mbarriers (see flash_wgmma_body). The consumers never
// wait at a barrier of the whole CTA nor issue a copy: an earlier form where all 256 consumer
// threads copied and met at __syncthreads once per tile measured 1.36 ms where this one takes
// 1.11 (H100, the main sage shape), whatever its stage count.
//
// Shared memory (1024-byte aligned, the 128-byte swizzle's period): Q as bf16, 128 rows x 128
// dims, then STAGES stages of a K and a V tile of 64 rows. Every operand is stored the same way:
// two column halves (dims 0-63, 64-127) of rows of 128 bytes, half h at h x (rows x 128 bytes),
// and 16-byte chunk c of row r at chunk c ^ (r & 7): the canonical "128-byte swizzle" layout,
// K-major for Q and K (8-row groups 1024 bytes apart) and, for V, N-major (the two 64-dim halves
// LBO apart, 8-key groups 1024 bytes apart). cp.async and ordinary stores write through the
// generic proxy and wgmma reads through the async proxy: each writing thread issues
// fence.proxy.async.shared::cta after its writes have landed and before the barrier (named
// barrier or mbarrier) that publishes them.
//
// ptxas keeps a wgmma sequence asynchronous only when no other instruction touches its
// registers between the issue and the wait; it says where it could not ("wgmma.mma_async
// instructions are serialized", which the NVRTC compile test rejects). Hence the register
// fences around the waits, the descriptors computed before each wgmma.fence, and the
// straight-line main loop (the last tile's P·V peeled off).
//
// Needs sm_90a (`__CUDA_ARCH_FEAT_SM90_ALL`); on every other target the kernel compiles to
// nothing and the host never launches it.

#define FW_QBLOCK 128
#define FW_HD 128
#define FW_KT 64
// One K (or V) tile: FW_KT rows of 256 bytes, as two halves of FW_KT rows of 128 bytes.
#define FW_TILE_BYTES (FW_KT * FW_HD * 2)
#define FW_HALF_BYTES (FW_KT * 128)
// Q: 128 rows, two halves of 128 rows of 128 bytes.
#define FW_Q_BYTES (FW_QBLOCK * FW_HD * 2)
#define FW_Q_HALF_BYTES (FW_QBLOCK * 128)
// Two consumer warpgroups and a producer warpgroup.
#define FW_THREADS 384

// The TMA form's tensor maps (`CUtensorMap`, 128 bytes, opaque; built by the host with
// cuTensorMapEncodeTiled), one for the K and one for the V of each segment, passed by value as a
// __grid_constant__ kernel parameter (TMA reads a map from parameter space). Calls with more
// segments take the cp.async form.
#define FW_TMA_MAX_SEGMENTS 8
struct __align__(128) FwTensorMap {
    u64 opaque[16];
};
struct FwTensorMaps {
    FwTensorMap k[FW_TMA_MAX_SEGMENTS];
    FwTensorMap v[FW_TMA_MAX_SEGMENTS];
};

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FW_ENABLED 1
#else
#define FW_ENABLED 0
#endif

#if FW_ENABLED
// This thread's generic-proxy writes to shared memory (st.shared, completed cp.async) become
// visible to the async proxy (wgmma's operand reads) once a barrier follows.
__device__ __forceinline__ void fw_fence_proxy() {
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

__device__ __forceinline__ void fw_wgmma_fence() {
    asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
}

__device__ __forceinline__ void fw_wgmma_commit() {
    asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}

// Waits until at most N of this warpgroup's committed wgmma groups are pending.
template <int N>
__device__ __forceinline__ void fw_wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}

// Keeps the compiler from moving reads or writes of these registers across the asm statements
// around it (the wgmma issue and wait): a wgmma's accumulators must not be touched while it is in
// flight, and are valid only after its wait.
template <int N>
__device__ __forceinline__ void fw_fence_regs(float (&r)[N][4]) {
#pragma unroll
    for (int j = 0; j < N; ++j) {
        asm volatile("" : "+f"(r[j][0]), "+f"(r[j][1]), "+f"(r[j][2]), "+f"(r[j][3])::"memory");
    }
}

// The same for the A fragments of an in-flight wgmma: used here, after its wait, they stay live
// (and unshared with the values computed in between) until then.
template <int N>
__device__ __forceinline__ void fw_fence_regs(u32 (&r)[N][4]) {
#pragma unroll
    for (int j = 0; j < N; ++j) {
        asm volatile("" : "+r"(r[j][0]), "+r"(r[j][1]), "+r"(r[j][2]), "+r"(r[j][3])::"memory");
    }
}

// Byte offset of 16-byte chunk `chunk` (0..15) of row `row` in an operand of `half_bytes` per
// 64-dim half (rows x 128), 128-byte swizzle.
__device__ __forceinline__ u32 fw_swz(int row, int chunk, u32 half_bytes) {
    return (u32)((chunk >> 3) * half_bytes + row * 128 + (((chunk & 7) ^ (row & 7)) << 4));
}

// Shared-memory matrix descriptor, 128-byte swizzle: start address, leading and stride byte
// offsets (each encoded >> 4 in 14 bits), base offset 0 (every pattern starts 1024-aligned; the
// k-step offsets of 32, 64, 96 bytes inside a swizzle row are added to the start address, the
// hardware applies the XOR on the address bits).
__device__ __forceinline__ u64 fw_desc(u32 addr, u32 lbo, u32 sbo) {
    return (u64)((addr & 0x3ffffu) >> 4) | ((u64)((lbo & 0x3ffffu) >> 4) << 16) |
           ((u64)((sbo & 0x3ffffu) >> 4) << 32) | (1ull << 62);
}

// The value becomes opaque to the compiler: computed here, it cannot be recomputed later.
__device__ __forceinline__ void fw_opaque(u64& x) { asm volatile("" : "+l"(x)); }

#define FW_ACC4(a, j) "+f"(a[j][0]), "+f"(a[j][1]), "+f"(a[j][2]), "+f"(a[j][3])

// d (64 x 64, fp32) = (accumulate ? d : 0) + A·Bᵀ over 16 k: A 64 x 16 and B 64 x 16, both
// K-major in shared memory.
template <int ACCUMULATE>
__device__ __forceinline__ void fw_mma_ss_n64(float (&d)[8][4], u64 desc_a, u64 desc_b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, "
        "%19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
        "%32, %33, p, 1, 1, 0, 0;\n}\n"
        : FW_ACC4(d, 0), FW_ACC4(d, 1), FW_ACC4(d, 2), FW_ACC4(d, 3), FW_ACC4(d, 4),
          FW_ACC4(d, 5), FW_ACC4(d, 6), FW_ACC4(d, 7)
        : "l"(desc_a), "l"(desc_b), "n"(ACCUMULATE)
        : "memory");
}

// d (64 x 128, fp32) = (accumulate ? d : 0) + A·Bᵀ over 16 k: A 64 x 16 and B 128 x 16, both
// K-major in shared memory (the k128 kernel's S).
template <int ACCUMULATE>
__device__ __forceinline__ void fw_mma_ss_n128(float (&d)[16][4], u64 desc_a, u64 desc_b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, "
        "%19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, "
        "%36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, "
        "%53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
        "%64, %65, p, 1, 1, 0, 0;\n}\n"
        : FW_ACC4(d, 0), FW_ACC4(d, 1), FW_ACC4(d, 2), FW_ACC4(d, 3), FW_ACC4(d, 4),
          FW_ACC4(d, 5), FW_ACC4(d, 6), FW_ACC4(d, 7), FW_ACC4(d, 8), FW_ACC4(d, 9),
          FW_ACC4(d, 10), FW_ACC4(d, 11), FW_ACC4(d, 12), FW_ACC4(d, 13), FW_ACC4(d, 14),
          FW_ACC4(d, 15)
        : "l"(desc_a), "l"(desc_b), "n"(ACCUMULATE)
        : "memory");
}

// d (64 x 128, fp32) += A·B over 16 k: A 64 x 16 bf16 in registers (the m16n8k16 A fragment of
// each warp's 16 rows), B 16 x 128 in shared memory, N-major.
__device__ __forceinline__ void fw_mma_rs_n128(float (&d)[16][4], const u32 (&a)[4], u64 desc_b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, "
        "%19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, "
        "%36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, "
        "%53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
        "{%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
        : FW_ACC4(d, 0), FW_ACC4(d, 1), FW_ACC4(d, 2), FW_ACC4(d, 3), FW_ACC4(d, 4),
          FW_ACC4(d, 5), FW_ACC4(d, 6), FW_ACC4(d, 7), FW_ACC4(d, 8), FW_ACC4(d, 9),
          FW_ACC4(d, 10), FW_ACC4(d, 11), FW_ACC4(d, 12), FW_ACC4(d, 13), FW_ACC4(d, 14),
          FW_ACC4(d, 15)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "n"(1)
        : "memory");
}

// The online softmax's step once the last P·V has read its operands: the row sums and the
// accumulator rescaled by alpha (plus this tile's row sums rs), and the new P (pn) made the next
// P·V's A operand.
template <int KK>
__device__ __forceinline__ void fw_rescale_take_p(float (&acc)[16][4], float (&l)[2],
                                                  const float (&alpha)[2], const float (&rs)[2],
                                                  u32 (&pa)[KK][4], const u32 (&pn)[KK][4]) {
    l[0] = l[0] * alpha[0] + rs[0];
    l[1] = l[1] * alpha[1] + rs[1];
#pragma unroll
    for (int j = 0; j < 16; ++j) {
        acc[j][0] *= alpha[0];
        acc[j][1] *= alpha[0];
        acc[j][2] *= alpha[1];
        acc[j][3] *= alpha[1];
    }
#pragma unroll
    for (int kk = 0; kk < KK; ++kk) {
#pragma unroll
        for (int r = 0; r < 4; ++r) pa[kk][r] = pn[kk][r];
    }
}

// The online softmax step of one 64-key tile for this thread's rows g (index 0) and g + 8
// (index 1): s = raw scores (masked keys -inf), m = running max (raw units), updated. Returns P
// as the bf16 A fragments of the 4 k-steps of P·V, the factor `alpha` that rescales the earlier
// output and row sums, and this thread's partial row sums of the fp32 P. The arithmetic of
// flash.cu.
// NT = 8 n-tiles of 8 keys (a 64-key tile) or 16 (128 keys, the k128 kernel).
template <int NT>
__device__ __forceinline__ void fw_softmax(const float (&s)[NT][4], float (&m)[2],
                                           float scale_log2, u32 (&pa)[NT / 2][4],
                                           float (&alpha)[2], float (&rs)[2]) {
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int j = 0; j < NT; ++j) {
        mx[0] = fmaxf(mx[0], fmaxf(s[j][0], s[j][1]));
        mx[1] = fmaxf(mx[1], fmaxf(s[j][2], s[j][3]));
    }
    float ms[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(FULL_MASK, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(FULL_MASK, mx[r], 2));
        // All keys so far masked: keep the exponent finite (every p is 0 then).
        ms[r] = mx[r] == NEG_INF ? 0.0f : mx[r] * scale_log2;
        alpha[r] = fa_ex2(m[r] * scale_log2 - ms[r]);
        m[r] = mx[r];
    }
    rs[0] = rs[1] = 0.0f;
#pragma unroll
    for (int j = 0; j < NT; ++j) {
        const float p0 = fa_ex2(fmaf(s[j][0], scale_log2, -ms[0]));
        const float p1 = fa_ex2(fmaf(s[j][1], scale_log2, -ms[0]));
        const float p2 = fa_ex2(fmaf(s[j][2], scale_log2, -ms[1]));
        const float p3 = fa_ex2(fmaf(s[j][3], scale_log2, -ms[1]));
        rs[0] += p0 + p1;
        rs[1] += p2 + p3;
        // A fragment of k-step j / 2: key n-tile 2kk -> regs 0 (row g), 1 (row g + 8); n-tile
        // 2kk + 1 -> regs 2, 3.
        pa[j >> 1][(j & 1) * 2 + 0] = fa_pack_bf16(p0, p1);
        pa[j >> 1][(j & 1) * 2 + 1] = fa_pack_bf16(p2, p3);
    }
}
#endif

#if FW_ENABLED
__device__ __forceinline__ void fw_mbar_init(u32 bar, u32 count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}

// Arrives on the barrier (release, CTA scope).
__device__ __forceinline__ void fw_mbar_arrive(u32 bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}

// Waits (acquire, CTA scope) until the barrier's phase of this parity has completed.
__device__ __forceinline__ void fw_mbar_wait(u32 bar, u32 parity) {
    asm volatile(
        "{\n.reg .pred done;\nWAIT:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
        "@!done bra WAIT;\n}\n" ::"r"(bar),
        "r"(parity)
        : "memory");
}

// Arrives on the barrier from lane 0 of the warp only (no branch: a predicated arrive), for
// barriers that count warps.
__device__ __forceinline__ void fw_mbar_arrive_lane0(u32 bar, int lane) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.eq.s32 p, %1, 0;\n"
        "@p mbarrier.arrive.shared::cta.b64 _, [%0];\n}\n" ::"r"(bar),
        "r"(lane)
        : "memory");
}

// Arrives on the barrier and adds `bytes` to the transactions its current phase waits for (the
// bytes that the TMA copies issued next will deliver).
__device__ __forceinline__ void fw_mbar_expect_tx(u32 bar, u32 bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes)
                 : "memory");
}

// Makes the barriers' initialisation visible to the async proxy (the TMA unit completes
// transactions on them).
__device__ __forceinline__ void fw_fence_barrier_init() {
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

// TMA: the box at coordinates (c0, c1, c2) of the tensor map at `map` (a kernel parameter) into
// shared memory at `dst`, completing `bar`'s transactions by its bytes.
__device__ __forceinline__ void fw_tma_load_3d(u32 dst, const void* map, u32 bar, int c0, int c1,
                                               int c2) {
    asm volatile(
        "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, "
        "{%3, %4, %5}], [%2];" ::"r"(dst),
        "l"(map), "r"(bar), "r"(c0), "r"(c1), "r"(c2)
        : "memory");
}

__device__ __forceinline__ void fw_prefetch_tensormap(const void* map) {
    asm volatile("prefetch.tensormap [%0];" ::"l"(map) : "memory");
}

// The consumers' own barrier (named barrier 1, the two consumer warpgroups only).
__device__ __forceinline__ void fw_consumer_sync() {
    asm volatile("bar.sync 1, %0;" ::"n"(2 * 128) : "memory");
}
#endif

#if FW_ENABLED
// The CTA's shared tables, by one thread: each K/V segment's address for this head and its first
// key (past the last segment: none), and the stages' barriers (a full one takes `full_arrivals`).
template <int STAGES, int EMPTY_ARRIVALS>
__device__ __forceinline__ void fw_init_cta(const FaSegments& kv, u64 head_bytes, u64* seg_k,
                                            u64* seg_v, int* seg_first, u32 full0, u32 empty0,
                                            u32 full_arrivals) {
#pragma unroll
    for (int s = 0; s < FA_MAX_SEGMENTS; ++s) {
        seg_k[s] = kv.k[s] + head_bytes;
        seg_v[s] = kv.v[s] + head_bytes;
        seg_first[s] = s < kv.count ? kv.first_key[s] : 0x7fffffff;
    }
    seg_first[FA_MAX_SEGMENTS] = 0x7fffffff;
#pragma unroll
    for (int s = 0; s < STAGES; ++s) {
        fw_mbar_init(full0 + 8 * s, full_arrivals);
        fw_mbar_init(empty0 + 8 * s, EMPTY_ARRIVALS);
    }
}

// The query block's rows as bf16 in shared memory (swizzled halves of 64 columns), by the
// consumer threads; rows at or past lq are zeros.
template <int CONSUMERS>
__device__ __forceinline__ void fw_stage_q(const float* __restrict__ q, u32 sq, int tid,
                                           int cta_row0, int lq, int dim, u64 hoff) {
#pragma unroll 4
    for (int i = 0; i < FW_QBLOCK * 16 / CONSUMERS; ++i) {
        const int c = tid + i * CONSUMERS;
        const int row = c >> 4, chunk = c & 15;
        const int qrow = cta_row0 + row;
        u32 packed[4] = {0u, 0u, 0u, 0u};
        if (qrow < lq) {
            const float2* src = (const float2*)(q + (u64)qrow * dim + hoff + chunk * 8);
#pragma unroll
            for (int h = 0; h < 4; ++h) {
                const float2 a = src[h];
                packed[h] = fa_pack_bf16(a.x, a.y);
            }
        }
        asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};" ::"r"(
                         sq + fw_swz(row, chunk, FW_Q_HALF_BYTES)),
                     "r"(packed[0]), "r"(packed[1]), "r"(packed[2]), "r"(packed[3])
                     : "memory");
    }
}

// The epilogue of both bodies: this thread's rows r0 and r0 + 8 of O (acc / the row sum, exact
// zeros where the row sum is 0: no key at all), and their bf16 copy when o_bf16 is set.
__device__ __forceinline__ void fw_store_output(const float (&acc)[16][4], const float (&l)[2],
                                                float* __restrict__ o, u16* __restrict__ o_bf16,
                                                int lq, int dim, int r0, u64 hoff, int t4) {
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
        const float* a = acc[j];
        if (ok0) *(float2*)(o0 + 8 * j) = make_float2(a[0] * inv[0], a[1] * inv[0]);
        if (ok1) *(float2*)(o1 + 8 * j) = make_float2(a[2] * inv[1], a[3] * inv[1]);
    }
    if (o_bf16) {
        u32* b0 = (u32*)(o_bf16 + (o0 - o));
        u32* b1 = (u32*)(o_bf16 + (o1 - o));
#pragma unroll
        for (int j = 0; j < 16; ++j) {
            const float* a = acc[j];
            if (ok0) b0[4 * j] = fa_bf16_pair(a[0] * inv[0], a[1] * inv[0]);
            if (ok1) b1[4 * j] = fa_bf16_pair(a[2] * inv[1], a[3] * inv[1]);
        }
    }
}
#endif

// The arguments of flash.cu's kernels, with the same meaning: q f32 [lq, dim]; o f32 [lq, dim];
// o_bf16 (when set) the same values as bf16; kv the segments (row r of a segment, head h, at
// h * kv_head_stride + r * kv_row_stride elements, 16-byte aligned rows). Work item = head *
// query_blocks + query block, from order[blockIdx.x] when order is given; one CTA per item.
// Sparse (seg_off != 0): the item's key blocks are seg_blocks[seg_off[item] ..
// seg_off[item + 1]), of key_block rows (a multiple of 64); dense: keys 0 .. lk. Keys at or past
// lk are masked.
//
// Warps 0-7 are the two consumer warpgroups, warps 8-11 the producers, which alone issue the K/V
// copies: producer warp p copies tiles p, p + 4, p + 8, ... Stages are handed over by mbarriers:
// full[s] completes when the 32 lanes of the tile's producer warp have seen their copies land
// (cp.async.wait_group 0, then fence.proxy.async, then arrive: the writes are visible to the
// wgmmas of whoever waits on the barrier); empty[s] when the 256 consumer threads are past their
// last wgmma reading the stage. A producer warp has one tile in flight and waits for it alone
// (the proxy fence compiles to a MEMBAR, which may wait for every copy of the thread): with four
// of them, up to four tiles are in flight, as the stages allow. Consumers release tile t after
// waiting for tile t + 1, so producers stay at most STAGES - 2 tiles ahead of the tile being
// computed.
template <int STAGES>
__device__ __forceinline__ void flash_wgmma_body(
    const float* __restrict__ q, const FaSegments& kv, float* __restrict__ o,
    u16* __restrict__ o_bf16, int lq, int lk, int dim, float scale_log2,
    const int* __restrict__ seg_off, const int* __restrict__ seg_blocks,
    const int* __restrict__ order, int query_blocks, int key_block, u64 kv_row_stride,
    u64 kv_head_stride) {
#if FW_ENABLED
    static_assert(STAGES >= 3, "a stage for the tile in flight besides the two being read");
    constexpr int CONSUMERS = 2 * 128;
    constexpr int PRODUCER_WARPS = 4;
    extern __shared__ __align__(1024) unsigned char fw_smem[];
    const int item = order ? order[blockIdx.x] : (int)blockIdx.x;
    const int head = item / query_blocks;
    const int qb = item - head * query_blocks;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t4 = lane & 3;

    const int* blocks = 0;
    const int tiles_per_block = key_block / FW_KT;
    int n_tiles;
    if (seg_off) {
        const int start = seg_off[item];
        blocks = seg_blocks + start;
        n_tiles = (seg_off[item + 1] - start) * tiles_per_block;
    } else {
        n_tiles = (lk + FW_KT - 1) / FW_KT;
    }

    const u32 smem_base = ((u32)__cvta_generic_to_shared(fw_smem) + 1023u) & ~1023u;
    const u32 sq = smem_base;
    const u32 stages_base = smem_base + FW_Q_BYTES;
    const u64 hoff = (u64)head * FW_HD;
    const u64 head_bytes = (u64)head * kv_head_stride * 2;

    __shared__ u64 seg_k[FA_MAX_SEGMENTS], seg_v[FA_MAX_SEGMENTS];
    __shared__ int seg_first[FA_MAX_SEGMENTS + 1];
    __shared__ __align__(8) u64 full_bar[STAGES], empty_bar[STAGES];
    const u32 full0 = (u32)__cvta_generic_to_shared(full_bar);
    const u32 empty0 = (u32)__cvta_generic_to_shared(empty_bar);
    // A full barrier counts the arrivals of one producer warp's 32 lanes.
    if (tid == 0) {
        fw_init_cta<STAGES, CONSUMERS>(kv, head_bytes, seg_k, seg_v, seg_first, full0, empty0,
                                       32);
    }
    // The last barrier of the whole CTA: from here on the producer and the consumers part.
    __syncthreads();

    auto tile_key0 = [&](int tile) {
        if (blocks) {
            const int b = tile / tiles_per_block;
            return blocks[b] * key_block + (tile - b * tiles_per_block) * FW_KT;
        }
        return tile * FW_KT;
    };

    if (warp >= 8) {
        // A producer warp: lane copies chunk lane & 15 of rows lane / 16 + 2 i, K and V.
        const int chunk = lane & 15;
        for (int tile = warp - 8; tile < n_tiles; tile += PRODUCER_WARPS) {
            const int stage = tile % STAGES;
            if (tile >= STAGES) fw_mbar_wait(empty0 + 8 * stage, ((tile / STAGES) - 1) & 1);
            const int key0 = tile_key0(tile);
            int seg = 0;
            while (key0 >= seg_first[seg + 1]) ++seg;
            const int seg_key0 = seg_first[seg];
            const u16* kh = (const u16*)seg_k[seg] + chunk * 8;
            const u16* vh = (const u16*)seg_v[seg] + chunk * 8;
            const u32 sk = stages_base + stage * (2 * FW_TILE_BYTES);
            const u32 sv = sk + FW_TILE_BYTES;
#pragma unroll 8
            for (int i = 0; i < FW_KT / 2; ++i) {
                const int row = (lane >> 4) + 2 * i;
                const int key = key0 + row;
                const bool ok = key < lk;
                const u64 off = (u64)(ok ? key - seg_key0 : 0) * kv_row_stride;
                const u32 so = fw_swz(row, chunk, FW_HALF_BYTES);
                fa_cp_async16(sk + so, kh + off, ok ? 16 : 0);
                fa_cp_async16(sv + so, vh + off, ok ? 16 : 0);
            }
            fa_cp_commit();
            fa_cp_wait<0>();
            fw_fence_proxy();
            fw_mbar_arrive(full0 + 8 * stage);
        }
        return;
    }

    // The consumers: warpgroup wg = warp / 4, rows 64 wg .. 64 wg + 63 of the query block.
    const int wg = warp >> 2;
    const int cta_row0 = qb * FW_QBLOCK;
    const int r0 = cta_row0 + warp * 16 + g;
    float acc[16][4];
#pragma unroll
    for (int j = 0; j < 16; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
    float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.0f, 0.0f};
    // Keys at or past lk only where lk is not a whole number of tiles (dense) or of key blocks
    // (sparse); elsewhere no tile's keys need looking up on the consumers' path.
    const bool tails = blocks ? lk % key_block != 0 : lk % FW_KT != 0;

    if (n_tiles > 0) {
        fw_stage_q<CONSUMERS>(q, sq, tid, cta_row0, lq, dim, hoff);
        fw_fence_proxy();
        fw_consumer_sync();

        u64 dq[8];
#pragma unroll
        for (int ks = 0; ks < 8; ++ks) {
            dq[ks] = fw_desc(sq + wg * (64 * 128) + (ks >> 2) * FW_Q_HALF_BYTES + (ks & 3) * 32,
                             16, 1024);
        }
        auto k_descs = [&](int stage, u64 (&dk)[8]) {
            const u32 base = stages_base + stage * (2 * FW_TILE_BYTES);
#pragma unroll
            for (int ks = 0; ks < 8; ++ks) {
                dk[ks] = fw_desc(base + (ks >> 2) * FW_HALF_BYTES + (ks & 3) * 32, 16, 1024);
                fw_opaque(dk[ks]);
            }
        };
        auto v_descs = [&](int stage, u64 (&dv)[4]) {
            const u32 base = stages_base + stage * (2 * FW_TILE_BYTES) + FW_TILE_BYTES;
#pragma unroll
            for (int kk = 0; kk < 4; ++kk) {
                dv[kk] = fw_desc(base + kk * 16 * 128, FW_HALF_BYTES, 1024);
                fw_opaque(dv[kk]);
            }
        };
        auto issue_s = [&](float (&s)[8][4], const u64 (&dk)[8]) {
            fw_mma_ss_n64<0>(s, dq[0], dk[0]);
#pragma unroll
            for (int ks = 1; ks < 8; ++ks) fw_mma_ss_n64<1>(s, dq[ks], dk[ks]);
            fw_wgmma_commit();
        };
        // (Written so that ptxas sees one branch: an early return here made it serialize the
        // wgmmas.)
        auto mask_tail = [&](float (&s)[8][4], int tile) {
            const int key0 = tails ? tile_key0(tile) : 0;
            if (tails && key0 + FW_KT > lk) {
#pragma unroll
                for (int j = 0; j < 8; ++j) {
                    const int key = key0 + 8 * j + 2 * t4;
                    if (key >= lk) s[j][0] = s[j][2] = NEG_INF;
                    if (key + 1 >= lk) s[j][1] = s[j][3] = NEG_INF;
                }
            }
        };
        auto wait_full = [&](int tile) {
            fw_mbar_wait(full0 + 8 * (tile % STAGES), (tile / STAGES) & 1);
        };

        u32 pa[4][4];
        {
            wait_full(0);
            float s[8][4];
            u64 dk[8];
            k_descs(0, dk);
            fw_wgmma_fence();
            issue_s(s, dk);
            fw_wgmma_wait<0>();
            fw_fence_regs(s);
            mask_tail(s, 0);
            float alpha[2], rs[2];
            fw_softmax(s, m, scale_log2, pa, alpha, rs);
            l[0] = rs[0];
            l[1] = rs[1];
        }
        auto issue_pv = [&](const u64 (&dv)[4]) {
#pragma unroll
            for (int kk = 0; kk < 4; ++kk) fw_mma_rs_n128(acc, pa[kk], dv[kk]);
            fw_wgmma_commit();
        };

        for (int tile = 0; tile + 1 < n_tiles; ++tile) {
            wait_full(tile + 1);
            float s[8][4];
            u64 dk[8], dv[4];
            k_descs((tile + 1) % STAGES, dk);
            v_descs(tile % STAGES, dv);
            fw_fence_regs(acc);
            fw_wgmma_fence();
            issue_s(s, dk);
            issue_pv(dv);
            fw_wgmma_wait<1>();
            fw_fence_regs(s);
            mask_tail(s, tile + 1);
            float alpha[2], rs[2];
            u32 pn[4][4];
            fw_softmax(s, m, scale_log2, pn, alpha, rs);
            fw_wgmma_wait<0>();
            fw_fence_regs(acc);
            fw_fence_regs(pa);
            // Both of this tile's operands (K by the last S, V by this P·V) are read.
            fw_mbar_arrive(empty0 + 8 * (tile % STAGES));
            fw_rescale_take_p(acc, l, alpha, rs, pa, pn);
        }
        {
            u64 dv[4];
            v_descs((n_tiles - 1) % STAGES, dv);
            fw_fence_regs(acc);
            fw_wgmma_fence();
            issue_pv(dv);
        }
        fw_wgmma_wait<0>();
        fw_fence_regs(acc);
    }

    fw_store_output(acc, l, o, o_bf16, lq, dim, r0, hoff, t4);
#endif
}

// The k128 form (`FLASHVSR_CUDA_FLASH=wgmma_k128`): the same CTA layout, 128 keys per iteration
// instead of 64, so that the per-iteration costs (barrier waits and arrivals, the wgmma issue
// and wait, the row max and sum shuffles, the rescaling of the 64 accumulators) are paid half as
// often. An iteration's 128 keys are two 64-key units: the two halves of a 128-key block, two
// consecutive 64-key tiles (dense), or two consecutive selected 64-key blocks of the item (sage's
// 128 x 64 blocks: keys need not be contiguous, S and P·V do not care which keys a row of K/V
// holds; only the masking of keys at or past lk looks each unit's keys up). With an odd count of
// units the last iteration's second unit is absent: its producer fills K and V with zeros (V must
// be finite: P = 0 times NaN would be NaN) and the consumers mask its keys.
// Per iteration: S = Q·Kᵀ as 8 `wgmma.m64n128k16` (Q and K from shared memory), the online softmax
// over 128 keys, O += P·V as 8 `wgmma.m64n128k16` (P from registers). S (64), O (64), the P being
// multiplied and the next P (32 each) are 192 registers per consumer thread, with the operand
// descriptors more than the 168 that 384 threads get: the consumer warpgroups raise their limit
// to 232 registers (setmaxnreg; ptxas allocates each side within its limit) and the producer
// warpgroup, which only issues copies, drops to 40 (2 x 128 x 232 + 128 x 40 = 64512 of the
// SM's 65536). ptxas: no spills at 232 / 40 (some at 240 / 24, serialized wgmmas at 160). K/V
// tile: 128 rows (16 KB per 64-dim half); 3 stages of a K and a V tile (192 KB) with Q's 32 KB
// fill the 227 KB that a CTA may have. The online softmax over 128 keys at once sums in
// another order than the 64-key kernels: not their bits, within the same tolerances.
//
// PINGPONG (`wgmma_k128pp`): the two consumer warpgroups take turns to issue their wgmmas
// (flash-attention 3's "pingpong": named barriers 2 and 3, each warpgroup waits for its turn
// before it issues and passes the turn on after), so that the tensor cores run one warpgroup's
// S and P·V while the other computes its softmax, instead of both issuing at once and both
// waiting at once. Same arithmetic, same bits as without.
//
// TMA (`wgmma_k128pp_tma`, the default on sm_90; pingpong only): one producer thread copies K and
// V by `cp.async.bulk.tensor` from each segment's tensor map (FwTensorMaps, built by the host:
// a box is one 64-dim half of a 64-key unit, written in the 128-byte-swizzled layout above), the
// full barriers completing on the copies' transaction bytes: no per-lane copies, no proxy fence.
// K and V have their own barriers: K of tile t + 1 is copied before V of tile t (the order in
// which the consumers use them), and K's stage is released once the S that read it completes,
// V's once its P·V does. Keys past a segment's rows read as zeros (the tensor map's bounds); an
// absent unit copies the tile's first unit again (finite, masked: P is exactly 0 on its keys, so
// the same bits as the cp.async form's zeros). On an H100 (`flash bench`, sage): 1.05 → 0.89 ms
// per call.
#define FW_K128_KT 128
#define FW_K128_TILE_BYTES (FW_K128_KT * FW_HD * 2)
#define FW_K128_HALF_BYTES (FW_K128_KT * 128)

template <int STAGES, bool PINGPONG, bool TMA>
__device__ __forceinline__ void flash_wgmma_k128_body(
    const float* __restrict__ q, const FaSegments& kv, float* __restrict__ o,
    u16* __restrict__ o_bf16, int lq, int lk, int dim, float scale_log2,
    const int* __restrict__ seg_off, const int* __restrict__ seg_blocks,
    const int* __restrict__ order, int query_blocks, int key_block, u64 kv_row_stride,
    u64 kv_head_stride, const FwTensorMaps* maps) {
#if FW_ENABLED
    static_assert(STAGES >= 3, "a stage for the tile in flight besides the two being read");
    constexpr int CONSUMERS = 2 * 128;
    constexpr int PRODUCER_WARPS = 4;
    extern __shared__ __align__(1024) unsigned char fw_smem[];
    const int item = order ? order[blockIdx.x] : (int)blockIdx.x;
    const int head = item / query_blocks;
    const int qb = item - head * query_blocks;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t4 = lane & 3;

    // Units of 64 keys, as flash_wgmma_body's tiles; iterations (tiles) of two units.
    const int* blocks = 0;
    const int units_per_block = key_block / FW_KT;
    int n_units;
    if (seg_off) {
        const int start = seg_off[item];
        blocks = seg_blocks + start;
        n_units = (seg_off[item + 1] - start) * units_per_block;
    } else {
        n_units = (lk + FW_KT - 1) / FW_KT;
    }
    const int n_tiles = (n_units + 1) / 2;

    const u32 smem_base = ((u32)__cvta_generic_to_shared(fw_smem) + 1023u) & ~1023u;
    const u32 sq = smem_base;
    const u32 stages_base = smem_base + FW_Q_BYTES;
    const u64 hoff = (u64)head * FW_HD;
    const u64 head_bytes = (u64)head * kv_head_stride * 2;

    __shared__ u64 seg_k[FA_MAX_SEGMENTS], seg_v[FA_MAX_SEGMENTS];
    __shared__ int seg_first[FA_MAX_SEGMENTS + 1];
    // TMA: full_bar / empty_bar are K's, fullv_bar / emptyv_bar V's.
    __shared__ __align__(8) u64 full_bar[STAGES], empty_bar[STAGES];
    __shared__ __align__(8) u64 fullv_bar[TMA ? STAGES : 1], emptyv_bar[TMA ? STAGES : 1];
    const u32 full0 = (u32)__cvta_generic_to_shared(full_bar);
    const u32 empty0 = (u32)__cvta_generic_to_shared(empty_bar);
    const u32 fullv0 = (u32)__cvta_generic_to_shared(fullv_bar);
    const u32 emptyv0 = (u32)__cvta_generic_to_shared(emptyv_bar);
    if (tid == 0) {
        if (TMA) {
            // Full: the producer's one arrival (with the transaction bytes); empty: one arrival
            // per consumer warp (K), per consumer thread (V).
            fw_init_cta<STAGES, CONSUMERS / 32>(kv, head_bytes, seg_k, seg_v, seg_first, full0,
                                                empty0, 1);
#pragma unroll
            for (int st = 0; st < STAGES; ++st) {
                fw_mbar_init(fullv0 + 8 * st, 1);
                fw_mbar_init(emptyv0 + 8 * st, CONSUMERS);
            }
            fw_fence_barrier_init();
        } else {
            // Both units' producer warps (32 lanes each) fill a stage.
            fw_init_cta<STAGES, CONSUMERS>(kv, head_bytes, seg_k, seg_v, seg_first, full0,
                                           empty0, 64);
        }
    }
    __syncthreads();

    // First key of unit u (< n_units).
    auto unit_key0 = [&](int u) {
        if (blocks) {
            const int b = u / units_per_block;
            return blocks[b] * key_block + (u - b * units_per_block) * FW_KT;
        }
        return u * FW_KT;
    };

    if (warp >= 8) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
        if (TMA) {
            // One thread issues every copy: per tile and operand 4 TMA boxes of 64 rows x 64
            // dims (8 KB; a unit's rows of one 64-dim half, in the half's 128-byte-swizzled
            // layout), K of tile t + 1 before V of tile t, as the consumers need them.
            if (warp == 8 && lane == 0) {
                for (int s = 0; s < kv.count && s < FW_TMA_MAX_SEGMENTS; ++s) {
                    fw_prefetch_tensormap(&maps->k[s]);
                    fw_prefetch_tensormap(&maps->v[s]);
                }
                // Both operands' copies of tile t (K: v = false), after its stage is free.
                auto issue = [&](int tile, bool v) {
                    const int stage = tile % STAGES;
                    const u32 full = (v ? fullv0 : full0) + 8 * stage;
                    if (tile >= STAGES) {
                        fw_mbar_wait((v ? emptyv0 : empty0) + 8 * stage,
                                     ((tile / STAGES) - 1) & 1);
                    }
                    fw_mbar_expect_tx(full, FW_K128_TILE_BYTES);
                    const u32 dst = stages_base + stage * (2 * FW_K128_TILE_BYTES) +
                                    (v ? FW_K128_TILE_BYTES : 0);
                    int seg = 0, row = 0;
#pragma unroll
                    for (int h = 0; h < 2; ++h) {
                        const int u = 2 * tile + h;
                        // An absent unit (past n_units) copies the first unit's rows again:
                        // finite values (P is 0 on them), and every copy delivers its bytes.
                        if (u < n_units) {
                            const int key0 = unit_key0(u);
                            seg = 0;
                            while (key0 >= seg_first[seg + 1]) ++seg;
                            row = key0 - seg_first[seg];
                        }
                        const FwTensorMap* map = v ? &maps->v[seg] : &maps->k[seg];
#pragma unroll
                        for (int half = 0; half < 2; ++half) {
                            fw_tma_load_3d(dst + half * FW_K128_HALF_BYTES + h * (FW_KT * 128),
                                           map, full, 0, 2 * head + half, row);
                        }
                    }
                };
                if (n_tiles > 0) issue(0, false);
                for (int tile = 0; tile < n_tiles; ++tile) {
                    if (tile + 1 < n_tiles) issue(tile + 1, false);
                    issue(tile, true);
                }
            }
            return;
        }
        // A producer warp copies units warp - 8, warp - 4, ...: unit u into rows 64 (u & 1) ..
        // of tile u / 2's stage. Lane copies chunk lane & 15 of rows lane / 16 + 2 i.
        const int chunk = lane & 15;
        for (int u = warp - 8; u < 2 * n_tiles; u += PRODUCER_WARPS) {
            const int tile = u >> 1;
            const int stage = tile % STAGES;
            if (tile >= STAGES) fw_mbar_wait(empty0 + 8 * stage, ((tile / STAGES) - 1) & 1);
            // An absent unit (past n_units): every row zero-filled.
            const int key0 = u < n_units ? unit_key0(u) : lk;
            int seg = 0;
            while (key0 >= seg_first[seg + 1]) ++seg;
            const int seg_key0 = seg_first[seg];
            const u16* kh = (const u16*)seg_k[seg] + chunk * 8;
            const u16* vh = (const u16*)seg_v[seg] + chunk * 8;
            const u32 sk = stages_base + stage * (2 * FW_K128_TILE_BYTES) + (u & 1) * (FW_KT * 128);
            const u32 sv = sk + FW_K128_TILE_BYTES;
#pragma unroll 8
            for (int i = 0; i < FW_KT / 2; ++i) {
                const int row = (lane >> 4) + 2 * i;
                const int key = key0 + row;
                const bool ok = key < lk;
                const u64 off = (u64)(ok ? key - seg_key0 : 0) * kv_row_stride;
                const u32 so = fw_swz(row, chunk, FW_K128_HALF_BYTES);
                fa_cp_async16(sk + so, kh + off, ok ? 16 : 0);
                fa_cp_async16(sv + so, vh + off, ok ? 16 : 0);
            }
            fa_cp_commit();
            fa_cp_wait<0>();
            fw_fence_proxy();
            fw_mbar_arrive(full0 + 8 * stage);
        }
        return;
    }
    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");

    const int wg = warp >> 2;
    // PINGPONG: barrier 2 + wg completes when this warpgroup (128 threads waiting) has the turn
    // (the other's 128 threads arrived).
    auto turn_wait = [&]() {
        if (PINGPONG) asm volatile("bar.sync %0, 256;" ::"r"(2 + wg) : "memory");
    };
    auto turn_pass = [&]() {
        if (PINGPONG) asm volatile("bar.arrive %0, 256;" ::"r"(3 - wg) : "memory");
    };
    const int cta_row0 = qb * FW_QBLOCK;
    const int r0 = cta_row0 + warp * 16 + g;
    float acc[16][4];
#pragma unroll
    for (int j = 0; j < 16; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
    float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.0f, 0.0f};
    const bool tails = blocks ? lk % key_block != 0 : lk % FW_KT != 0;

    if (n_tiles > 0) {
        fw_stage_q<CONSUMERS>(q, sq, tid, cta_row0, lq, dim, hoff);
        fw_fence_proxy();
        fw_consumer_sync();

        u64 dq[8];
#pragma unroll
        for (int ks = 0; ks < 8; ++ks) {
            dq[ks] = fw_desc(sq + wg * (64 * 128) + (ks >> 2) * FW_Q_HALF_BYTES + (ks & 3) * 32,
                             16, 1024);
        }
        auto k_descs = [&](int stage, u64 (&dk)[8]) {
            const u32 base = stages_base + stage * (2 * FW_K128_TILE_BYTES);
#pragma unroll
            for (int ks = 0; ks < 8; ++ks) {
                dk[ks] = fw_desc(base + (ks >> 2) * FW_K128_HALF_BYTES + (ks & 3) * 32, 16, 1024);
                fw_opaque(dk[ks]);
            }
        };
        auto v_descs = [&](int stage, u64 (&dv)[8]) {
            const u32 base =
                stages_base + stage * (2 * FW_K128_TILE_BYTES) + FW_K128_TILE_BYTES;
#pragma unroll
            for (int kk = 0; kk < 8; ++kk) {
                dv[kk] = fw_desc(base + kk * 16 * 128, FW_K128_HALF_BYTES, 1024);
                fw_opaque(dv[kk]);
            }
        };
        auto issue_s = [&](float (&s)[16][4], const u64 (&dk)[8]) {
            fw_mma_ss_n128<0>(s, dq[0], dk[0]);
#pragma unroll
            for (int ks = 1; ks < 8; ++ks) fw_mma_ss_n128<1>(s, dq[ks], dk[ks]);
            fw_wgmma_commit();
        };
        // Keys at or past lk (both units' first keys looked up only where some may be: tails,
        // or the last tile of an odd count, whose absent unit starts at lk). One branch, as in
        // flash_wgmma_body.
        auto mask_tail = [&](float (&s)[16][4], int tile) {
            const int u = 2 * tile;
            const int key0a = tails ? unit_key0(u) : 0;
            const int key0b = u + 1 >= n_units ? lk : (tails ? unit_key0(u + 1) : 0);
            if (key0a + FW_KT > lk || key0b + FW_KT > lk) {
#pragma unroll
                for (int j = 0; j < 16; ++j) {
                    const int key = (j < 8 ? key0a : key0b) + 8 * (j & 7) + 2 * t4;
                    if (key >= lk) s[j][0] = s[j][2] = NEG_INF;
                    if (key + 1 >= lk) s[j][1] = s[j][3] = NEG_INF;
                }
            }
        };
        auto wait_full = [&](int tile) {
            fw_mbar_wait(full0 + 8 * (tile % STAGES), (tile / STAGES) & 1);
        };
        // TMA: V has its own barriers; elsewhere the full barrier covers both operands.
        auto wait_v = [&](int tile) {
            if (TMA) fw_mbar_wait(fullv0 + 8 * (tile % STAGES), (tile / STAGES) & 1);
        };
        // TMA: K's stage is free once the S that read it has completed (one arrival per warp),
        // V's once the P·V has (every thread: a lane-0 arrival here, after the wait for the
        // P·V, made ptxas serialize the wgmmas). Elsewhere one release of both, after the P·V.
        auto release_k = [&](int tile) {
            if (TMA) fw_mbar_arrive_lane0(empty0 + 8 * (tile % STAGES), lane);
        };
        auto release_v = [&](int tile) {
            fw_mbar_arrive((TMA ? emptyv0 : empty0) + 8 * (tile % STAGES));
        };

        u32 pa[8][4];
        // Warpgroup 0 issues first. Each warpgroup issues n_tiles + 1 times (the first S, the
        // loop, the last P·V) and passes the turn after each but warpgroup 1's last: as many
        // arrivals as waits on either barrier.
        if (wg == 1) turn_pass();
        {
            wait_full(0);
            float s[16][4];
            u64 dk[8];
            k_descs(0, dk);
            turn_wait();
            fw_wgmma_fence();
            issue_s(s, dk);
            turn_pass();
            fw_wgmma_wait<0>();
            fw_fence_regs(s);
            release_k(0);
            mask_tail(s, 0);
            float alpha[2], rs[2];
            fw_softmax(s, m, scale_log2, pa, alpha, rs);
            l[0] = rs[0];
            l[1] = rs[1];
        }
        auto issue_pv = [&](const u64 (&dv)[8]) {
#pragma unroll
            for (int kk = 0; kk < 8; ++kk) fw_mma_rs_n128(acc, pa[kk], dv[kk]);
            fw_wgmma_commit();
        };

        for (int tile = 0; tile + 1 < n_tiles; ++tile) {
            wait_full(tile + 1);
            wait_v(tile);
            float s[16][4];
            u64 dk[8], dv[8];
            k_descs((tile + 1) % STAGES, dk);
            v_descs(tile % STAGES, dv);
            fw_fence_regs(acc);
            turn_wait();
            fw_wgmma_fence();
            issue_s(s, dk);
            issue_pv(dv);
            turn_pass();
            fw_wgmma_wait<1>();
            fw_fence_regs(s);
            release_k(tile + 1);
            mask_tail(s, tile + 1);
            float alpha[2], rs[2];
            u32 pn[8][4];
            fw_softmax(s, m, scale_log2, pn, alpha, rs);
            fw_wgmma_wait<0>();
            fw_fence_regs(acc);
            fw_fence_regs(pa);
            release_v(tile);
            fw_rescale_take_p(acc, l, alpha, rs, pa, pn);
        }
        {
            wait_v(n_tiles - 1);
            u64 dv[8];
            v_descs((n_tiles - 1) % STAGES, dv);
            fw_fence_regs(acc);
            turn_wait();
            fw_wgmma_fence();
            issue_pv(dv);
            if (wg == 0) turn_pass();
        }
        fw_wgmma_wait<0>();
        fw_fence_regs(acc);
    }
    fw_store_output(acc, l, o, o_bf16, lq, dim, r0, hoff, t4);
#endif
}

// attention_flash_bf16_hd128_wgmma_s<STAGES>: 384 threads (two consumer warpgroups and the
// producer warpgroup), one CTA per SM (dynamic shared memory 1 KB + 32 KB of Q + STAGES x 32 KB).
#define FLASH_WGMMA_INSTANCE(S)                                                                 \
    extern "C" __global__ void __launch_bounds__(FW_THREADS, 1)                                 \
        attention_flash_bf16_hd128_wgmma_s##S(                                                  \
            const float* __restrict__ q, const FaSegments kv, float* __restrict__ o,            \
            u16* __restrict__ o_bf16, int lq, int lk, int dim, float scale_log2,                \
            const int* __restrict__ seg_off, const int* __restrict__ seg_blocks,                \
            const int* __restrict__ order, int query_blocks, int key_block, u64 kv_row_stride,  \
            u64 kv_head_stride) {                                                               \
        flash_wgmma_body<S>(q, kv, o, o_bf16, lq, lk, dim, scale_log2, seg_off, seg_blocks,     \
                            order, query_blocks, key_block, kv_row_stride, kv_head_stride);     \
    }

// 4 stages (161 KB) is the instance `FLASHVSR_CUDA_FLASH=wgmma` selects; 5 (193 KB) for tuning
// (measured slower on an H100).
FLASH_WGMMA_INSTANCE(4)
FLASH_WGMMA_INSTANCE(5)

// attention_flash_bf16_hd128_wgmma_k128_s<STAGES>: flash_wgmma_k128_body, the same launch
// (dynamic shared memory 1 KB + 32 KB of Q + STAGES x 64 KB).
#define FLASH_WGMMA_K128_INSTANCE(S)                                                            \
    extern "C" __global__ void __launch_bounds__(FW_THREADS, 1)                                 \
        attention_flash_bf16_hd128_wgmma_k128_s##S(                                             \
            const float* __restrict__ q, const FaSegments kv, float* __restrict__ o,            \
            u16* __restrict__ o_bf16, int lq, int lk, int dim, float scale_log2,                \
            const int* __restrict__ seg_off, const int* __restrict__ seg_blocks,                \
            const int* __restrict__ order, int query_blocks, int key_block, u64 kv_row_stride,  \
            u64 kv_head_stride) {                                                               \
        flash_wgmma_k128_body<S, false, false>(q, kv, o, o_bf16, lq, lk, dim, scale_log2,       \
                                               seg_off, seg_blocks, order, query_blocks,        \
                                               key_block, kv_row_stride, kv_head_stride, 0);    \
    }

// attention_flash_bf16_hd128_wgmma_k128pp_s<STAGES>: the same with PINGPONG.
#define FLASH_WGMMA_K128PP_INSTANCE(S)                                                          \
    extern "C" __global__ void __launch_bounds__(FW_THREADS, 1)                                 \
        attention_flash_bf16_hd128_wgmma_k128pp_s##S(                                           \
            const float* __restrict__ q, const FaSegments kv, float* __restrict__ o,            \
            u16* __restrict__ o_bf16, int lq, int lk, int dim, float scale_log2,                \
            const int* __restrict__ seg_off, const int* __restrict__ seg_blocks,                \
            const int* __restrict__ order, int query_blocks, int key_block, u64 kv_row_stride,  \
            u64 kv_head_stride) {                                                               \
        flash_wgmma_k128_body<S, true, false>(q, kv, o, o_bf16, lq, lk, dim, scale_log2,        \
                                              seg_off, seg_blocks, order, query_blocks,         \
                                              key_block, kv_row_stride, kv_head_stride, 0);     \
    }

// attention_flash_bf16_hd128_wgmma_k128pp_tma_s<STAGES>: the pingpong form with K/V copied by
// TMA (`maps`: each segment's K and V tensor maps, the segments of `kv` up to
// FW_TMA_MAX_SEGMENTS) and separate K and V barriers.
#define FLASH_WGMMA_K128PP_TMA_INSTANCE(S)                                                      \
    extern "C" __global__ void __launch_bounds__(FW_THREADS, 1)                                 \
        attention_flash_bf16_hd128_wgmma_k128pp_tma_s##S(                                       \
            const float* __restrict__ q, const FaSegments kv, float* __restrict__ o,            \
            u16* __restrict__ o_bf16, int lq, int lk, int dim, float scale_log2,                \
            const int* __restrict__ seg_off, const int* __restrict__ seg_blocks,                \
            const int* __restrict__ order, int query_blocks, int key_block, u64 kv_row_stride,  \
            u64 kv_head_stride, const __grid_constant__ FwTensorMaps maps) {                    \
        flash_wgmma_k128_body<S, true, true>(q, kv, o, o_bf16, lq, lk, dim, scale_log2,         \
                                             seg_off, seg_blocks, order, query_blocks,          \
                                             key_block, kv_row_stride, kv_head_stride, &maps);  \
    }

// 3 stages: 225 KB, as much as fits.
FLASH_WGMMA_K128_INSTANCE(3)
FLASH_WGMMA_K128PP_INSTANCE(3)
FLASH_WGMMA_K128PP_TMA_INSTANCE(3)

// ---- Dense attention over few keys, persistent (`FLASHVSR_CUDA_DENSE_PERSISTENT`) ----
//
// The DiT's cross-attention: every query row against the prompt's 512 keys (4 iterations of 128
// keys per 128-row query block). In the one-CTA-per-item TMA kernel each CTA's fixed costs
// (staging Q from f32 in global memory, the pipeline's first copies, writing O) are about half
// its life and, at one CTA per SM, nothing overlaps them. Here a CTA per SM (grid = min(items,
// SMs)) takes items blockIdx.x, blockIdx.x + gridDim.x, ... and keeps copying across them:
// - the producer warp (warp 8) copies K/V by TMA as the k128 TMA kernel does, its stages and
//   their phases running on across items (global tile g = the CTA's j-th item's first tile + t),
//   so the next item's first tiles arrive while the consumers finish the current one;
// - the next item's Q is copied raw (f32, 512 bytes a row, one bulk copy per row, spread over
//   the producer warp's lanes) into a staging buffer while the current item computes; each
//   consumer warpgroup then rounds its own 64 rows to bf16 into Q's swizzled layout (the values
//   and rounding of fw_stage_q: the same operand bits) and releases the staging buffer;
// - the consumers' stores of O are not followed by any wait of theirs before the next item's Q
//   is in shared memory.
// Per item the k128 TMA pingpong kernel's arithmetic in the same order (its softmax, wgmmas and
// epilogue): the same bits as `attention_flash_bf16_hd128_wgmma_k128pp_tma_s3` on dense calls.
// Two K/V stages (K and V have their own barriers, so K of tile t + 2 may land while V of tile t
// is read) leave room for the 64 KB of staged Q: 1 KB of alignment + 32 KB of bf16 Q + 2 x 64 KB
// + 64 KB = 225 KB, as the 3-stage kernel. Dense calls over one K/V segment (its maps k[0],
// v[0]), lk > 0, q 16-byte aligned with rows of a multiple of 16 bytes (the host checks).
// `flags`: bit 0 (head-minor) the items in the order query block * heads + head (the CTAs
// running at once read all heads' K/V) instead of head-major (head * query_blocks + query block:
// they read the same head's); bit 1 the output stored by fw_store_output_v4 (same values). The
// host sets both (the default): on an H200 in the 1080p pipeline, `attention q17280 k512` took
// 0.258 ms per call with the one-CTA-per-item kernel, 0.249 with neither flag, 0.227 with both
// (PERF_NOTES.md). A form with 3 K/V stages and Q read by the consumers from global memory (after
// an L2 prefetch; no staging buffer) took 0.238 with both flags: the staged Q matters more.
#define FW_DP_STAGES 2
#define FW_DP_QF32_BYTES (FW_QBLOCK * FW_HD * 4)

#if FW_ENABLED
// A bulk copy of `bytes` (a multiple of 16) from global `src` into shared `dst`, completing
// `bar`'s transactions by its bytes.
__device__ __forceinline__ void fw_bulk_load(u32 dst, const void* src, u32 bytes, u32 bar) {
    asm volatile(
        "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::
            "r"(dst),
        "l"(src), "r"(bytes), "r"(bar)
        : "memory");
}
#endif

#if FW_ENABLED
// fw_store_output's values (the same products, the same rounding to bf16) stored 16 bytes (f32)
// and 8 bytes (bf16) at a time: the threads of a row's lane pair (t4, t4 ^ 1) trade halves so
// that, per pair of n-tiles (j, j + 1), the even one holds 4 consecutive columns of tile j and
// the odd one 4 of tile j + 1. Half fw_store_output's store instructions. Needs dim a multiple
// of 4 and 16-byte aligned o (8-byte aligned o_bf16).
__device__ __forceinline__ void fw_store_output_v4(const float (&acc)[16][4], const float (&l)[2],
                                                   float* __restrict__ o,
                                                   u16* __restrict__ o_bf16, int lq, int dim,
                                                   int r0, u64 hoff, int t4) {
    float inv[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        float x = l[r];
        x += __shfl_xor_sync(FULL_MASK, x, 1);
        x += __shfl_xor_sync(FULL_MASK, x, 2);
        inv[r] = x > 0.0f ? 1.0f / x : 0.0f;
    }
    const bool odd = t4 & 1;
    // Column of this thread's 4 values in tile j (even) or j + 1 (odd) of each pair.
    const int col = 2 * (t4 & ~1) + (odd ? 8 : 0);
    const bool ok0 = r0 < lq, ok1 = r0 + 8 < lq;
    float* o0 = o + (u64)r0 * dim + hoff + col;
    float* o1 = o0 + 8 * (u64)dim;
#pragma unroll
    for (int jp = 0; jp < 8; ++jp) {
        const float* a = acc[2 * jp];
        const float* b = acc[2 * jp + 1];
        float x[4], y[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            x[e] = a[e] * inv[e >> 1];
            y[e] = b[e] * inv[e >> 1];
        }
        float send[4], recv[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            send[e] = odd ? x[e] : y[e];
            recv[e] = __shfl_xor_sync(FULL_MASK, send[e], 1);
        }
        // Row r0: even (x0, x1, recv0, recv1), odd (recv0, recv1, y0, y1); row r0 + 8 likewise.
        const float4 v0 = odd ? make_float4(recv[0], recv[1], y[0], y[1])
                              : make_float4(x[0], x[1], recv[0], recv[1]);
        const float4 v1 = odd ? make_float4(recv[2], recv[3], y[2], y[3])
                              : make_float4(x[2], x[3], recv[2], recv[3]);
        if (ok0) *(float4*)(o0 + 16 * jp) = v0;
        if (ok1) *(float4*)(o1 + 16 * jp) = v1;
        if (o_bf16) {
            u16* b0 = o_bf16 + (o0 - o) + 16 * jp;
            u16* b1 = o_bf16 + (o1 - o) + 16 * jp;
            if (ok0) *(uint2*)b0 = make_uint2(fa_bf16_pair(v0.x, v0.y), fa_bf16_pair(v0.z, v0.w));
            if (ok1) *(uint2*)b1 = make_uint2(fa_bf16_pair(v1.x, v1.y), fa_bf16_pair(v1.z, v1.w));
        }
    }
}
#endif

__device__ __forceinline__ void flash_dense_persistent_body(
    const float* __restrict__ q, float* __restrict__ o, u16* __restrict__ o_bf16, int lq, int lk,
    int dim, float scale_log2, int query_blocks, int items, int flags, const FwTensorMaps& maps) {
#if FW_ENABLED
    constexpr int STAGES = FW_DP_STAGES;
    constexpr int CONSUMERS = 2 * 128;
    const int heads = items / query_blocks;
    const bool head_minor = flags & 1, vector_stores = flags & 2;
    // The head and first query row of item `item`.
    auto locate = [&](int item, int& head, int& row0) {
        int qb;
        if (head_minor) {
            qb = item / heads;
            head = item - qb * heads;
        } else {
            head = item / query_blocks;
            qb = item - head * query_blocks;
        }
        row0 = qb * FW_QBLOCK;
    };
    extern __shared__ __align__(1024) unsigned char fw_smem[];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t4 = lane & 3;
    const int n_units = (lk + FW_KT - 1) / FW_KT;
    const int n_tiles = (n_units + 1) / 2;
    // This CTA's items: blockIdx.x + j gridDim.x for j < my_items (grid <= items).
    const int my_items = (items - (int)blockIdx.x + (int)gridDim.x - 1) / (int)gridDim.x;

    const u32 smem_base = ((u32)__cvta_generic_to_shared(fw_smem) + 1023u) & ~1023u;
    const u32 sq = smem_base;
    const u32 stages_base = smem_base + FW_Q_BYTES;
    const u32 sqf = stages_base + STAGES * (2 * FW_K128_TILE_BYTES);

    // K's full/empty, V's full/empty (as the k128 TMA kernel), the staged Q's full/empty.
    __shared__ __align__(8) u64 full_bar[STAGES], empty_bar[STAGES];
    __shared__ __align__(8) u64 fullv_bar[STAGES], emptyv_bar[STAGES];
    __shared__ __align__(8) u64 qf_full_bar, qf_empty_bar;
    const u32 full0 = (u32)__cvta_generic_to_shared(full_bar);
    const u32 empty0 = (u32)__cvta_generic_to_shared(empty_bar);
    const u32 fullv0 = (u32)__cvta_generic_to_shared(fullv_bar);
    const u32 emptyv0 = (u32)__cvta_generic_to_shared(emptyv_bar);
    const u32 qf_full = (u32)__cvta_generic_to_shared(&qf_full_bar);
    const u32 qf_empty = (u32)__cvta_generic_to_shared(&qf_empty_bar);
    if (tid == 0) {
#pragma unroll
        for (int st = 0; st < STAGES; ++st) {
            fw_mbar_init(full0 + 8 * st, 1);
            fw_mbar_init(empty0 + 8 * st, CONSUMERS / 32);
            fw_mbar_init(fullv0 + 8 * st, 1);
            fw_mbar_init(emptyv0 + 8 * st, CONSUMERS);
        }
        // Full: the producer's arrival with the bytes; empty: one arrival per consumer warp.
        fw_mbar_init(qf_full, 1);
        fw_mbar_init(qf_empty, CONSUMERS / 32);
        fw_fence_barrier_init();
    }
    __syncthreads();

    if (warp >= 8) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
        if (warp != 8) return;
        // Warp 8: lane 0 issues the K/V copies; all its lanes copy Q's rows.
        if (lane == 0) {
            fw_prefetch_tensormap(&maps.k[0]);
            fw_prefetch_tensormap(&maps.v[0]);
        }
        // Q of the CTA's j-th item: its rows below lq, raw, 512 bytes each (rows at or past lq
        // are not copied: the consumers write zeros for them).
        auto issue_q = [&](int j) {
            int head, row0;
            locate((int)blockIdx.x + j * (int)gridDim.x, head, row0);
            const int rows = min(FW_QBLOCK, lq - row0);
            if (lane == 0) fw_mbar_expect_tx(qf_full, (u32)rows * (FW_HD * 4));
            __syncwarp();
            for (int r = lane; r < rows; r += 32) {
                fw_bulk_load(sqf + r * (FW_HD * 4), q + (u64)(row0 + r) * dim + (u64)head * FW_HD,
                             FW_HD * 4, qf_full);
            }
        };
        // K (v false) or V of the CTA's global tile g, after its stage is free: 4 TMA boxes, as
        // the k128 TMA kernel (an absent unit copies the tile's first unit again).
        auto issue = [&](int gt, bool v) {
            const int j = gt / n_tiles;
            const int tile = gt - j * n_tiles;
            int head, row0;
            locate((int)blockIdx.x + j * (int)gridDim.x, head, row0);
            const int stage = gt % STAGES;
            const u32 full = (v ? fullv0 : full0) + 8 * stage;
            if (gt >= STAGES) {
                fw_mbar_wait((v ? emptyv0 : empty0) + 8 * stage, ((gt / STAGES) - 1) & 1);
            }
            fw_mbar_expect_tx(full, FW_K128_TILE_BYTES);
            const u32 dst =
                stages_base + stage * (2 * FW_K128_TILE_BYTES) + (v ? FW_K128_TILE_BYTES : 0);
            const FwTensorMap* map = v ? &maps.v[0] : &maps.k[0];
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int u = 2 * tile + h;
                const int row = (u < n_units ? u : 2 * tile) * FW_KT;
#pragma unroll
                for (int half = 0; half < 2; ++half) {
                    fw_tma_load_3d(dst + half * FW_K128_HALF_BYTES + h * (FW_KT * 128), map, full,
                                   0, 2 * head + half, row);
                }
            }
        };
        const int total = my_items * n_tiles;
        issue_q(0);
        if (lane == 0) issue(0, false);
        for (int gt = 0; gt < total; ++gt) {
            if (lane == 0) {
                if (gt + 1 < total) issue(gt + 1, false);
                issue(gt, true);
            }
            // Once the consumers have taken item j's Q (they do so first), item j + 1's.
            const int j = gt / n_tiles;
            if (gt == j * n_tiles && j + 1 < my_items) {
                fw_mbar_wait(qf_empty, j & 1);
                issue_q(j + 1);
            }
        }
        return;
    }
    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");

    const int wg = warp >> 2;
    auto turn_wait = [&]() { asm volatile("bar.sync %0, 256;" ::"r"(2 + wg) : "memory"); };
    auto turn_pass = [&]() { asm volatile("bar.arrive %0, 256;" ::"r"(3 - wg) : "memory"); };
    const bool tails = lk % FW_KT != 0;
    u64 dq[8];
#pragma unroll
    for (int ks = 0; ks < 8; ++ks) {
        dq[ks] = fw_desc(sq + wg * (64 * 128) + (ks >> 2) * FW_Q_HALF_BYTES + (ks & 3) * 32, 16,
                         1024);
    }
    auto k_descs = [&](int stage, u64 (&dk)[8]) {
        const u32 base = stages_base + stage * (2 * FW_K128_TILE_BYTES);
#pragma unroll
        for (int ks = 0; ks < 8; ++ks) {
            dk[ks] = fw_desc(base + (ks >> 2) * FW_K128_HALF_BYTES + (ks & 3) * 32, 16, 1024);
            fw_opaque(dk[ks]);
        }
    };
    auto v_descs = [&](int stage, u64 (&dv)[8]) {
        const u32 base = stages_base + stage * (2 * FW_K128_TILE_BYTES) + FW_K128_TILE_BYTES;
#pragma unroll
        for (int kk = 0; kk < 8; ++kk) {
            dv[kk] = fw_desc(base + kk * 16 * 128, FW_K128_HALF_BYTES, 1024);
            fw_opaque(dv[kk]);
        }
    };
    auto issue_s = [&](float (&s)[16][4], const u64 (&dk)[8]) {
        fw_mma_ss_n128<0>(s, dq[0], dk[0]);
#pragma unroll
        for (int ks = 1; ks < 8; ++ks) fw_mma_ss_n128<1>(s, dq[ks], dk[ks]);
        fw_wgmma_commit();
    };
    // Keys at or past lk (dense: unit u's first key is 64 u; the absent unit of an odd count
    // starts at lk).
    auto mask_tail = [&](float (&s)[16][4], int tile) {
        const int u = 2 * tile;
        const int key0a = tails ? u * FW_KT : 0;
        const int key0b = u + 1 >= n_units ? lk : (tails ? (u + 1) * FW_KT : 0);
        if (key0a + FW_KT > lk || key0b + FW_KT > lk) {
#pragma unroll
            for (int j = 0; j < 16; ++j) {
                const int key = (j < 8 ? key0a : key0b) + 8 * (j & 7) + 2 * t4;
                if (key >= lk) s[j][0] = s[j][2] = NEG_INF;
                if (key + 1 >= lk) s[j][1] = s[j][3] = NEG_INF;
            }
        }
    };
    auto wait_k = [&](int gt) { fw_mbar_wait(full0 + 8 * (gt % STAGES), (gt / STAGES) & 1); };
    auto wait_v = [&](int gt) { fw_mbar_wait(fullv0 + 8 * (gt % STAGES), (gt / STAGES) & 1); };
    auto release_k = [&](int gt) { fw_mbar_arrive_lane0(empty0 + 8 * (gt % STAGES), lane); };
    auto release_v = [&](int gt) { fw_mbar_arrive(emptyv0 + 8 * (gt % STAGES)); };

    for (int j = 0; j < my_items; ++j) {
        int head, cta_row0;
        locate((int)blockIdx.x + j * (int)gridDim.x, head, cta_row0);
        const int r0 = cta_row0 + warp * 16 + g;
        const u64 hoff = (u64)head * FW_HD;
        const int g0 = j * n_tiles;

        // This warpgroup's 64 rows of Q from the staging buffer to bf16 (fw_stage_q's layout and
        // rounding; zeros at or past lq). Its last item's S wgmmas, the only readers of these
        // rows, have completed.
        fw_mbar_wait(qf_full, j & 1);
#pragma unroll 4
        for (int i = 0; i < 8; ++i) {
            const int c = (tid & 127) + i * 128;
            const int row = 64 * wg + (c >> 4), chunk = c & 15;
            u32 packed[4] = {0u, 0u, 0u, 0u};
            if (cta_row0 + row < lq) {
                float4 a, b;
                asm volatile("ld.shared.v4.f32 {%0, %1, %2, %3}, [%4];"
                             : "=f"(a.x), "=f"(a.y), "=f"(a.z), "=f"(a.w)
                             : "r"(sqf + row * (FW_HD * 4) + chunk * 32));
                asm volatile("ld.shared.v4.f32 {%0, %1, %2, %3}, [%4];"
                             : "=f"(b.x), "=f"(b.y), "=f"(b.z), "=f"(b.w)
                             : "r"(sqf + row * (FW_HD * 4) + chunk * 32 + 16));
                packed[0] = fa_pack_bf16(a.x, a.y);
                packed[1] = fa_pack_bf16(a.z, a.w);
                packed[2] = fa_pack_bf16(b.x, b.y);
                packed[3] = fa_pack_bf16(b.z, b.w);
            }
            asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};" ::"r"(
                             sq + fw_swz(row, chunk, FW_Q_HALF_BYTES)),
                         "r"(packed[0]), "r"(packed[1]), "r"(packed[2]), "r"(packed[3])
                         : "memory");
        }
        fw_fence_proxy();
        __syncwarp();
        fw_mbar_arrive_lane0(qf_empty, lane);
        // The warpgroup's rows are all written before its wgmmas read them.
        asm volatile("bar.sync %0, 128;" ::"r"(4 + wg) : "memory");

        float acc[16][4];
#pragma unroll
        for (int jj = 0; jj < 16; ++jj) acc[jj][0] = acc[jj][1] = acc[jj][2] = acc[jj][3] = 0.0f;
        float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.0f, 0.0f};
        u32 pa[8][4];
        // The k128 TMA kernel's pingpong, item by item: each warpgroup issues n_tiles + 1 times
        // and passes the turn after each but warpgroup 1's last; warpgroup 1 passes first.
        if (wg == 1) turn_pass();
        {
            wait_k(g0);
            float s[16][4];
            u64 dk[8];
            k_descs(g0 % STAGES, dk);
            turn_wait();
            fw_wgmma_fence();
            issue_s(s, dk);
            turn_pass();
            fw_wgmma_wait<0>();
            fw_fence_regs(s);
            release_k(g0);
            mask_tail(s, 0);
            float alpha[2], rs[2];
            fw_softmax(s, m, scale_log2, pa, alpha, rs);
            l[0] = rs[0];
            l[1] = rs[1];
        }
        auto issue_pv = [&](const u64 (&dv)[8]) {
#pragma unroll
            for (int kk = 0; kk < 8; ++kk) fw_mma_rs_n128(acc, pa[kk], dv[kk]);
            fw_wgmma_commit();
        };
        for (int tile = 0; tile + 1 < n_tiles; ++tile) {
            const int gt = g0 + tile;
            wait_k(gt + 1);
            wait_v(gt);
            float s[16][4];
            u64 dk[8], dv[8];
            k_descs((gt + 1) % STAGES, dk);
            v_descs(gt % STAGES, dv);
            fw_fence_regs(acc);
            turn_wait();
            fw_wgmma_fence();
            issue_s(s, dk);
            issue_pv(dv);
            turn_pass();
            fw_wgmma_wait<1>();
            fw_fence_regs(s);
            release_k(gt + 1);
            mask_tail(s, tile + 1);
            float alpha[2], rs[2];
            u32 pn[8][4];
            fw_softmax(s, m, scale_log2, pn, alpha, rs);
            fw_wgmma_wait<0>();
            fw_fence_regs(acc);
            fw_fence_regs(pa);
            release_v(gt);
            fw_rescale_take_p(acc, l, alpha, rs, pa, pn);
        }
        {
            const int gt = g0 + n_tiles - 1;
            wait_v(gt);
            u64 dv[8];
            v_descs(gt % STAGES, dv);
            fw_fence_regs(acc);
            turn_wait();
            fw_wgmma_fence();
            issue_pv(dv);
            if (wg == 0) turn_pass();
            fw_wgmma_wait<0>();
            fw_fence_regs(acc);
            release_v(gt);
        }
        if (vector_stores) {
            fw_store_output_v4(acc, l, o, o_bf16, lq, dim, r0, hoff, t4);
        } else {
            fw_store_output(acc, l, o, o_bf16, lq, dim, r0, hoff, t4);
        }
    }
#endif
}

// attention_flash_dense_bf16_hd128_wgmma_persistent: flash_dense_persistent_body, 384 threads,
// one CTA per SM (the host launches min(items, SMs)); dynamic shared memory 1 KB + 32 KB of Q +
// 2 x 64 KB of K/V + 64 KB of staged Q.
extern "C" __global__ void __launch_bounds__(FW_THREADS, 1)
    attention_flash_dense_bf16_hd128_wgmma_persistent(
        const float* __restrict__ q, float* __restrict__ o, u16* __restrict__ o_bf16, int lq,
        int lk, int dim, float scale_log2, int query_blocks, int items, int flags,
        const __grid_constant__ FwTensorMaps maps) {
    flash_dense_persistent_body(q, o, o_bf16, lq, lk, dim, scale_log2, query_blocks, items, flags,
                                maps);
}

// ---- SageAttention's int8 Q·Kᵀ (`FLASHVSR_CUDA_SAGE_INT8`, sage masks: 128 x 64 blocks) ----
//
// The semantics of the references' sparse sage kernel (spec §5.6.3), per head:
// - K smoothed: k - mean over every key of the call (softmax-invariant: the same vector is
//   subtracted from every key a query row sees, so each row's logits shift by one constant);
// - Q per 128-row block: q' = q · log2(e) / sqrt(128), scale_q = max|q'| / 127,
//   q8 = round-half-away-from-zero(q' / scale_q); K per 64-key block likewise (scale_k = max|k| /
//   127); a block of zeros has scale 0 and q8 / k8 = 0 (logits 0, no 0 / 0);
// - logits in base 2 = (q8 · k8, exact in i32) · scale_q · scale_k, the fp32 online softmax on
//   exp2.
// The pre-pass (sage_k_partial_sums, sage_k_mean, sage_quantize_k) writes K as int8 with its
// scales into scratch; the attention kernel (flash_sage8_body) quantises its Q block itself while
// staging it (the bf16 kernel reads the same f32 Q there: no pass over Q) and is the k128 TMA
// pingpong kernel with an int8 K tile (64 keys x 128 bytes per unit: one 128-byte swizzle row per
// key, half the bytes of a bf16 K tile) and S by `wgmma.m64n128k32.s32.s8.s8` (4 k-steps of 32
// over the 128 dims, twice the bf16 rate).
// P·V departs from the references on purpose: they cast V and P to fp16 and add each block's
// fp16 P·V product to an fp32 accumulator; here V stays the bf16 of the KV cache (read in place
// by TMA, as the exact kernel reads it: no conversion pass over V) and P is rounded to bf16, with
// the products accumulated in fp32 by the wgmma (no fp16 partial products). The row sums use
// the fp32 P, as in the exact kernel.

// (Like the attention kernels, the pre-pass compiles to nothing off sm_90a, where the host never
// launches it.)

// Keys per block of the key mean's partial sums.
#define SAGE_SUM_ROWS 256

#if FW_ENABLED
// The row of key `key` (< kv.count's keys) of head `head`: its segment's data, read as bf16.
__device__ __forceinline__ const u16* sage_key_row(const FaSegments& kv, const u64* base, int key,
                                                   u64 row_stride, u64 head_off) {
    int seg = 0;
    while (seg + 1 < kv.count && key >= kv.first_key[seg + 1]) ++seg;
    return (const u16*)base[seg] + (u64)(key - kv.first_key[seg]) * row_stride + head_off;
}
#endif

// partial[(chunk * heads + head) * 128 + d] = the sum over keys c · SAGE_SUM_ROWS .. + 255, c =
// chunk · chunk_stride (below lk), of K[key, head, d], in fp32: the mean only smooths K (any
// vector keeps the softmax exact), so a regular sample of the keys serves, at a fraction of the
// reads. Grid (sampled chunks, heads), 256 threads: 16 rows at a time,
// 16 threads per row with 8 dims (16 bytes) each; a group of 16 rows lies in one segment (every
// segment but the last holds a multiple of 64 keys). Unrolled so that each thread has several
// loads in flight: the pass is bound by reading K once.
extern "C" __global__ void __launch_bounds__(256) sage_k_partial_sums(
    const FaSegments kv, int lk, int chunk_stride, u64 row_stride, u64 head_stride,
    float* __restrict__ partial) {
#if FW_ENABLED
    const int chunk = blockIdx.x, head = blockIdx.y, heads = gridDim.y;
    const int tid = threadIdx.x, lane_row = tid >> 4, part = tid & 15;
    const u64 head_off = (u64)head * head_stride + 8 * part;
    float s[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) s[i] = 0.0f;
    const int key0 = chunk * chunk_stride * SAGE_SUM_ROWS;
#pragma unroll 4
    for (int step = 0; step < SAGE_SUM_ROWS / 16; ++step) {
        const int key = key0 + 16 * step + lane_row;
        if (key < lk) {
            const uint4 w = *(const uint4*)sage_key_row(kv, kv.k, key, row_stride, head_off);
            const u32 ws[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                s[2 * i] += bf16_value((u16)(ws[i] & 0xffffu));
                s[2 * i + 1] += bf16_value((u16)(ws[i] >> 16));
            }
        }
    }
    __shared__ float sums[16][128 + 1];
#pragma unroll
    for (int i = 0; i < 8; ++i) sums[lane_row][8 * part + i] = s[i];
    __syncthreads();
    if (tid < 128) {
        float t = sums[0][tid];
#pragma unroll
        for (int r = 1; r < 16; ++r) t += sums[r][tid];
        partial[((u64)chunk * heads + head) * 128 + tid] = t;
    }
#endif
}

// mean[head * 128 + d] = the sum of the chunks' partial sums / summed (the keys they cover), in
// a fixed order (the same bits every run): 4 groups of 128 threads sum every 4th chunk, then the
// 4 sums in order. Grid heads, 512 threads.
extern "C" __global__ void __launch_bounds__(512) sage_k_mean(const float* __restrict__ partial,
                                                              int chunks, int summed,
                                                              float* __restrict__ mean) {
#if FW_ENABLED
    const int head = blockIdx.x, heads = gridDim.x, d = threadIdx.x & 127, group = threadIdx.x >> 7;
    float s = 0.0f;
#pragma unroll 8
    for (int c = group; c < chunks; c += 4) s += partial[((u64)c * heads + head) * 128 + d];
    __shared__ float sums[4][128];
    sums[group][d] = s;
    __syncthreads();
    if (group == 0) {
        mean[head * 128 + d] = (sums[0][d] + sums[1][d] + sums[2][d] + sums[3][d]) / (float)summed;
    }
#endif
}

#if FW_ENABLED
// The largest of the 256 threads' `x` (every thread gets it).
__device__ __forceinline__ float sage_block_max(float x, float* scratch /* [8] */) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(FULL_MASK, x, o));
    if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = x;
    __syncthreads();
    float m = scratch[0];
#pragma unroll
    for (int w = 1; w < 8; ++w) m = fmaxf(m, scratch[w]);
    return m;
}

// x / scale rounded half away from zero (roundf), as int8; 0 where the block's scale is 0.
__device__ __forceinline__ u32 sage_q8(float x, float scale) {
    const float r = scale > 0.0f ? fminf(fmaxf(roundf(x / scale), -127.0f), 127.0f) : 0.0f;
    return (u32)(int)r & 0xffu;
}
#endif

// K of one (64-key block, head) smoothed and quantised: k8[key * (heads · 128) + head · 128 + d]
// for keys kb · 64 .. + 63 (rows at or past lk: zeros, not counted in the scale), and
// k_scale[head * key_blocks + kb]. Grid (key_blocks, heads), 256 threads: row tid / 4, dims
// 32 (tid % 4) .. + 31.
extern "C" __global__ void __launch_bounds__(256) sage_quantize_k(
    const FaSegments kv, int lk, u64 row_stride, u64 head_stride, const float* __restrict__ mean,
    signed char* __restrict__ k8, float* __restrict__ k_scale) {
#if FW_ENABLED
    const int kb = blockIdx.x, key_blocks = gridDim.x, head = blockIdx.y, heads = gridDim.y;
    const int tid = threadIdx.x, row = tid >> 2, d0 = (tid & 3) * 32;
    const int key = kb * 64 + row;
    float x[32];
    float amax = 0.0f;
    if (key < lk) {
        const uint4* src =
            (const uint4*)sage_key_row(kv, kv.k, key, row_stride, (u64)head * head_stride + d0);
#pragma unroll
        for (int c = 0; c < 4; ++c) {
            const uint4 w = src[c];
            const u32 ws[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int d = 8 * c + 2 * i;
                x[d] = bf16_value((u16)(ws[i] & 0xffffu)) - mean[head * 128 + d0 + d];
                x[d + 1] = bf16_value((u16)(ws[i] >> 16)) - mean[head * 128 + d0 + d + 1];
            }
        }
#pragma unroll
        for (int d = 0; d < 32; ++d) amax = fmaxf(amax, fabsf(x[d]));
    } else {
#pragma unroll
        for (int d = 0; d < 32; ++d) x[d] = 0.0f;
    }
    __shared__ float scratch[8];
    const float scale = sage_block_max(amax, scratch) / 127.0f;
    u32 packed[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        packed[i] = sage_q8(x[4 * i], scale) | sage_q8(x[4 * i + 1], scale) << 8 |
                    sage_q8(x[4 * i + 2], scale) << 16 | sage_q8(x[4 * i + 3], scale) << 24;
    }
    uint4* dst = (uint4*)(k8 + (u64)key * heads * 128 + head * 128 + d0);
    dst[0] = make_uint4(packed[0], packed[1], packed[2], packed[3]);
    dst[1] = make_uint4(packed[4], packed[5], packed[6], packed[7]);
    if (tid == 0) k_scale[head * key_blocks + kb] = scale;
#endif
}

// One int8 K unit: 64 keys x 128 dims of int8, one 128-byte swizzle row per key (8 KB); a tile of
// two units 16 KB. A stage: the K tile, then the bf16 V tile of the k128 kernel (32 KB).
#define FW_S8_UNIT_BYTES (FW_KT * 128)
#define FW_S8_K_TILE_BYTES (2 * FW_S8_UNIT_BYTES)
#define FW_S8_STAGE_BYTES (FW_S8_K_TILE_BYTES + FW_K128_TILE_BYTES)
// Q: 128 rows of 128 bytes.
#define FW_S8_Q_BYTES (FW_QBLOCK * 128)

#if FW_ENABLED
// d (64 x 128, s32) = (accumulate ? d : 0) + A·Bᵀ over 32 k: A 64 x 32 and B 128 x 32 int8, both
// K-major in shared memory.
template <int ACCUMULATE>
__device__ __forceinline__ void fw_mma_s8_n128(u32 (&d)[16][4], u64 desc_a, u64 desc_b) {
#define FW_IACC4(a, j) "+r"(a[j][0]), "+r"(a[j][1]), "+r"(a[j][2]), "+r"(a[j][3])
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, "
        "%19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, "
        "%36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, "
        "%53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
        "%64, %65, p;\n}\n"
        : FW_IACC4(d, 0), FW_IACC4(d, 1), FW_IACC4(d, 2), FW_IACC4(d, 3), FW_IACC4(d, 4),
          FW_IACC4(d, 5), FW_IACC4(d, 6), FW_IACC4(d, 7), FW_IACC4(d, 8), FW_IACC4(d, 9),
          FW_IACC4(d, 10), FW_IACC4(d, 11), FW_IACC4(d, 12), FW_IACC4(d, 13), FW_IACC4(d, 14),
          FW_IACC4(d, 15)
        : "l"(desc_a), "l"(desc_b), "n"(ACCUMULATE)
        : "memory");
#undef FW_IACC4
}

// TMA: the box at (c0, c1) of the 2-D tensor map at `map` into shared memory at `dst`.
__device__ __forceinline__ void fw_tma_load_2d(u32 dst, const void* map, u32 bar, int c0,
                                               int c1) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, "
        "{%3, %4}], [%2];" ::"r"(dst),
        "l"(map), "r"(bar), "r"(c0), "r"(c1)
        : "memory");
}
#endif

#if FW_ENABLED
// The int8 kernel's softmax with the logit scale folded in (flash_sage8_body's FOLD, the
// default): the logits stay the exact biased fp32 y = 1.5·2²³ + x (x the i32 q8·k8 sum; no FADD,
// no FMUL by the unit's scale c); the row max is taken on y per 64-key unit and scaled once,
// m = max(c_a·(max_a y − 1.5·2²³), c_b·(...)) — exactly the unfolded max of the fp32 products,
// since c ≥ 0 and rounding is monotone — and p = 2^fma(y, c, −(1.5·2²³·c + m)). The one rounding
// of 1.5·2²³·c + m shifts all of a unit's exponents in a row by the same ≤ 0.5 ulp of
// 1.5·2²³·c + m (~0.75·c, ~1e-4 at the tests' logit scales): P moves by up to ~1e-4 relative,
// which flips some of P's bf16 roundings (PERF_NOTES, helper h28).

// 1.5 · 2²³: its fp32 bits are 0x4b400000, and 0x4b400000 + x is exactly 1.5 · 2²³ + x for
// |x| < 2²² (the i32 logits: |q8 · k8| <= 127² · 128 < 2²²).
#define FW_S8_BIAS 12582912.0f

// fw_softmax's step on one 128-key tile of the int8 kernel with the logit scale folded in (see
// above), without the bf16 pack: s holds the biased logits y (masked keys -inf), c the units'
// scales, all > 0 (unit_scales replaces a zero scale); P (fp32) comes out in s. MX3 (the
// default): the row maxima by 3-input integer max on the bits (the same maxima: helper h29).
template <bool MX3>
__device__ __forceinline__ void fw_sage_exp(float (&s)[16][4], const float (&c)[2], float (&m)[2],
                                            float (&alpha)[2], float (&rs)[2]) {
    // The row maxima per row (index r) and unit (j < 8: the first 64 keys).
    float my[2][2] = {{NEG_INF, NEG_INF}, {NEG_INF, NEG_INF}};
    if (MX3) {
        // On the bits, as integers, 3 at a time (Hopper's VIMNMX3: half the instructions of
        // FMNMX): a logit y = 1.5·2²³ + x has the bits 0x4b400000 + x (positive, in the order of
        // x), a masked key's -inf the bits 0xff800000 (negative as an integer): the largest is
        // the largest y, or -inf when all are masked.
#pragma unroll
        for (int r = 0; r < 2; ++r) {
#pragma unroll
            for (int u = 0; u < 2; ++u) {
                const int j0 = 8 * u, e = 2 * r;
                auto y = [&](int j, int h) { return __float_as_int(s[j0 + j][e + h]); };
                int b = __vimax3_s32(y(0, 0), y(0, 1), y(1, 0));
#pragma unroll
                for (int j = 1; j < 7; ++j) b = __vimax3_s32(b, y(j, 1), y(j + 1, 0));
                my[r][u] = __int_as_float(max(b, y(7, 1)));
            }
        }
    } else {
#pragma unroll
        for (int j = 0; j < 16; ++j) {
            my[0][j >> 3] = fmaxf(my[0][j >> 3], fmaxf(s[j][0], s[j][1]));
            my[1][j >> 3] = fmaxf(my[1][j >> 3], fmaxf(s[j][2], s[j][3]));
        }
    }
    float k[2][2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        // (max y − 1.5·2²³) is the unit's largest i32 logit, exactly; -inf stays -inf (c > 0).
        float mx = fmaxf(m[r], fmaxf((my[r][0] - FW_S8_BIAS) * c[0],
                                     (my[r][1] - FW_S8_BIAS) * c[1]));
        mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 2));
        // All keys so far masked: keep the exponent finite (every p is 0 then).
        const float ms = mx == NEG_INF ? 0.0f : mx;
        alpha[r] = fa_ex2(m[r] - ms);
        m[r] = mx;
        k[r][0] = fmaf(FW_S8_BIAS, c[0], ms);
        k[r][1] = fmaf(FW_S8_BIAS, c[1], ms);
    }
    rs[0] = rs[1] = 0.0f;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
        const float cu = c[j >> 3];
        s[j][0] = fa_ex2(fmaf(s[j][0], cu, -k[0][j >> 3]));
        s[j][1] = fa_ex2(fmaf(s[j][1], cu, -k[0][j >> 3]));
        s[j][2] = fa_ex2(fmaf(s[j][2], cu, -k[1][j >> 3]));
        s[j][3] = fa_ex2(fmaf(s[j][3], cu, -k[1][j >> 3]));
        rs[0] += s[j][0] + s[j][1];
        rs[1] += s[j][2] + s[j][3];
    }
}

// P (fp32, fw_sage_exp's layout) as the bf16 A fragments of P·V's 8 k-steps (fw_softmax's
// packing).
__device__ __forceinline__ void fw_sage_pack(const float (&p)[16][4], u32 (&pa)[8][4]) {
#pragma unroll
    for (int j = 0; j < 16; ++j) {
        pa[j >> 1][(j & 1) * 2 + 0] = fa_pack_bf16(p[j][0], p[j][1]);
        pa[j >> 1][(j & 1) * 2 + 1] = fa_pack_bf16(p[j][2], p[j][3]);
    }
}
#endif

// The k128 TMA pingpong kernel (flash_wgmma_k128_body<S, true, true>) with S = Q·Kᵀ in int8: the
// same work items, masks, barriers, pingpong and P·V. q: f32 [lq, heads · 128], scaled by q_mul
// (log2(e) / sqrt(128)) and quantised per block here; K int8 as the pre-pass leaves it, through
// maps->k[0] (2-D: heads · 128 bytes x key_blocks · 64 rows, box 128 x 64, 128-byte swizzle:
// unit u of a tile lands at u x 8 KB, one key per 128-byte row) and k_scale [heads, key_blocks]
// (key_blocks = k_blocks, blocks of 64 keys); V bf16 in place through maps->v[segment], as the
// k128 kernel reads it. key_block must be 64 (one unit per mask block). The logits leave the
// wgmma as exact i32 sums and become exact biased fp32 values; FOLD (the default) applies
// scale_q · scale_k of their unit inside the exponent's FMA (fw_sage_exp), else (session 11's
// form) they are scaled to fp32 logits in base 2 first and the rest is the k128 kernel's
// arithmetic (fw_softmax with scale 1).
template <int STAGES, bool FOLD, bool MX3>
__device__ __forceinline__ void flash_sage8_body(
    const float* __restrict__ q, float q_mul, const float* __restrict__ k_scale, int k_blocks,
    const FaSegments& kv, float* __restrict__ o,
    u16* __restrict__ o_bf16, int lq, int lk, int dim, const int* __restrict__ seg_off,
    const int* __restrict__ seg_blocks, const int* __restrict__ order, int query_blocks,
    const FwTensorMaps* maps) {
#if FW_ENABLED
    static_assert(STAGES >= 3, "a stage for the tile in flight besides the two being read");
    static_assert(FOLD || !MX3, "MX3 is of the folded softmax");
    constexpr int CONSUMERS = 2 * 128;
    extern __shared__ __align__(1024) unsigned char fw_smem[];
    const int item = order ? order[blockIdx.x] : (int)blockIdx.x;
    const int head = item / query_blocks;
    const int qb = item - head * query_blocks;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t4 = lane & 3;

    // Units of 64 keys = the mask's key blocks; iterations (tiles) of two units.
    const int start = seg_off[item];
    const int* blocks = seg_blocks + start;
    const int n_units = seg_off[item + 1] - start;
    const int n_tiles = (n_units + 1) / 2;

    const u32 smem_base = ((u32)__cvta_generic_to_shared(fw_smem) + 1023u) & ~1023u;
    const u32 sq = smem_base;
    const u32 stages_base = smem_base + FW_S8_Q_BYTES;
    const u64 hoff = (u64)head * FW_HD;

    __shared__ int seg_first[FA_MAX_SEGMENTS + 1];
    __shared__ __align__(8) u64 full_bar[STAGES], empty_bar[STAGES];
    __shared__ __align__(8) u64 fullv_bar[STAGES], emptyv_bar[STAGES];
    const u32 full0 = (u32)__cvta_generic_to_shared(full_bar);
    const u32 empty0 = (u32)__cvta_generic_to_shared(empty_bar);
    const u32 fullv0 = (u32)__cvta_generic_to_shared(fullv_bar);
    const u32 emptyv0 = (u32)__cvta_generic_to_shared(emptyv_bar);
    if (tid == 0) {
#pragma unroll
        for (int s = 0; s < FA_MAX_SEGMENTS; ++s) {
            seg_first[s] = s < kv.count ? kv.first_key[s] : 0x7fffffff;
        }
        seg_first[FA_MAX_SEGMENTS] = 0x7fffffff;
        // Full: the producer's one arrival (with the transaction bytes); empty: one arrival per
        // consumer warp (K), per consumer thread (V).
#pragma unroll
        for (int st = 0; st < STAGES; ++st) {
            fw_mbar_init(full0 + 8 * st, 1);
            fw_mbar_init(empty0 + 8 * st, CONSUMERS / 32);
            fw_mbar_init(fullv0 + 8 * st, 1);
            fw_mbar_init(emptyv0 + 8 * st, CONSUMERS);
        }
        fw_fence_barrier_init();
    }
    __syncthreads();

    auto unit_key0 = [&](int u) { return blocks[u] * FW_KT; };

    if (warp >= 8) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
        if (warp == 8 && lane == 0) {
            fw_prefetch_tensormap(&maps->k[0]);
            for (int s = 0; s < kv.count && s < FW_TMA_MAX_SEGMENTS; ++s) {
                fw_prefetch_tensormap(&maps->v[s]);
            }
            // Tile t's K (v = false: 2 boxes of 64 keys x 128 bytes) or V (4 boxes of 64 keys
            // x 64 dims), after its stage is free; K of tile t + 1 before V of tile t.
            auto issue = [&](int tile, bool v) {
                const int stage = tile % STAGES;
                const u32 full = (v ? fullv0 : full0) + 8 * stage;
                if (tile >= STAGES) {
                    fw_mbar_wait((v ? emptyv0 : empty0) + 8 * stage, ((tile / STAGES) - 1) & 1);
                }
                fw_mbar_expect_tx(full, v ? FW_K128_TILE_BYTES : FW_S8_K_TILE_BYTES);
                const u32 dst =
                    stages_base + stage * FW_S8_STAGE_BYTES + (v ? FW_S8_K_TILE_BYTES : 0);
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const int u = 2 * tile + h;
                    // An absent unit (past n_units) copies the first unit's rows again: finite
                    // values (P is 0 on them), and every copy delivers its bytes.
                    const int key0 = unit_key0(u < n_units ? u : 2 * tile);
                    if (!v) {
                        fw_tma_load_2d(dst + h * FW_S8_UNIT_BYTES, &maps->k[0], full,
                                       head * FW_HD, key0);
                        continue;
                    }
                    int seg = 0;
                    while (key0 >= seg_first[seg + 1]) ++seg;
                    const int row = key0 - seg_first[seg];
#pragma unroll
                    for (int half = 0; half < 2; ++half) {
                        fw_tma_load_3d(dst + half * FW_K128_HALF_BYTES + h * (FW_KT * 128),
                                       &maps->v[seg], full, 0, 2 * head + half, row);
                    }
                }
            };
            if (n_tiles > 0) issue(0, false);
            for (int tile = 0; tile < n_tiles; ++tile) {
                if (tile + 1 < n_tiles) issue(tile + 1, false);
                issue(tile, true);
            }
        }
        return;
    }
    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");

    const int wg = warp >> 2;
    auto turn_wait = [&]() { asm volatile("bar.sync %0, 256;" ::"r"(2 + wg) : "memory"); };
    auto turn_pass = [&]() { asm volatile("bar.arrive %0, 256;" ::"r"(3 - wg) : "memory"); };
    const int cta_row0 = qb * FW_QBLOCK;
    const int r0 = cta_row0 + warp * 16 + g;
    float acc[16][4];
#pragma unroll
    for (int j = 0; j < 16; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
    float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.0f, 0.0f};
    const bool tails = lk % FW_KT != 0;

    if (n_tiles > 0) {
        // Q' = q · q_mul quantised over the block (scale_q = max|q'| / 127 over its 128 rows x
        // 128 dims, rows at or past lq zeros; sage_quantize_k's rounding) into shared memory:
        // thread tid takes row tid / 2, dims 64 (tid % 2) .. + 63, i.e. 16-byte chunks 4 (tid %
        // 2) .. + 3 of the row's 8, swizzled.
        __shared__ float q_amax[CONSUMERS / 32];
        float sq_scale;
        {
            const int row = tid >> 1, half = tid & 1;
            float x[64];
            float amax = 0.0f;
            if (cta_row0 + row < lq) {
                const float4* src =
                    (const float4*)(q + (u64)(cta_row0 + row) * dim + hoff + half * 64);
#pragma unroll
                for (int c = 0; c < 16; ++c) {
                    const float4 v = src[c];
                    x[4 * c] = v.x * q_mul;
                    x[4 * c + 1] = v.y * q_mul;
                    x[4 * c + 2] = v.z * q_mul;
                    x[4 * c + 3] = v.w * q_mul;
                }
#pragma unroll
                for (int d = 0; d < 64; ++d) amax = fmaxf(amax, fabsf(x[d]));
            } else {
#pragma unroll
                for (int d = 0; d < 64; ++d) x[d] = 0.0f;
            }
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(FULL_MASK, amax, o));
            if (lane == 0) q_amax[warp] = amax;
            fw_consumer_sync();
            amax = q_amax[0];
#pragma unroll
            for (int w = 1; w < CONSUMERS / 32; ++w) amax = fmaxf(amax, q_amax[w]);
            sq_scale = amax / 127.0f;
#pragma unroll
            for (int c = 0; c < 4; ++c) {
                u32 packed[4];
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    const int d = 16 * c + 4 * i;
                    packed[i] = sage_q8(x[d], sq_scale) | sage_q8(x[d + 1], sq_scale) << 8 |
                                sage_q8(x[d + 2], sq_scale) << 16 | sage_q8(x[d + 3], sq_scale) << 24;
                }
                const int chunk = 4 * half + c;
                asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};" ::"r"(
                                 sq + row * 128 + ((chunk ^ (row & 7)) << 4)),
                             "r"(packed[0]), "r"(packed[1]), "r"(packed[2]), "r"(packed[3])
                             : "memory");
            }
        }
        fw_fence_proxy();
        fw_consumer_sync();
        const float* ks_head = k_scale + (u64)head * k_blocks;

        u64 dq[4];
#pragma unroll
        for (int ks = 0; ks < 4; ++ks) dq[ks] = fw_desc(sq + wg * (64 * 128) + ks * 32, 16, 1024);
        auto k_descs = [&](int stage, u64 (&dk)[4]) {
            const u32 base = stages_base + stage * FW_S8_STAGE_BYTES;
#pragma unroll
            for (int ks = 0; ks < 4; ++ks) {
                dk[ks] = fw_desc(base + ks * 32, 16, 1024);
                fw_opaque(dk[ks]);
            }
        };
        auto v_descs = [&](int stage, u64 (&dv)[8]) {
            const u32 base = stages_base + stage * FW_S8_STAGE_BYTES + FW_S8_K_TILE_BYTES;
#pragma unroll
            for (int kk = 0; kk < 8; ++kk) {
                dv[kk] = fw_desc(base + kk * 16 * 128, FW_K128_HALF_BYTES, 1024);
                fw_opaque(dv[kk]);
            }
        };
        auto issue_s = [&](u32 (&si)[16][4], const u64 (&dk)[4]) {
            fw_mma_s8_n128<0>(si, dq[0], dk[0]);
#pragma unroll
            for (int ks = 1; ks < 4; ++ks) fw_mma_s8_n128<1>(si, dq[ks], dk[ks]);
            fw_wgmma_commit();
        };
        // The logit scales of tile t's two units (scale_q · scale_k; an absent unit's keys are
        // masked, its scale unused). FOLD: a zero scale becomes 2⁻¹⁰⁰, so that a masked key's
        // fma(-inf, c, ·) stays -inf; such a unit's y are all exactly 1.5·2²³ (its q8 or k8 are
        // 0), and fma(1.5·2²³, 2⁻¹⁰⁰, −(1.5·2²³·2⁻¹⁰⁰ + m)) is −m but for ~1e-23.
        auto unit_scales = [&](int tile, float (&c)[2]) {
            const int u = 2 * tile;
            c[0] = sq_scale * ks_head[blocks[u]];
            c[1] = u + 1 < n_units ? sq_scale * ks_head[blocks[u + 1]] : 0.0f;
            if (FOLD) {
                // (== 0, not <= 0: a NaN scale stays NaN, as the logits it makes.)
                c[0] = c[0] == 0.0f ? 0x1p-100f : c[0];
                c[1] = c[1] == 0.0f ? 0x1p-100f : c[1];
            }
        };
        // The i32 logits as fp32 in base 2 (FOLD: the biased y = 1.5·2²³ + x, unscaled), masked
        // where keys are at or past lk (as in flash_wgmma_k128_body's mask_tail).
        auto to_logits = [&](const u32 (&si)[16][4], const float (&c)[2], float (&s)[16][4],
                             int tile) {
            // i32 -> fp32 without I2F (a conversion-pipe op at the rate of ex2, which the softmax
            // needs): |q8 · k8| <= 127² · 128 < 2²², so 1.5 · 2²³ + x is exact in fp32's 23-bit
            // mantissa: its bits are 0x4b400000 + x, and subtracting 1.5 · 2²³ leaves x exactly.
#pragma unroll
            for (int j = 0; j < 16; ++j) {
#pragma unroll
                for (int r = 0; r < 4; ++r) {
                    const float y = __int_as_float(0x4b400000 + (int)si[j][r]);
                    s[j][r] = FOLD ? y : (y - FW_S8_BIAS) * c[j >> 3];
                }
            }
            const int u = 2 * tile;
            const int key0a = tails ? unit_key0(u) : 0;
            const int key0b = u + 1 >= n_units ? lk : (tails ? unit_key0(u + 1) : 0);
            if (key0a + FW_KT > lk || key0b + FW_KT > lk) {
#pragma unroll
                for (int j = 0; j < 16; ++j) {
                    const int key = (j < 8 ? key0a : key0b) + 8 * (j & 7) + 2 * t4;
                    if (key >= lk) s[j][0] = s[j][2] = NEG_INF;
                    if (key + 1 >= lk) s[j][1] = s[j][3] = NEG_INF;
                }
            }
        };
        auto wait_full = [&](int tile) {
            fw_mbar_wait(full0 + 8 * (tile % STAGES), (tile / STAGES) & 1);
        };
        auto wait_v = [&](int tile) {
            fw_mbar_wait(fullv0 + 8 * (tile % STAGES), (tile / STAGES) & 1);
        };
        auto release_k = [&](int tile) { fw_mbar_arrive_lane0(empty0 + 8 * (tile % STAGES), lane); };
        auto release_v = [&](int tile) { fw_mbar_arrive(emptyv0 + 8 * (tile % STAGES)); };

        u32 pa[8][4];
        if (wg == 1) turn_pass();
        {
            float c[2];
            unit_scales(0, c);
            wait_full(0);
            u32 si[16][4];
            u64 dk[4];
            k_descs(0, dk);
            turn_wait();
            fw_wgmma_fence();
            issue_s(si, dk);
            turn_pass();
            fw_wgmma_wait<0>();
            fw_fence_regs(si);
            release_k(0);
            float s[16][4];
            to_logits(si, c, s, 0);
            float alpha[2], rs[2];
            if (FOLD) {
                fw_sage_exp<MX3>(s, c, m, alpha, rs);
                fw_sage_pack(s, pa);
            } else {
                fw_softmax(s, m, 1.0f, pa, alpha, rs);
            }
            l[0] = rs[0];
            l[1] = rs[1];
        }
        auto issue_pv = [&](const u64 (&dv)[8]) {
#pragma unroll
            for (int kk = 0; kk < 8; ++kk) fw_mma_rs_n128(acc, pa[kk], dv[kk]);
            fw_wgmma_commit();
        };

        for (int tile = 0; tile + 1 < n_tiles; ++tile) {
            float c[2];
            unit_scales(tile + 1, c);
            wait_full(tile + 1);
            wait_v(tile);
            u32 si[16][4];
            u64 dk[4], dv[8];
            k_descs((tile + 1) % STAGES, dk);
            v_descs(tile % STAGES, dv);
            fw_fence_regs(acc);
            turn_wait();
            fw_wgmma_fence();
            issue_s(si, dk);
            issue_pv(dv);
            turn_pass();
            fw_wgmma_wait<1>();
            fw_fence_regs(si);
            release_k(tile + 1);
            float s[16][4];
            to_logits(si, c, s, tile + 1);
            float alpha[2], rs[2];
            u32 pn[8][4];
            if (FOLD) {
                fw_sage_exp<MX3>(s, c, m, alpha, rs);
                fw_sage_pack(s, pn);
            } else {
                fw_softmax(s, m, 1.0f, pn, alpha, rs);
            }
            // (ptxas moves this wait above the exponentials: it packs P into the registers that
            // P·V(tile) reads. Forcing the softmax above it measured no faster: PERF_NOTES,
            // helper h28.)
            fw_wgmma_wait<0>();
            fw_fence_regs(acc);
            fw_fence_regs(pa);
            release_v(tile);
            fw_rescale_take_p(acc, l, alpha, rs, pa, pn);
        }
        {
            wait_v(n_tiles - 1);
            u64 dv[8];
            v_descs((n_tiles - 1) % STAGES, dv);
            fw_fence_regs(acc);
            turn_wait();
            fw_wgmma_fence();
            issue_pv(dv);
            if (wg == 0) turn_pass();
        }
        fw_wgmma_wait<0>();
        fw_fence_regs(acc);
    }
    fw_store_output(acc, l, o, o_bf16, lq, dim, r0, hoff, t4);
#endif
}

// attention_sage8_hd128_wgmma_s<STAGES>: flash_sage8_body, 384 threads, dynamic shared memory
// 1 KB + 16 KB of Q8 + STAGES x 48 KB. On an H100 (`flash bench`, sage) 3 stages measured faster
// than 4 (kernel alone 0.59 vs 0.66 ms per call).
#define FLASH_SAGE8_KERNEL(NAME, S, FOLD, MX3)                                                  \
    extern "C" __global__ void __launch_bounds__(FW_THREADS, 1) NAME(                           \
        const float* __restrict__ q, float q_mul, const float* __restrict__ k_scale,            \
        int k_blocks, const FaSegments kv,                                                      \
        float* __restrict__ o, u16* __restrict__ o_bf16, int lq, int lk, int dim,               \
        const int* __restrict__ seg_off, const int* __restrict__ seg_blocks,                    \
        const int* __restrict__ order, int query_blocks,                                        \
        const __grid_constant__ FwTensorMaps maps) {                                            \
        flash_sage8_body<S, FOLD, MX3>(q, q_mul, k_scale, k_blocks, kv, o, o_bf16, lq, lk, dim, \
                                       seg_off, seg_blocks, order, query_blocks, &maps);        \
    }
// The default (the logit scale folded into the softmax's FMA, the row max by 3-input integer max)
// and, for 3 stages, session 11's unfolded softmax (`..._s3_unfolded`: FLASHVSR_CUDA_SAGE8_FOLD=0)
// and helper h28's (`..._s3_mufu`, the row max by FMNMX: FLASHVSR_CUDA_SAGE8_EXP=mufu), for
// measurements.
#define FLASH_SAGE8_INSTANCE(S) FLASH_SAGE8_KERNEL(attention_sage8_hd128_wgmma_s##S, S, true, true)
#define FLASH_SAGE8_UNFOLDED(S) \
    FLASH_SAGE8_KERNEL(attention_sage8_hd128_wgmma_s##S##_unfolded, S, false, false)
#define FLASH_SAGE8_FORM(S, FORM, MX3) \
    FLASH_SAGE8_KERNEL(attention_sage8_hd128_wgmma_s##S##_##FORM, S, true, MX3)

// 3 stages: 161 KB; 4: 209 KB.
FLASH_SAGE8_INSTANCE(3)
FLASH_SAGE8_INSTANCE(4)
FLASH_SAGE8_UNFOLDED(3)
FLASH_SAGE8_FORM(3, mufu, false)
