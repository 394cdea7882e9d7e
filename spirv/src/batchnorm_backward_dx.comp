#version 450
// dx = gamma / sqrt(var + eps) * (g - dbeta / m - xhat * dgamma / m), m = N * HW, with g
// and xhat as in batchnorm_backward_reduce.comp.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = WG_SIZE) in;
layout(constant_id = 0) const bool RELU = false;

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer Y { float y[]; };
layout(std430, set = 0, binding = 2) readonly buffer Dy { float dy[]; };
layout(std430, set = 0, binding = 3) readonly buffer Mean { float mean[]; };
layout(std430, set = 0, binding = 4) readonly buffer Var { float var[]; };
layout(std430, set = 0, binding = 5) readonly buffer Gamma { float gamma[]; };
layout(std430, set = 0, binding = 6) readonly buffer Dgamma { float dgamma[]; };
layout(std430, set = 0, binding = 7) readonly buffer Dbeta { float dbeta[]; };
layout(std430, set = 0, binding = 8) writeonly buffer Dx { float dx[]; };

layout(push_constant) uniform Push {
    uint numel;
    uint c;
    uint hw;
    float eps;
    float m;
} pc;

void main() {
    uint i = flat_index();
    if (i >= pc.numel) {
        return;
    }
    uint ch = (i / pc.hw) % pc.c;
    float inv = 1.0 / sqrt(var[ch] + pc.eps);
    float k = gamma[ch] * inv;
    float mb = dbeta[ch] / pc.m;
    float mgx = dgamma[ch] / pc.m;
    float xhat = (x[i] - mean[ch]) * inv;
    float g = (RELU && y[i] <= 0.0) ? 0.0 : dy[i];
    dx[i] = k * (g - mb - xhat * mgx);
}
