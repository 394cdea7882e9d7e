#version 450
// dx = w^T [Cin, Cout*kh*kw] * G [Cout*kh*kw, N * H*W], where G gathers dy: element
// ((co, ky, kx), (img, iy, ix)) is dy[img, co, oy, ox] when iy = oy * stride + ky - pad (and
// likewise for x) has an integer solution inside the output, else 0. This is col2im(w^T dy)
// written as a gather, so every dx element is owned by one invocation (no atomics); the batch
// is folded into the columns as in conv2d_forward.comp.
#extension GL_GOOGLE_include_directive : require

layout(std430, set = 0, binding = 0) readonly buffer Dy { float dy[]; };
layout(std430, set = 0, binding = 1) readonly buffer W { float wt[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Dx { float dx[]; };

#define CONV_NO_IM2COL
#include "conv2d_common.glsl"
#include "gemm_tile.glsl"

float load_a(uint z, uint ci, uint kk) {
    uint khw = pc.kh * pc.kw;
    uint co = kk / khw;
    return wt[(co * pc.cin + ci) * khw + (kk - co * khw)];
}

// dy[img, co, oy, ox] for the output pixel whose window reads input (iy, ix) at (ky, kx).
float gather(uint img, Idx3 wr, uint iy, uint ix) {
    int ty = int(iy + pc.pad) - int(wr.mid);
    int tx = int(ix + pc.pad) - int(wr.inner);
    if (ty < 0 || tx < 0) {
        return 0.0;
    }
    uint oy = uint(ty);
    uint ox = uint(tx);
    if (pc.stride != 1u) {
        oy /= pc.stride;
        ox /= pc.stride;
        if (oy * pc.stride != uint(ty) || ox * pc.stride != uint(tx)) {
            return 0.0;
        }
    }
    if (oy >= pc.ho || ox >= pc.wo) {
        return 0.0;
    }
    return dy[((img * pc.cout + wr.outer) * pc.ho + oy) * pc.wo + ox];
}

void load_b4(uint z, uint kk, uint q, uint k_end, out float v[4]) {
    Idx3 px = split3(q, pc.h, pc.w);    // (img, iy, ix)
    Idx3 wr = split3(kk, pc.kh, pc.kw); // (co, ky, kx)
    for (uint j = 0u; j < 4u; j++) {
        v[j] = kk + j < k_end ? gather(px.outer, wr, px.mid, px.inner) : 0.0;
        next3(wr, pc.kh, pc.kw);
    }
}

void store_c(uint z, uint ci, uint q, float v) {
    uint hw = pc.h * pc.w;
    uint img = q / hw;
    dx[(img * pc.cin + ci) * hw + (q - img * hw)] = v;
}

void main() {
    uint cols = pc.n * pc.h * pc.w;
    uint col0 = column_tile_xz() * BN;
    if (col0 >= cols) {
        return; // the whole workgroup: a padding tile of the x-z grid
    }
    gemm_tile(0u, pc.cin, cols, 0u, pc.cout * pc.kh * pc.kw, gl_WorkGroupID.y * BM, col0);
}
