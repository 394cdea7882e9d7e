#version 450
// Per channel: dbeta = sum g, dgamma = sum g * xhat, where g = dy masked by the fused ReLU
// (y <= 0 passes no gradient) and xhat = (x - mean) / sqrt(var + eps). One workgroup per
// channel; batchnorm_backward_dx.comp then uses both sums.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "reduce.glsl"

layout(local_size_x = WG_SIZE) in;
layout(constant_id = 0) const bool RELU = false;

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer Y { float y[]; };
layout(std430, set = 0, binding = 2) readonly buffer Dy { float dy[]; };
layout(std430, set = 0, binding = 3) readonly buffer Mean { float mean[]; };
layout(std430, set = 0, binding = 4) readonly buffer Var { float var[]; };
layout(std430, set = 0, binding = 5) writeonly buffer Dgamma { float dgamma[]; };
layout(std430, set = 0, binding = 6) writeonly buffer Dbeta { float dbeta[]; };

layout(push_constant) uniform Push {
    uint n;
    uint c;
    uint hw;
    float eps;
} pc;

void main() {
    uint ch = gl_WorkGroupID.x;
    uint t = gl_LocalInvocationID.x;
    uint total = pc.n * pc.hw;
    float m = mean[ch];
    float inv = 1.0 / sqrt(var[ch] + pc.eps);
    float sg = 0.0;
    float sgx = 0.0;
    for (uint i = t; i < total; i += WG_SIZE) {
        uint img = i / pc.hw;
        uint idx = (img * pc.c + ch) * pc.hw + (i - img * pc.hw);
        float g = (RELU && y[idx] <= 0.0) ? 0.0 : dy[idx];
        sg += g;
        sgx += g * ((x[idx] - m) * inv);
    }
    workgroup_sum2(sg, sgx);
    if (t == 0u) {
        dbeta[ch] = sg;
        dgamma[ch] = sgx;
    }
}
