#version 450
// SGD with momentum and weight decay: v <- momentum v + (g + wd w); w <- w - lr v, with the
// CPU's order of operations and no fused multiply-add (`precise`): bit-identical. In place
// when the in and out bindings are the same buffer.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = WG_SIZE) in;

layout(std430, set = 0, binding = 0) readonly buffer WIn { float w_in[]; };
layout(std430, set = 0, binding = 1) readonly buffer G { float g[]; };
layout(std430, set = 0, binding = 2) readonly buffer VIn { float v_in[]; };
layout(std430, set = 0, binding = 3) buffer WOut { float w_out[]; };
layout(std430, set = 0, binding = 4) buffer VOut { float v_out[]; };

layout(push_constant) uniform Push {
    uint n;
    float lr;
    float momentum;
    float weight_decay;
} pc;

void main() {
    uint i = flat_index();
    if (i >= pc.n) {
        return;
    }
    float w = w_in[i];
    precise float v = pc.momentum * v_in[i] + (g[i] + pc.weight_decay * w);
    precise float nw = w - pc.lr * v;
    v_out[i] = v;
    w_out[i] = nw;
}
