// Elementwise ops. Formulas mirror flashvsr-tensor's cpu/elementwise.rs term for term.

// y[i] = v[(i / div) % modulo]: a constant (NaN poison), a per-row bias, or a per-column bias.
extern "C" __global__ void broadcast_f32(const float* __restrict__ v, float* __restrict__ y, u64 n,
                                         u64 div, u64 modulo) {
    GRID_LOOP(i, n) { y[i] = v[(i / div) % modulo]; }
}

extern "C" __global__ void fill_f32(float* __restrict__ y, u64 n, float value) {
    GRID_LOOP(i, n) { y[i] = value; }
}

__device__ __forceinline__ float unary_op(float x, int op, float a, float b) {
    switch (op) {
        case 0: return x / (1.0f + expf(-x));  // silu
        case 1: return fmaxf(x, 0.0f);         // relu (NaN -> 0, like f32::max)
        case 2: {
            const float k = 0.7978846f;  // sqrt(2/pi)
            return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
        }
        case 3: return tanhf(x);
        case 4: return x * a + b;  // affine
        default: return x < a ? a : (x > b ? b : x);  // clamp, NaN passes through like f32::clamp
    }
}

extern "C" __global__ void unary_f32(const float* __restrict__ x, float* __restrict__ y, u64 n,
                                     int op, float a, float b) {
    GRID_LOOP(i, n) { y[i] = unary_op(x[i], op, a, b); }
}

extern "C" __global__ void binary_f32(const float* __restrict__ a, const float* __restrict__ b,
                                      float* __restrict__ y, u64 n, int op) {
    GRID_LOOP(i, n) {
        const float x = a[i], z = b[i];
        y[i] = op == 0 ? x + z : (op == 1 ? x - z : x * z);
    }
}

extern "C" __global__ void add_gated_f32(const float* __restrict__ x, const float* __restrict__ y,
                                         const float* __restrict__ gate, float* __restrict__ out,
                                         u64 n, u64 dim) {
    GRID_LOOP(i, n) { out[i] = x[i] + y[i] * gate[i % dim]; }
}

extern "C" __global__ void channel_affine_f32(const float* __restrict__ x,
                                              const float* __restrict__ mul,
                                              const float* __restrict__ add,
                                              float* __restrict__ out, u64 n, u64 plane) {
    GRID_LOOP(i, n) {
        const u64 c = i / plane;
        out[i] = x[i] * mul[c] + add[c];
    }
}

// One thread per rotated pair; `half` is head_dim / 2, `pairs_per_row` is dim / 2.
extern "C" __global__ void rope_f32(const float* __restrict__ x, const float* __restrict__ cos_t,
                                    const float* __restrict__ sin_t, float* __restrict__ out,
                                    u64 pairs, u64 pairs_per_row, u64 half) {
    GRID_LOOP(i, pairs) {
        const u64 row = i / pairs_per_row, j = i % pairs_per_row;
        const u64 t = row * half + j % half;
        const float2 r = rope_rotate(x[2 * i], x[2 * i + 1], cos_t[t], sin_t[t]);
        out[2 * i] = r.x;
        out[2 * i + 1] = r.y;
    }
}
