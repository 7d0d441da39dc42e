// im2col for conv3d: a [kdim, pc] slab of output positions p0 .. p0 + pc of one output frame,
// row ((ci * kt + dt) * kh + dy) * kw + dx, exactly the CPU layout so the same GEMM follows.

struct Im2col {
    u64 c, t, h, w;
    u64 kt, kh, kw;
    u64 wo;
    u64 t0;  // first input frame of this output frame
    u64 p0, pc;
    i64 pad;
    u64 zero_pad;  // 1: zero border, 0: replicate border
};

extern "C" __global__ void im2col_f32(const float* __restrict__ x, float* __restrict__ col,
                                      Im2col g) {
    const u64 kdim = g.c * g.kt * g.kh * g.kw;
    GRID_LOOP(i, kdim * g.pc) {
        const u64 row = i / g.pc, p = g.p0 + i % g.pc;
        const i64 oy = (i64)(p / g.wo), ox = (i64)(p % g.wo);
        const u64 dx = row % g.kw, dy = (row / g.kw) % g.kh;
        const u64 dt = (row / (g.kw * g.kh)) % g.kt, ci = row / (g.kw * g.kh * g.kt);
        i64 iy = oy + (i64)dy - g.pad, ix = ox + (i64)dx - g.pad;
        const i64 h = (i64)g.h, w = (i64)g.w;
        float v = 0.0f;
        const bool inside = iy >= 0 && iy < h && ix >= 0 && ix < w;
        if (inside || !g.zero_pad) {
            iy = iy < 0 ? 0 : (iy >= h ? h - 1 : iy);
            ix = ix < 0 ? 0 : (ix >= w ? w - 1 : ix);
            v = x[((ci * g.t + g.t0 + dt) * g.h + (u64)iy) * g.w + (u64)ix];
        }
        col[i] = v;
    }
}
