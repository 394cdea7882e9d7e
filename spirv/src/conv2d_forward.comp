#version 450
// y = w [Cout, K] * im2col(x) [K, N * Ho*Wo]: one GEMM over the whole batch, column
// q = img * Ho*Wo + p, so that small late-block images still fill whole tiles.
#extension GL_GOOGLE_include_directive : require

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer W { float wt[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Y { float y[]; };

#include "conv2d_common.glsl"
#include "gemm_tile.glsl"

float load_a(uint z, uint co, uint k) {
    return wt[co * (pc.cin * pc.kh * pc.kw) + k];
}

void load_b4(uint z, uint k, uint q, uint k_end, out float v[4]) {
    Idx3 px = split3(q, pc.ho, pc.wo); // (img, oy, ox)
    Idx3 wr = split3(k, pc.kh, pc.kw); // (ci, ky, kx)
    for (uint j = 0u; j < 4u; j++) {
        v[j] = k + j < k_end ? im2col(px.outer, wr, px.mid, px.inner) : 0.0;
        next3(wr, pc.kh, pc.kw);
    }
}

void store_c(uint z, uint co, uint q, float v) {
    uint hwo = pc.ho * pc.wo;
    uint img = q / hwo;
    y[(img * pc.cout + co) * hwo + (q - img * hwo)] = v;
}

void main() {
    uint cols = pc.n * pc.ho * pc.wo;
    uint col0 = column_tile_xz() * BN;
    if (col0 >= cols) {
        return; // the whole workgroup: a padding tile of the x-z grid
    }
    gemm_tile(0u, pc.cout, cols, 0u, pc.cin * pc.kh * pc.kw, gl_WorkGroupID.y * BM, col0);
}
