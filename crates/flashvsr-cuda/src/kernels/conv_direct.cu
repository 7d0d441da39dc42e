// A 3×3 frame convolution (zero pad 1) with 3 output channels from a channels-last bf16 input to
// f32 row-major (ops/conv_direct.rs): the TCDecoder's last conv, 128 → 3 channels at full
// resolution. cuDNN pads the 3 outputs to 8 and runs a tensor-core kernel at a fraction of the
// input's bandwidth, then a second pass unstages the padded output. Two kernels: f32 FMAs
// (`FLASHVSR_CUDA_DIRECT_CONV3=fma`) and, below it, tensor cores (the default).
//
// FMA kernel: a block computes D3_ROWS rows of D3_RUNS · D3_RUN consecutive output positions of
// one frame. A run of D3_RUN positions is a half-warp: its 16 lanes split the input channels in
// groups of 8 (16 bytes, one load; the half-warp reads 256 contiguous bytes of a position's
// channels). The block walks its input rows once, top to bottom: each input row feeds the output
// rows below, at and above it (three rolling sets of 3 × D3_RUN sums), so that every input load
// serves the 3 vertical taps and up to 3 positions of the run. Once an output row has had its
// three input rows, the half-warp adds its lanes' sums (fixed order: the result does not depend
// on the launch) and writes the row. Weights stay f32 (cuDNN's are bf16): [tap][channel group]
// [8 channels][output] in shared memory, the 24 floats of a lane's 8 channels of one tap at a
// stride of D3_GROUP_STRIDE floats: with 24, lanes 0 and 4 of a quarter-warp's 16-byte loads hit
// the same banks (two wavefronts a phase; the shared-memory pipe, not the FMAs, then bounded the
// kernel at 0.37 ms a 1408×768 frame on an H100, 0.31 with 28, which puts the 8 lanes of a phase
// on distinct banks). Staged once per block of D3_ROWS rows with 32-bit indices (staged per row
// with 64-bit divisions, they cost more instructions than the convolution).

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

// The same convolution on tensor cores (the default; ops/conv_direct.rs): mma.m16n8k16 with bf16
// operands (the weights rounded to bf16, as cuDNN's are) and fp32 accumulation, the 3 outputs
// padded to the MMA's 8 columns. A warp computes 16 consecutive positions (the MMA's rows) of
// D3M_ROWS output rows, walking its input rows once as the FMA kernel does (three rolling sets of
// accumulators). The K order within a 32-channel chunk is permuted so that a lane's A registers
// come from one 16-byte load of a position's channels: lane (g, t) loads channels 8t .. 8t + 7
// of the chunk, the first k-step takes channels 8t .. 8t + 3 of every t, the second 8t + 4 ..
// 8t + 7 (the B fragments staged in the same order). Per input row and chunk a lane loads the
// 6 positions its 3 horizontal taps need (g − 1 .. g + 1 and g + 7 .. g + 9 of the tile).
// Needs sm_80+; never launched elsewhere (channels-last tensors come from cuDNN in fast mode).

#define D3M_WARPS 8
#define D3M_ROWS 16

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
__device__ __forceinline__ void d3m_mma(float (&c)[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0,
                                        u32 b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// acc += the row's 3 horizontal taps of one 32-channel chunk: `in` holds the lane's positions
// g − 1, g, g + 1, g + 7, g + 8, g + 9; `b` the lane's B fragment of the chunk for tap (dy, 0),
// the next taps `tap_stride` apart.
__device__ __forceinline__ void d3m_row(float (&acc)[4], const uint4 (&in)[6], const uint4* b,
                                        u32 tap_stride) {
#pragma unroll
    for (int dx = 0; dx < 3; ++dx) {
        const uint4 w = b[dx * tap_stride];
        const uint4 lo = in[dx], hi = in[3 + dx];
        d3m_mma(acc, lo.x, hi.x, lo.y, hi.y, w.x, w.y);
        d3m_mma(acc, lo.z, hi.z, lo.w, hi.w, w.z, w.w);
    }
}

// The weights as B fragments in shared memory: [tap][chunk][lane] × 8 bf16 (16 bytes): lane (n, t)
// = (lane / 4, lane % 4) holds output n's channels 32·chunk + 8t .. + 7 (zeros for n ≥ 3).
__device__ __forceinline__ void d3m_stage_weights(uint4* d3m_b, const float* __restrict__ w,
                                                  u32 c8) {
    const u32 c = c8 * 8, chunks = c8 / 4;
    u16* bs = reinterpret_cast<u16*>(d3m_b);
    for (u32 i = threadIdx.x; i < 9 * chunks * 256; i += D3M_WARPS * 32) {
        const u32 e = i % 8, lane = (i / 8) % 32, rest = i / 256;
        const u32 chunk = rest % chunks, tap = rest / chunks;
        const u32 n = lane / 4, ch = chunk * 32 + (lane % 4) * 8 + e;
        bs[i] = n < 3 ? bf16_bits(w[(n * c + ch) * 9 + tap]) : (u16)0;
    }
    __syncthreads();
}

// Lanes t = 0, 1 hold outputs 2t, 2t + 1 of positions g (c0, c1) and g + 8 (c2, c3).
__device__ __forceinline__ void d3m_store_row(const float (&acc)[4],
                                              const float* __restrict__ bias,
                                              float* __restrict__ y, u32 frames, u32 f, u32 h,
                                              u32 wd, int p0, u32 g, u32 t, int out_row,
                                              int relu) {
    if (t >= 2) return;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        const int xo = p0 + (int)g + 8 * half;
        if (xo >= (int)wd) continue;
#pragma unroll
        for (int k = 0; k < 2; ++k) {
            const u32 o = 2 * t + k;
            if (o >= 3) continue;
            float v = acc[2 * half + k];
            if (bias != 0) v += bias[o];
            if (relu) v = fmaxf(v, 0.0f);
            y[(((u64)o * frames + f) * h + (u64)out_row) * wd + (u64)xo] = v;
        }
    }
}
#endif

extern "C" __global__ void __launch_bounds__(D3M_WARPS * 32)
    conv3x3_cl_to_three_mma(const uint4* __restrict__ x, const float* __restrict__ w,
                            const float* __restrict__ bias, float* __restrict__ y, u32 frames,
                            u32 h, u32 wd, u32 c8, int relu) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    extern __shared__ uint4 d3m_b[];
    d3m_stage_weights(d3m_b, w, c8);
    const u32 chunks = c8 / 4;
    const u32 lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const u32 g = lane / 4, t = lane % 4;
    const u32 f = blockIdx.z, row0 = blockIdx.y * D3M_ROWS;
    const int p0 = (int)((blockIdx.x * D3M_WARPS + warp) * 16);
    const u32 rows = min((u32)D3M_ROWS, h - row0);
    float above[4] = {0.0f, 0.0f, 0.0f, 0.0f}, at[4] = {0.0f, 0.0f, 0.0f, 0.0f},
          below[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int s = (int)row0 - 1; s <= (int)(row0 + rows); ++s) {
        if (s >= 0 && s < (int)h) {
            const uint4* src = x + ((u64)f * h + (u64)s) * wd * c8;
            for (u32 chunk = 0; chunk < chunks; ++chunk) {
                uint4 in[6];
#pragma unroll
                for (int j = 0; j < 6; ++j) {
                    const int sx = p0 + (int)g + (j < 3 ? j - 1 : j + 4);
                    in[j] = make_uint4(0u, 0u, 0u, 0u);
                    if (sx >= 0 && sx < (int)wd) in[j] = src[(u64)sx * c8 + chunk * 4 + t];
                }
                // Output row s − 1 sees this row through its bottom taps (dy = 2), row s
                // through its middle ones, row s + 1 through its top ones.
                const uint4* b = d3m_b + chunk * 32 + lane;
                const u32 tap_stride = chunks * 32;
                d3m_row(above, in, b + 6 * tap_stride, tap_stride);
                d3m_row(at, in, b + 3 * tap_stride, tap_stride);
                d3m_row(below, in, b, tap_stride);
            }
        }
        const int out_row = s - 1;
        if (out_row >= (int)row0) {
            d3m_store_row(above, bias, y, frames, f, h, wd, p0, g, t, out_row, relu);
        }
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            above[k] = at[k];
            at[k] = below[k];
            below[k] = 0.0f;
        }
    }
#endif
}

// The same kernel for 128 input channels (the TCDecoder's), the same sums in the same order (the
// same bits): a row's 4 chunks are loaded before any of their MMAs (24 loads in flight a lane
// instead of 6: the generic kernel waits on each chunk's loads and reads at ~1.4 TB/s), and a
// block covers D3M_ROWS_C128 rows, so that the weights are staged and the 2 halo rows read once
// per 32 rows instead of 16.
#define D3M_ROWS_C128 32

extern "C" __global__ void __launch_bounds__(D3M_WARPS * 32)
    conv3x3_cl_to_three_mma_c128(const uint4* __restrict__ x, const float* __restrict__ w,
                                 const float* __restrict__ bias, float* __restrict__ y,
                                 u32 frames, u32 h, u32 wd, int relu) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    constexpr u32 C8 = 16, CHUNKS = 4;
    extern __shared__ uint4 d3m_b[];
    d3m_stage_weights(d3m_b, w, C8);
    const u32 lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const u32 g = lane / 4, t = lane % 4;
    const u32 f = blockIdx.z, row0 = blockIdx.y * D3M_ROWS_C128;
    const int p0 = (int)((blockIdx.x * D3M_WARPS + warp) * 16);
    const u32 rows = min((u32)D3M_ROWS_C128, h - row0);
    // The lane's 6 positions (g − 1 .. g + 1, g + 7 .. g + 9 of the tile) and whether they lie
    // inside the row.
    int sx[6];
    bool inside[6];
#pragma unroll
    for (int j = 0; j < 6; ++j) {
        sx[j] = p0 + (int)g + (j < 3 ? j - 1 : j + 4);
        inside[j] = sx[j] >= 0 && sx[j] < (int)wd;
    }
    float above[4] = {0.0f, 0.0f, 0.0f, 0.0f}, at[4] = {0.0f, 0.0f, 0.0f, 0.0f},
          below[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int s = (int)row0 - 1; s <= (int)(row0 + rows); ++s) {
        if (s >= 0 && s < (int)h) {
            const uint4* src = x + ((u64)f * h + (u64)s) * wd * C8 + t;
            uint4 in[CHUNKS][6];
#pragma unroll
            for (u32 chunk = 0; chunk < CHUNKS; ++chunk) {
#pragma unroll
                for (int j = 0; j < 6; ++j) {
                    in[chunk][j] = inside[j] ? src[(u64)sx[j] * C8 + chunk * 4]
                                             : make_uint4(0u, 0u, 0u, 0u);
                }
            }
#pragma unroll
            for (u32 chunk = 0; chunk < CHUNKS; ++chunk) {
                const uint4* b = d3m_b + chunk * 32 + lane;
                constexpr u32 tap_stride = CHUNKS * 32;
                d3m_row(above, in[chunk], b + 6 * tap_stride, tap_stride);
                d3m_row(at, in[chunk], b + 3 * tap_stride, tap_stride);
                d3m_row(below, in[chunk], b, tap_stride);
            }
        }
        const int out_row = s - 1;
        if (out_row >= (int)row0) {
            d3m_store_row(above, bias, y, frames, f, h, wd, p0, g, t, out_row, relu);
        }
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            above[k] = at[k];
            at[k] = below[k];
            below[k] = 0.0f;
        }
    }
#endif
}
