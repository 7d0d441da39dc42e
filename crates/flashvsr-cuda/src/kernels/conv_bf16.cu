// Layout kernels around the cuDNN convolution of the fast mode: our f32 (C, T, H, W) activations
// and (O, C, kt, kh, kw) weights to bf16 channels-last, and cuDNN's bf16 channels-last output
// back to f32 (O, T, H, W) with the bias added. Channels are zero-padded to the staged counts
// (multiples of 8, which cuDNN's tensor-core kernels want). Rounding is done with integer
// arithmetic rather than `cvt.rn.bf16`, so the module also compiles for pre-sm_80 targets (where
// the host never launches it).

typedef unsigned int u32;
typedef unsigned short u16;

// A tile is 32 positions x 64 channels, moved by 256 threads (8 warps): reads run along the
// positions of one channel plane, writes along the channels of one position, 128 bytes a warp.
// Each thread issues all its loads before its first store, so that they are in flight together.
#define CT_P 32
#define CT_C 64

// Round to nearest even; NaN stays a (quiet) NaN.
__device__ __forceinline__ u32 ct_bf16_bits(float f) {
    const u32 b = __float_as_uint(f);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (b >> 16) | 0x40u;
    return (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
}

struct StageIn {
    u64 c, t, h, w;       // source x (C, T, H, W)
    u64 cp;               // staged channels per source frame; c .. cp are zeros
    u64 hs, ws;           // staged plane: h, w plus 2 * pad
    u64 pad;              // replicate border baked in here (0 when cuDNN pads with zeros)
    u64 t_first, t_step;  // staged frame n starts at source frame t_first + n * t_step
    u64 fold;             // source frames side by side in the channels of one staged frame
};

// grid (ceil(hs*ws / 32), ceil(fold*cp / 64), frames), block 256.
// y: bf16 [frames, hs, ws, fold, cp]: staged channel k*cp + c is channel c of frame start + k.
extern "C" __global__ void conv_stage_input_bf16(const float* __restrict__ x, u32* __restrict__ y,
                                                 StageIn g) {
    __shared__ float tile[CT_C][CT_P + 1];
    const u64 plane = g.hs * g.ws;
    const u64 p0 = (u64)blockIdx.x * CT_P, c0 = (u64)blockIdx.y * CT_C, n = blockIdx.z;
    const int lane = threadIdx.x & 31, row = threadIdx.x >> 5;
    const u64 p = p0 + lane;
    if (p < plane) {
        i64 sy = (i64)(p / g.ws) - (i64)g.pad, sx = (i64)(p % g.ws) - (i64)g.pad;
        sy = sy < 0 ? 0 : (sy >= (i64)g.h ? (i64)g.h - 1 : sy);
        sx = sx < 0 ? 0 : (sx >= (i64)g.w ? (i64)g.w - 1 : sx);
        const u64 frame = g.t_first + n * g.t_step;
        const float* src = x + (frame * g.h + (u64)sy) * g.w + (u64)sx;
        const u64 channel_stride = g.t * g.h * g.w, frame_stride = g.h * g.w;
        float v[CT_C / 8];
#pragma unroll
        for (int k = 0; k < CT_C / 8; ++k) {
            const u64 staged = c0 + row + 8 * k;
            const u64 c = staged % g.cp, dt = staged / g.cp;
            v[k] = (c < g.c && dt < g.fold) ? src[c * channel_stride + dt * frame_stride] : 0.0f;
        }
#pragma unroll
        for (int k = 0; k < CT_C / 8; ++k) tile[row + 8 * k][lane] = v[k];
    }
    __syncthreads();
    // Each lane writes one channel pair; cp is a multiple of 8, so a pair never straddles it.
    const u64 pair = c0 + 2 * (u64)lane, row_channels = g.fold * g.cp;
    if (pair >= row_channels) return;
#pragma unroll
    for (int k = 0; k < CT_P / 8; ++k) {
        const int j = row + 8 * k;
        const u64 q = p0 + j;
        if (q < plane) {
            const u32 lo = ct_bf16_bits(tile[2 * lane][j]);
            const u32 hi = ct_bf16_bits(tile[2 * lane + 1][j]);
            y[((n * plane + q) * row_channels + pair) / 2] = lo | (hi << 16);
        }
    }
}

struct StageWeight {
    u64 o, c, taps;  // source w (O, C, taps), taps = kt * kh * kw
    u64 op, cp;      // staged counts; padding rows and channels are zeros
    u64 fold;        // temporal taps folded into the channels (1, or kt)
};

// y: bf16 [op, taps, cp] (cuDNN's KRSC / KTRSC); with fold = kt, [op, kh*kw, kt, cp]: the 2-D
// filter over staged frames whose channels are kt source frames side by side.
extern "C" __global__ void conv_stage_weight_bf16(const float* __restrict__ w, u16* __restrict__ y,
                                                  StageWeight g) {
    const u64 spatial = g.taps / g.fold;
    GRID_LOOP(i, g.op * g.taps * g.cp) {
        const u64 c = i % g.cp, staged = (i / g.cp) % g.taps, o = i / (g.cp * g.taps);
        const u64 k = (staged % g.fold) * spatial + staged / g.fold;
        y[i] = (o < g.o && c < g.c) ? (u16)ct_bf16_bits(w[(o * g.c + c) * g.taps + k]) : (u16)0;
    }
}

struct UnstageOut {
    u64 o, op;      // real and staged output channels
    u64 plane;      // ho * wo
    u64 t_out;      // frames of the whole output (O, t_out, ho, wo)
    u64 t_first;    // output frame of staged frame 0
    u64 has_bias;
    u64 relu;       // max(x, 0) after the bias (fused activation)
};

// grid (ceil(plane / 32), ceil(op / 64), frames), block 256. y: bf16 [frames, plane, op].
extern "C" __global__ void conv_unstage_output_f32(const u32* __restrict__ y,
                                                   const float* __restrict__ bias,
                                                   float* __restrict__ out, UnstageOut g) {
    __shared__ float tile[CT_C][CT_P + 1];
    const u64 p0 = (u64)blockIdx.x * CT_P, c0 = (u64)blockIdx.y * CT_C, n = blockIdx.z;
    const int lane = threadIdx.x & 31, row = threadIdx.x >> 5;
    const u64 pair = c0 + 2 * (u64)lane;
    if (pair < g.op) {
        u32 v[CT_P / 8];
#pragma unroll
        for (int k = 0; k < CT_P / 8; ++k) {
            const u64 q = p0 + row + 8 * k;
            v[k] = q < g.plane ? y[((n * g.plane + q) * g.op + pair) / 2] : 0u;
        }
#pragma unroll
        for (int k = 0; k < CT_P / 8; ++k) {
            tile[2 * lane][row + 8 * k] = __uint_as_float(v[k] << 16);
            tile[2 * lane + 1][row + 8 * k] = __uint_as_float(v[k] & 0xffff0000u);
        }
    }
    __syncthreads();
    const u64 q = p0 + lane;
    if (q >= g.plane) return;
#pragma unroll
    for (int k = 0; k < CT_C / 8; ++k) {
        const int i = row + 8 * k;
        const u64 oc = c0 + i;
        if (oc < g.o) {
            const float b = g.has_bias ? bias[oc] : 0.0f;
            const float v = tile[i][lane] + b;
            out[(oc * g.t_out + g.t_first + n) * g.plane + q] = g.relu ? fmaxf(v, 0.0f) : v;
        }
    }
}
