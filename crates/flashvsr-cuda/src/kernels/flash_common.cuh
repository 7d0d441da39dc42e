// What both flash-attention kernels share (flash.cu: mma.sync; flash_wgmma.cu: Hopper's wgmma):
// the tile geometry, the KV segments the host fills, and the sm_80+ helpers. Prepended to both
// sources after common.cuh.

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
#endif
