#version 450
// C = A B (+ bias[col]) on strided matrices: A(row, k) = a[row * a_rs + k * a_cs], likewise B,
// so transposes are free. Used by linear forward and backward. With split-K, workgroup z
// sums k in [z * k_chunk, (z + 1) * k_chunk) into its own [M, N] slice of C; the slices are
// then added in order by reduce_rows.comp (deterministic, no atomics).
#extension GL_GOOGLE_include_directive : require

layout(std430, set = 0, binding = 0) readonly buffer A { float a[]; };
layout(std430, set = 0, binding = 1) readonly buffer B { float b[]; };
layout(std430, set = 0, binding = 2) writeonly buffer C { float c[]; };
layout(std430, set = 0, binding = 3) readonly buffer Bias { float bias[]; };

layout(push_constant) uniform Push {
    uint m;
    uint n;
    uint k;
    uint a_rs;
    uint a_cs;
    uint b_rs;
    uint b_cs;
    uint k_chunk;
    uint has_bias;
} pc;

#include "gemm_tile.glsl"

float load_a(uint z, uint row, uint k) {
    return a[row * pc.a_rs + k * pc.a_cs];
}

void load_b4(uint z, uint k, uint col, uint k_end, out float v[4]) {
    for (uint j = 0u; j < 4u; j++) {
        v[j] = k + j < k_end ? b[(k + j) * pc.b_rs + col * pc.b_cs] : 0.0;
    }
}

void store_c(uint z, uint row, uint col, float v) {
    if (pc.has_bias != 0u) {
        v += bias[col];
    }
    c[(z * pc.m + row) * pc.n + col] = v;
}

void main() {
    uint z = gl_WorkGroupID.z;
    uint k_begin = z * pc.k_chunk;
    gemm_tile(z, pc.m, pc.n, k_begin, min(pc.k, k_begin + pc.k_chunk), gl_WorkGroupID.y * BM,
              gl_WorkGroupID.x * BN);
}
