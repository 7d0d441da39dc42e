// A 3×3 frame convolution (zero pad 1) with 3 output channels from a channels-last bf16 input to
// f32 row-major (ops/conv_direct.rs): the TCDecoder's last conv, 128 → 3 channels at full
// resolution. It is bound by reading its input (2 bytes a channel and position); cuDNN pads the
// 3 outputs to 8 and runs a tensor-core kernel at a fraction of that bandwidth, then a second
// pass unstages the padded output.
//
// A block computes D3_RUNS · D3_RUN consecutive output positions of one row of one frame. A run
// of D3_RUN positions is a half-warp: its 16 lanes split the input channels in groups of 8 (16
// bytes, one load; the half-warp reads 256 contiguous bytes of a position's channels), each lane
// sums its groups' products for the run's 3 × D3_RUN outputs (each input load serves up to 3
// positions of the run), then the half-warp adds its lanes' sums (fixed order: the result does
// not depend on the launch). Weights stay f32 (cuDNN's are bf16): [tap][channel][output] in
// shared memory, 24 floats for a lane's 8 channels of one tap.

typedef unsigned int u32;

#define D3_RUN 4
#define D3_LANES 16
#define D3_THREADS 256
#define D3_RUNS (D3_THREADS / D3_LANES)

extern "C" __global__ void __launch_bounds__(D3_THREADS)
    conv3x3_cl_to_three_f32(const uint4* __restrict__ x, const float* __restrict__ w,
                            const float* __restrict__ bias, float* __restrict__ y, u64 frames,
                            u64 h, u64 wd, u64 c8, int relu) {
    extern __shared__ float4 d3_weights[];
    float* ws = reinterpret_cast<float*>(d3_weights);
    const u64 c = c8 * 8;
    // w (3, C, 1, 3, 3): element (o, ch, tap) at (o · C + ch) · 9 + tap.
    for (u64 i = threadIdx.x; i < 27 * c; i += D3_THREADS) {
        const u64 o = i % 3, ch = (i / 3) % c, tap = i / (3 * c);
        ws[i] = w[(o * c + ch) * 9 + tap];
    }
    __syncthreads();
    const u64 lane = threadIdx.x % D3_LANES, run = threadIdx.x / D3_LANES;
    const u64 f = blockIdx.z, row = blockIdx.y;
    const long long x0 = (long long)blockIdx.x * (D3_RUNS * D3_RUN) + (long long)run * D3_RUN;
    float acc[D3_RUN][3];
#pragma unroll
    for (int r = 0; r < D3_RUN; ++r) acc[r][0] = acc[r][1] = acc[r][2] = 0.0f;
    for (u64 g = lane; g < c8; g += D3_LANES) {
#pragma unroll
        for (int dy = 0; dy < 3; ++dy) {
            const long long sy = (long long)row + dy - 1;
            if (sy < 0 || sy >= (long long)h) continue;
            const uint4* src = x + ((f * h + (u64)sy) * wd) * c8 + g;
            float in[D3_RUN + 2][8];
#pragma unroll
            for (int j = 0; j < D3_RUN + 2; ++j) {
                const long long sx = x0 + j - 1;
                uint4 v = make_uint4(0u, 0u, 0u, 0u);
                if (sx >= 0 && sx < (long long)wd) v = src[(u64)sx * c8];
                const u32 words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
                for (int k = 0; k < 4; ++k) {
                    in[j][2 * k] = __uint_as_float(words[k] << 16);
                    in[j][2 * k + 1] = __uint_as_float(words[k] & 0xffff0000u);
                }
            }
#pragma unroll
            for (int kx = 0; kx < 3; ++kx) {
                // 24 floats: channels g·8 .. g·8 + 7, outputs 0..2, of tap (dy, kx).
                const float4* wp = d3_weights + ((dy * 3 + kx) * c + g * 8) * 3 / 4;
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
    }
    // The half-warp's sums: xor offsets below 16 stay within it.
#pragma unroll
    for (int r = 0; r < D3_RUN; ++r) {
#pragma unroll
        for (int o = 0; o < 3; ++o) {
            float v = acc[r][o];
#pragma unroll
            for (int s = D3_LANES / 2; s > 0; s >>= 1) v += __shfl_xor_sync(FULL_MASK, v, s);
            acc[r][o] = v;
        }
    }
    // Lane o · D3_RUN + r writes output o of position r (12 lanes).
    if (lane < 3 * D3_RUN) {
        const int o = (int)(lane / D3_RUN), r = (int)(lane % D3_RUN);
        const long long xo = x0 + r;
        if (xo < (long long)wd) {
            float v = acc[0][0];
#pragma unroll
            for (int rr = 0; rr < D3_RUN; ++rr)
#pragma unroll
                for (int oo = 0; oo < 3; ++oo)
                    if (rr == r && oo == o) v = acc[rr][oo];
            if (bias != 0) v += bias[o];
            if (relu) v = fmaxf(v, 0.0f);
            y[(((u64)o * frames + f) * h + row) * wd + (u64)xo] = v;
        }
    }
}
