// A 3×3 frame convolution (zero pad 1) with 3 output channels from a channels-last bf16 input to
// f32 row-major (ops/conv_direct.rs): the TCDecoder's last conv, 128 → 3 channels at full
// resolution. It is bound by reading its input (2 bytes a channel and position); cuDNN pads the
// 3 outputs to 8 and runs a tensor-core kernel at a fraction of that bandwidth, then a second
// pass unstages the padded output.
//
// A block computes D3_ROWS rows of D3_RUNS · D3_RUN consecutive output positions of one frame.
// A run of D3_RUN positions is a half-warp: its 16 lanes split the input channels in groups of 8
// (16 bytes, one load; the half-warp reads 256 contiguous bytes of a position's channels). The
// block walks its input rows once, top to bottom: each input row feeds the output rows below, at
// and above it (three rolling sets of 3 × D3_RUN sums), so that every input load serves the 3
// vertical taps and up to 3 positions of the run. Once an output row has had its three input
// rows, the half-warp adds its lanes' sums (fixed order: the result does not depend on the
// launch) and writes the row. Weights stay f32 (cuDNN's are bf16): [tap][channel group][8 channels][output]
// in shared memory, the 24 floats of a lane's 8 channels of one tap at a stride of D3_GROUP_STRIDE
// floats: with 24, lanes 0 and 4 of a quarter-warp's 16-byte loads hit the same banks (two
// wavefronts a phase, and the shared-memory pipe, not the FMAs, bounded the kernel at 0.37 ms a
// 1408×768 frame); 28 puts the 8 lanes of a phase on distinct banks. Staged once per block of
// D3_ROWS rows with 32-bit indices (staged per row with 64-bit divisions, they cost more
// instructions than the convolution).

typedef unsigned int u32;

#define D3_RUN 4
#define D3_LANES 16
#define D3_THREADS 256
#define D3_RUNS (D3_THREADS / D3_LANES)
#define D3_ROWS 16
#define D3_GROUP_STRIDE 28

// acc[r][o] += Σ over kx and the lane's 8 channels of in[r + kx][ch] · w(dy, kx, ch, o), with
// `taps` at (dy, kx = 0) for the lane's channels; the taps of one row are c8 · D3_GROUP_STRIDE
// floats apart.
__device__ __forceinline__ void d3_accumulate_row(float (&acc)[D3_RUN][3],
                                                  const float (&in)[D3_RUN + 2][8],
                                                  const float* taps, u32 c8) {
#pragma unroll
    for (int kx = 0; kx < 3; ++kx) {
        const float4* wp = reinterpret_cast<const float4*>(taps + kx * c8 * D3_GROUP_STRIDE);
        float wv[24];
#pragma unroll
        for (int q = 0; q < 6; ++q) {
            const float4 v = wp[q];
            wv[4 * q] = v.x;
            wv[4 * q + 1] = v.y;
            wv[4 * q + 2] = v.z;
            wv[4 * q + 3] = v.w;
        }
#pragma unroll
        for (int r = 0; r < D3_RUN; ++r) {
#pragma unroll
            for (int ch = 0; ch < 8; ++ch) {
                const float v = in[r + kx][ch];
                acc[r][0] = fmaf(v, wv[3 * ch], acc[r][0]);
                acc[r][1] = fmaf(v, wv[3 * ch + 1], acc[r][1]);
                acc[r][2] = fmaf(v, wv[3 * ch + 2], acc[r][2]);
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(D3_THREADS)
    conv3x3_cl_to_three_f32(const uint4* __restrict__ x, const float* __restrict__ w,
                            const float* __restrict__ bias, float* __restrict__ y, u32 frames,
                            u32 h, u32 wd, u32 c8, int relu) {
    extern __shared__ float4 d3_weights[];
    float* ws = reinterpret_cast<float*>(d3_weights);
    const u32 c = c8 * 8;
    // w (3, C, 1, 3, 3): element (o, ch, tap) at (o · C + ch) · 9 + tap, staged at
    // (tap · c8 + ch / 8) · D3_GROUP_STRIDE + (ch % 8) · 3 + o (the last 4 floats of a group are
    // padding, never read). Consecutive threads read consecutive source elements.
    for (u32 i = threadIdx.x; i < 27 * c; i += D3_THREADS) {
        const u32 tap = i % 9, och = i / 9;
        const u32 ch = och % c, o = och / c;
        ws[(tap * c8 + ch / 8) * D3_GROUP_STRIDE + (ch % 8) * 3 + o] = w[i];
    }
    __syncthreads();
    const u32 lane = threadIdx.x % D3_LANES, run = threadIdx.x / D3_LANES;
    const u32 f = blockIdx.z, row0 = blockIdx.y * D3_ROWS;
    const int x0 = (int)(blockIdx.x * (D3_RUNS * D3_RUN) + run * D3_RUN);
    const u32 rows = min((u32)D3_ROWS, h - row0);
    // Sums of the output rows s − 1 (above), s (at) and s + 1 (below) of input row s.
    float above[D3_RUN][3], at[D3_RUN][3], below[D3_RUN][3];
#pragma unroll
    for (int r = 0; r < D3_RUN; ++r)
#pragma unroll
        for (int o = 0; o < 3; ++o) above[r][o] = at[r][o] = below[r][o] = 0.0f;
    // Input rows row0 − 1 .. row0 + rows: after input row s, output row s − 1 is complete.
    for (int s = (int)row0 - 1; s <= (int)(row0 + rows); ++s) {
        if (s >= 0 && s < (int)h) {
            const uint4* src = x + ((u64)f * h + (u64)s) * wd * c8;
            for (u32 g = lane; g < c8; g += D3_LANES) {
                float in[D3_RUN + 2][8];
#pragma unroll
                for (int j = 0; j < D3_RUN + 2; ++j) {
                    const int sx = x0 + j - 1;
                    uint4 v = make_uint4(0u, 0u, 0u, 0u);
                    if (sx >= 0 && sx < (int)wd) v = src[(u64)sx * c8 + g];
                    const u32 words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
                    for (int k = 0; k < 4; ++k) {
                        in[j][2 * k] = __uint_as_float(words[k] << 16);
                        in[j][2 * k + 1] = __uint_as_float(words[k] & 0xffff0000u);
                    }
                }
                // Output row s − 1 sees this row through its bottom taps (dy = 2), row s
                // through its middle ones, row s + 1 through its top ones.
                const float* taps = ws + g * D3_GROUP_STRIDE;
                const u32 row_taps = 3 * c8 * D3_GROUP_STRIDE;
                d3_accumulate_row(above, in, taps + 2 * row_taps, c8);
                d3_accumulate_row(at, in, taps + row_taps, c8);
                d3_accumulate_row(below, in, taps, c8);
            }
        }
        const int out_row = s - 1;
        if (out_row >= (int)row0) {
            // The half-warp's sums: xor offsets below 16 stay within it.
#pragma unroll
            for (int r = 0; r < D3_RUN; ++r) {
#pragma unroll
                for (int o = 0; o < 3; ++o) {
                    float v = above[r][o];
#pragma unroll
                    for (int sh = D3_LANES / 2; sh > 0; sh >>= 1)
                        v += __shfl_xor_sync(FULL_MASK, v, sh);
                    above[r][o] = v;
                }
            }
            // Lane o · D3_RUN + r writes output o of position r (12 lanes).
            if (lane < 3 * D3_RUN) {
                const int o = (int)(lane / D3_RUN), r = (int)(lane % D3_RUN);
                const int xo = x0 + r;
                if (xo < (int)wd) {
                    float v = above[0][0];
#pragma unroll
                    for (int rr = 0; rr < D3_RUN; ++rr)
#pragma unroll
                        for (int oo = 0; oo < 3; ++oo)
                            if (rr == r && oo == o) v = above[rr][oo];
                    if (bias != 0) v += bias[o];
                    if (relu) v = fmaxf(v, 0.0f);
                    y[(((u64)o * frames + f) * h + (u64)out_row) * wd + (u64)xo] = v;
                }
            }
        }
#pragma unroll
        for (int r = 0; r < D3_RUN; ++r)
#pragma unroll
            for (int o = 0; o < 3; ++o) {
                above[r][o] = at[r][o];
                at[r][o] = below[r][o];
                below[r][o] = 0.0f;
            }
    }
}
