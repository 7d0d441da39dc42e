// bf16 storage of f32-valued tensors (fast mode): conversions and copies of 16-bit elements.
// The rounding is done on the bits so that it is the same on every architecture.

// bf16_bits and bf16_value are in common.cuh.

extern "C" __global__ void f32_to_bf16(const float* __restrict__ x, u16* __restrict__ y, u64 n) {
    GRID_LOOP(i, n) { y[i] = bf16_bits(x[i]); }
}

extern "C" __global__ void bf16_to_f32(const u16* __restrict__ x, float* __restrict__ y, u64 n) {
    GRID_LOOP(i, n) { y[i] = bf16_value(x[i]); }
}

// dst[o * dst_stride + dst_off + r] = src[o * src_stride + src_off + r] for r < block (16-bit).
extern "C" __global__ void copy_blocks_u16(const u16* __restrict__ src, u16* __restrict__ dst,
                                           u64 outer, u64 block, u64 src_stride, u64 src_off,
                                           u64 dst_stride, u64 dst_off) {
    GRID_LOOP(i, outer * block) {
        const u64 o = i / block, r = i % block;
        dst[o * dst_stride + dst_off + r] = src[o * src_stride + src_off + r];
    }
}

// A 64-bit digest of n 32-bit words: the wrapping sum of a bijective mix of (index, word) per
// word, so the same bits in the same places give the same digest whatever order the threads add
// in. The GEMM tuning compares candidate algorithms' outputs with it (gemm.rs); *out starts at 0.
extern "C" __global__ void digest_u32(const unsigned int* __restrict__ x, u64 n,
                                      u64* __restrict__ out) {
    u64 acc = 0;
    GRID_LOOP(i, n) {
        u64 h = ((u64)x[i] << 32) ^ (i * 0x9E3779B97F4A7C15ull);
        // splitmix64's finaliser, a bijection of the 64-bit value.
        h ^= h >> 30;
        h *= 0xBF58476D1CE4E5B9ull;
        h ^= h >> 27;
        h *= 0x94D049BB133111EBull;
        h ^= h >> 31;
        acc += h;
    }
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(FULL_MASK, acc, o);
    if ((threadIdx.x & 31) == 0) atomicAdd(out, acc);
}
