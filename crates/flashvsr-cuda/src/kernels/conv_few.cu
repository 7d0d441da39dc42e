// 3×3 convolutions with very few output channels (the decoders' last layer: 128 → 3) over a bf16
// channels-last input. cuDNN pads such outputs to 8 channels and runs them at a few percent of the
// tensor cores' rate; the layer only has to read its input once, so one thread per output
// position, reading each tap's channels as 16-byte vectors, is bound by memory instead.
//
// x: bf16 [t][h][w][c] (c a multiple of 8); wt: f32 [o][c][3][3]; bias: f32 [o] or null;
// y: f32 [o][t][h][w]. Zero padding 1, stride 1. o ≤ FEW_MAX_OUT.

#define FEW_MAX_OUT 4

extern "C" __global__ void conv3x3_few_out_cl_bf16(const u16* __restrict__ x,
                                                   const float* __restrict__ wt,
                                                   const float* __restrict__ bias,
                                                   float* __restrict__ y, int c, int t, int h,
                                                   int w, int o, int relu) {
    extern __shared__ float sw[];
    // Tap-major in shared memory, [tap][o][c]: the inner loop walks channels of one tap.
    for (int i = threadIdx.x; i < o * c * 9; i += blockDim.x) {
        const int tap = i % 9, ch = (i / 9) % c, oo = i / (9 * c);
        sw[(tap * o + oo) * c + ch] = wt[i];
    }
    __syncthreads();
    const u64 plane = (u64)h * w;
    GRID_LOOP(p, (u64)t * plane) {
        const u64 f = p / plane;
        const int yy = (int)((p - f * plane) / w), xx = (int)((p - f * plane) % w);
        float acc[FEW_MAX_OUT] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int ky = 0; ky < 3; ++ky) {
            const int iy = yy + ky - 1;
            if (iy < 0 || iy >= h) continue;
            for (int kx = 0; kx < 3; ++kx) {
                const int ix = xx + kx - 1;
                if (ix < 0 || ix >= w) continue;
                const uint4* px = (const uint4*)(x + ((f * h + iy) * w + ix) * (u64)c);
                const float* tw = sw + (ky * 3 + kx) * o * c;
                for (int g = 0; g < c / 8; ++g) {
                    const uint4 v = px[g];
                    const unsigned int words[4] = {v.x, v.y, v.z, v.w};
                    float in[8];
#pragma unroll
                    for (int k = 0; k < 4; ++k) {
                        in[2 * k] = __uint_as_float(words[k] << 16);
                        in[2 * k + 1] = __uint_as_float(words[k] & 0xffff0000u);
                    }
#pragma unroll
                    for (int oo = 0; oo < FEW_MAX_OUT; ++oo) {
                        if (oo < o) {
                            const float* ww = tw + oo * c + g * 8;
#pragma unroll
                            for (int k = 0; k < 8; ++k) acc[oo] = fmaf(in[k], ww[k], acc[oo]);
                        }
                    }
                }
            }
        }
        for (int oo = 0; oo < o; ++oo) {
            float v = acc[oo] + (bias ? bias[oo] : 0.0f);
            if (relu) v = fmaxf(v, 0.0f);
            y[(u64)oo * t * plane + p] = v;
        }
    }
}
