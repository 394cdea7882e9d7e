#version 450
// dw [Cout, K] = sum over images of dy[img] [Cout, Ho*Wo] * im2col(x[img])^T [Ho*Wo, K]:
// one GEMM whose reduction index q = img * Ho*Wo + p runs over the whole batch. The batch
// reduction is long and the output small, so it is split: workgroup z sums q in
// [z * k_chunk, (z + 1) * k_chunk) into slice z of `part`, and reduce_rows.comp adds the
// slices in order.
#extension GL_GOOGLE_include_directive : require

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer Dy { float dy[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Part { float part[]; };

#include "conv2d_common.glsl"
#include "gemm_tile.glsl"

float load_a(uint z, uint co, uint q) {
    uint hwo = pc.ho * pc.wo;
    uint img = q / hwo;
    return dy[(img * pc.cout + co) * hwo + (q - img * hwo)];
}

void load_b4(uint z, uint q, uint k, uint q_end, out float v[4]) {
    Idx3 wr = split3(k, pc.kh, pc.kw); // (ci, ky, kx)
    Idx3 px = split3(q, pc.ho, pc.wo); // (img, oy, ox)
    for (uint j = 0u; j < 4u; j++) {
        v[j] = q + j < q_end ? im2col(px.outer, wr, px.mid, px.inner) : 0.0;
        next3(px, pc.ho, pc.wo);
    }
}

void store_c(uint z, uint co, uint k, float v) {
    uint kk = pc.cin * pc.kh * pc.kw;
    part[(z * pc.cout + co) * kk + k] = v;
}

void main() {
    uint z = gl_WorkGroupID.z;
    uint total = pc.n * pc.ho * pc.wo;
    uint q0 = z * pc.k_chunk;
    gemm_tile(z, pc.cout, pc.cin * pc.kh * pc.kw, q0, min(total, q0 + pc.k_chunk),
              gl_WorkGroupID.y * BM, gl_WorkGroupID.x * BN);
}
