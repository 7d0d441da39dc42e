// Data movement: permute, block copies (narrow and cat), nearest upsampling.

struct PermuteParams {
    u64 rank;
    u64 out_shape[8];
    u64 src_stride[8];  // input stride of the axis that lands at each output position
};

extern "C" __global__ void permute_f32(const float* __restrict__ x, float* __restrict__ y, u64 n,
                                       PermuteParams p) {
    GRID_LOOP(i, n) {
        u64 rem = i, src = 0;
        for (int ax = (int)p.rank - 1; ax >= 0; --ax) {
            const u64 s = p.out_shape[ax];
            src += (rem % s) * p.src_stride[ax];
            rem /= s;
        }
        y[i] = x[src];
    }
}

// permute_f32 for tensors below 2^31 elements, by output rows: a warp takes one row of the
// innermost output axis (`inner` values, `inner_stride` apart in x), computes the row's source
// offset once with 32-bit division (all lanes alike), then copies the row. The per-element form
// above runs 64-bit divisions and remainders (a library routine each) over every axis for every
// value: the LQ projector's patch permutes moved ~0.6 TB/s. Outer axes: `rank` of them, in
// `out_shape`/`src_stride`, the last varying fastest (the inner axis excluded).
struct PermuteRowsParams {
    unsigned rank;
    unsigned inner;
    unsigned inner_stride;
    unsigned rows;
    unsigned out_shape[8];
    unsigned src_stride[8];
};

extern "C" __global__ void permute_rows_f32(const float* __restrict__ x, float* __restrict__ y,
                                            PermuteRowsParams p) {
    const unsigned lane = threadIdx.x & 31;
    const unsigned warps = (gridDim.x * blockDim.x) >> 5;
    for (unsigned row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5; row < p.rows; row += warps) {
        unsigned rem = row, src = 0;
        for (int ax = (int)p.rank - 1; ax >= 0; --ax) {
            const unsigned s = p.out_shape[ax];
            const unsigned q = rem / s;
            src += (rem - q * s) * p.src_stride[ax];
            rem = q;
        }
        float* dst = y + (u64)row * p.inner;
        for (unsigned k = lane; k < p.inner; k += 32) dst[k] = x[src + k * p.inner_stride];
    }
}

// dst[o * dst_stride + dst_off + r] = src[o * src_stride + src_off + r] for r < block.
extern "C" __global__ void copy_blocks_f32(const float* __restrict__ src, float* __restrict__ dst,
                                           u64 outer, u64 block, u64 src_stride, u64 src_off,
                                           u64 dst_stride, u64 dst_off) {
    GRID_LOOP(i, outer * block) {
        const u64 o = i / block, r = i % block;
        dst[o * dst_stride + dst_off + r] = src[o * src_stride + src_off + r];
    }
}

extern "C" __global__ void upsample2x_f32(const float* __restrict__ x, float* __restrict__ y,
                                          u64 planes, u64 h, u64 w) {
    const u64 ow = 2 * w, oplane = 4 * h * w;
    GRID_LOOP(i, planes * oplane) {
        const u64 p = i / oplane, rem = i % oplane;
        const u64 yy = rem / ow, xx = rem % ow;
        y[i] = x[p * h * w + (yy / 2) * w + xx / 2];
    }
}
