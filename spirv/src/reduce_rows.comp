#version 450
// y[j] = sum over i < rows of x[i * cols + j], added in order of i (deterministic), then
// divided by `divisor` when it is non-zero. Adds the split-K slices of a GEMM, sums the
// bias gradient over the batch, and averages the per-sample losses.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = WG_SIZE) in;

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint rows;
    uint cols;
    float divisor;
} pc;

void main() {
    uint j = flat_index();
    if (j >= pc.cols) {
        return;
    }
    precise float s = 0.0;
    for (uint i = 0u; i < pc.rows; i++) {
        s += x[i * pc.cols + j];
    }
    if (pc.divisor != 0.0) {
        s = s / pc.divisor;
    }
    y[j] = s;
}
