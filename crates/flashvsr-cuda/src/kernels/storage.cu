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
