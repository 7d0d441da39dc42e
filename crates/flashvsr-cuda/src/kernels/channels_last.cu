// Channels-last bf16 activations of the fast mode (ops/channels_last.rs): the convolution epilogue,
// the elementwise ops and the layout moves that keep decoder activations in cuDNN's layout from one
// convolution to the next. Every tensor here has a multiple of 8 channels, so a thread moves 8
// channels (16 bytes, one uint4) at once. Rounding is done on the bits (as in conv_bf16.cu), so the
// module also compiles for pre-sm_80 targets.

typedef unsigned int u32;

// Round to nearest even; NaN stays a (quiet) NaN.
__device__ __forceinline__ u32 cl_bf16_bits(float f) {
    const u32 b = __float_as_uint(f);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (b >> 16) | 0x40u;
    return (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
}

__device__ __forceinline__ float cl_lo(u32 v) { return __uint_as_float(v << 16); }
__device__ __forceinline__ float cl_hi(u32 v) { return __uint_as_float(v & 0xffff0000u); }
__device__ __forceinline__ u32 cl_pack(float lo, float hi) {
    return cl_bf16_bits(lo) | (cl_bf16_bits(hi) << 16);
}

// y = act(y + bias[channel] + residual) in place, after cuDNN wrote y: n8 groups of 8 channels, c8
// groups per position; residual (may be null) in y's layout. The same arithmetic as
// conv_unstage_output_f32 followed by channels_last_binary's add, rounded to bf16 once, at the end.
extern "C" __global__ void channels_last_bias_act(uint4* __restrict__ y,
                                                  const float* __restrict__ bias,
                                                  const uint4* __restrict__ residual, u64 n8,
                                                  u64 c8, u64 has_bias, u64 relu) {
    GRID_LOOP(i, n8) {
        const uint4 v = y[i];
        u32 w[4] = {v.x, v.y, v.z, v.w};
        u32 r[4] = {0u, 0u, 0u, 0u};
        if (residual != 0) {
            const uint4 rv = residual[i];
            r[0] = rv.x;
            r[1] = rv.y;
            r[2] = rv.z;
            r[3] = rv.w;
        }
        const u64 c0 = (i % c8) * 8;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            float lo = cl_lo(w[k]), hi = cl_hi(w[k]);
            if (has_bias) {
                lo += bias[c0 + 2 * k];
                hi += bias[c0 + 2 * k + 1];
            }
            if (residual != 0) {
                lo += cl_lo(r[k]);
                hi += cl_hi(r[k]);
            }
            if (relu) {
                lo = fmaxf(lo, 0.0f);
                hi = fmaxf(hi, 0.0f);
            }
            w[k] = cl_pack(lo, hi);
        }
        y[i] = make_uint4(w[0], w[1], w[2], w[3]);
    }
}

// y = a op b elementwise (op as binary_f32: 0 add, 1 sub, 2 mul), in f32, rounded to bf16.
extern "C" __global__ void channels_last_binary(const uint4* __restrict__ a,
                                                const uint4* __restrict__ b,
                                                uint4* __restrict__ y, u64 n8, int op) {
    GRID_LOOP(i, n8) {
        const uint4 va = a[i], vb = b[i];
        const u32 wa[4] = {va.x, va.y, va.z, va.w}, wb[4] = {vb.x, vb.y, vb.z, vb.w};
        u32 w[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const float al = cl_lo(wa[k]), ah = cl_hi(wa[k]);
            const float bl = cl_lo(wb[k]), bh = cl_hi(wb[k]);
            const float lo = op == 0 ? al + bl : (op == 1 ? al - bl : al * bl);
            const float hi = op == 0 ? ah + bh : (op == 1 ? ah - bh : ah * bh);
            w[k] = cl_pack(lo, hi);
        }
        y[i] = make_uint4(w[0], w[1], w[2], w[3]);
    }
}

// y = max(x, 0) (NaN -> 0, like relu in unary_f32); exact in bf16.
extern "C" __global__ void channels_last_relu(const uint4* __restrict__ x, uint4* __restrict__ y,
                                              u64 n8) {
    GRID_LOOP(i, n8) {
        const uint4 v = x[i];
        u32 w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int k = 0; k < 4; ++k) w[k] = cl_pack(fmaxf(cl_lo(w[k]), 0.0f), fmaxf(cl_hi(w[k]), 0.0f));
        y[i] = make_uint4(w[0], w[1], w[2], w[3]);
    }
}

// Nearest 2x upsampling of x [t][h][w][c8 groups] into y [t][2h][2w][c8 groups].
extern "C" __global__ void channels_last_upsample2x(const uint4* __restrict__ x,
                                                   uint4* __restrict__ y, u64 t, u64 h, u64 w,
                                                   u64 c8) {
    const u64 ow = 2 * w, oh = 2 * h;
    GRID_LOOP(i, t * oh * ow * c8) {
        const u64 k = i % c8, pos = i / c8;
        const u64 xx = pos % ow, rest = pos / ow;
        const u64 yy = rest % oh, f = rest / oh;
        y[i] = x[((f * h + yy / 2) * w + xx / 2) * c8 + k];
    }
}

// dst[o * dst_stride + dst_off + r] = src[o * src_stride + src_off + r] for r < block, in units of
// 16 bytes (8 bf16 channels): channel slices and frame ranges of channels-last tensors.
extern "C" __global__ void copy_blocks_u128(const uint4* __restrict__ src, uint4* __restrict__ dst,
                                            u64 outer, u64 block, u64 src_stride, u64 src_off,
                                            u64 dst_stride, u64 dst_off) {
    GRID_LOOP(i, outer * block) {
        const u64 o = i / block, r = i % block;
        dst[o * dst_stride + dst_off + r] = src[o * src_stride + src_off + r];
    }
}

// copy_blocks_u128 for copies whose every index (elements, source and destination offsets) is
// below 2^31: 32-bit index arithmetic, fewer instructions per 16 bytes moved than the 64-bit
// division and remainder (a library routine). On an H100 the MemBlock's channel cats took the
// same time either way: they are bound elsewhere (PERF_NOTES.md, h23).
extern "C" __global__ void copy_blocks_u128_i32(const uint4* __restrict__ src,
                                                uint4* __restrict__ dst, unsigned outer,
                                                unsigned block, unsigned src_stride,
                                                unsigned src_off, unsigned dst_stride,
                                                unsigned dst_off) {
    const unsigned n = outer * block;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const unsigned o = i / block, r = i - o * block;
        dst[o * dst_stride + dst_off + r] = src[o * src_stride + src_off + r];
    }
}
