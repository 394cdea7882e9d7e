#version 450
// Per-channel mean and biased variance of x [N, C, HW] over (N, HW): one workgroup per
// channel, two passes (the variance is the mean of (x - mean)^2, not E[x^2] - mean^2, which
// cancels badly). Fixed order: reproducible.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "reduce.glsl"

layout(local_size_x = WG_SIZE) in;

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Mean { float mean_out[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Var { float var_out[]; };

layout(push_constant) uniform Push {
    uint n;
    uint c;
    uint hw;
} pc;

void main() {
    uint ch = gl_WorkGroupID.x;
    uint t = gl_LocalInvocationID.x;
    uint total = pc.n * pc.hw;
    float s = 0.0;
    float unused = 0.0;
    for (uint i = t; i < total; i += WG_SIZE) {
        uint img = i / pc.hw;
        s += x[(img * pc.c + ch) * pc.hw + (i - img * pc.hw)];
    }
    workgroup_sum2(s, unused);
    float mean = s / float(total);
    float q = 0.0;
    for (uint i = t; i < total; i += WG_SIZE) {
        uint img = i / pc.hw;
        float d = x[(img * pc.c + ch) * pc.hw + (i - img * pc.hw)] - mean;
        q += d * d;
    }
    workgroup_sum2(q, unused);
    if (t == 0u) {
        mean_out[ch] = mean;
        var_out[ch] = q / float(total);
    }
}
