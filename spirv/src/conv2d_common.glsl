// Geometry of a convolution (cross-correlation, zero padding, OIHW weights) as push
// constants, shared by the three implicit-GEMM convolution kernels, and the index walks their
// GEMM loaders use. The im2col matrix is never stored: the loaders compute each element from
// x (or dy) on the fly.
#ifndef FRACTALNET_CONV2D_COMMON_GLSL
#define FRACTALNET_CONV2D_COMMON_GLSL

layout(push_constant) uniform Push {
    uint n;
    uint cin;
    uint h;
    uint w;
    uint cout;
    uint kh;
    uint kw;
    uint ho;
    uint wo;
    uint stride;
    uint pad;
    uint k_chunk; // conv2d_dw: reduction length per split
} pc;

// A flat index split into (outer, mid, inner) with inner < d_inner and mid < d_mid: a weight
// row (channel, ky, kx) or a pixel (image, y, x). `next` steps to index + 1 without dividing.
struct Idx3 {
    uint outer;
    uint mid;
    uint inner;
};

Idx3 split3(uint i, uint d_mid, uint d_inner) {
    uint plane = d_mid * d_inner;
    uint outer = i / plane;
    uint r = i - outer * plane;
    uint mid = r / d_inner;
    return Idx3(outer, mid, r - mid * d_inner);
}

void next3(inout Idx3 t, uint d_mid, uint d_inner) {
    t.inner++;
    if (t.inner == d_inner) {
        t.inner = 0u;
        t.mid++;
        if (t.mid == d_mid) {
            t.mid = 0u;
            t.outer++;
        }
    }
}

#ifndef CONV_NO_IM2COL
// Element of image img's im2col matrix at weight row (ci, ky, kx) and output pixel (oy, ox).
float im2col(uint img, Idx3 wr, uint oy, uint ox) {
    int iy = int(oy * pc.stride + wr.mid) - int(pc.pad);
    int ix = int(ox * pc.stride + wr.inner) - int(pc.pad);
    if (iy < 0 || ix < 0 || iy >= int(pc.h) || ix >= int(pc.w)) {
        return 0.0;
    }
    return x[((img * pc.cin + wr.outer) * pc.h + uint(iy)) * pc.w + uint(ix)];
}
#endif

#endif
