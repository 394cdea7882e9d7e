#version 450
// Index of the largest logit per row (the first on ties), as a float.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = WG_SIZE) in;

layout(std430, set = 0, binding = 0) readonly buffer Z { float z[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint n;
    uint k;
} pc;

void main() {
    uint row = flat_index();
    if (row >= pc.n) {
        return;
    }
    uint base = row * pc.k;
    uint best = 0u;
    for (uint j = 1u; j < pc.k; j++) {
        if (z[base + j] > z[base + best]) {
            best = j;
        }
    }
    y[row] = float(best);
}
