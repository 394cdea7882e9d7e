#version 450
// y = x * s + t with s = gamma / sqrt(var + eps), t = beta - mean * s (the CPU's formula,
// fused multiply-add included), then max(0, y) when RELU. Training and evaluation differ
// only in which mean and var they pass.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = WG_SIZE) in;
layout(constant_id = 0) const bool RELU = false;

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer Gamma { float gamma[]; };
layout(std430, set = 0, binding = 2) readonly buffer Beta { float beta[]; };
layout(std430, set = 0, binding = 3) readonly buffer Mean { float mean[]; };
layout(std430, set = 0, binding = 4) readonly buffer Var { float var[]; };
layout(std430, set = 0, binding = 5) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint numel;
    uint c;
    uint hw;
    float eps;
} pc;

void main() {
    uint i = flat_index();
    if (i >= pc.numel) {
        return;
    }
    uint ch = (i / pc.hw) % pc.c;
    precise float s = gamma[ch] / sqrt(var[ch] + pc.eps);
    precise float t = beta[ch] - mean[ch] * s;
    float v = fma(x[i], s, t);
    y[i] = RELU ? max(v, 0.0) : v;
}
