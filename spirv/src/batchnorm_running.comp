#version 450
// running_mean <- (1-m) running_mean + m mean; running_var <- (1-m) running_var +
// m var unbias, unbias = n/(n-1) computed by the host as the CPU does. `precise` keeps the
// CPU's order and rounding, so the update is bit-identical. In place when the input and
// output bindings are the same buffer.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = WG_SIZE) in;

layout(std430, set = 0, binding = 0) readonly buffer RmIn { float rm_in[]; };
layout(std430, set = 0, binding = 1) readonly buffer RvIn { float rv_in[]; };
layout(std430, set = 0, binding = 2) readonly buffer Mean { float mean[]; };
layout(std430, set = 0, binding = 3) readonly buffer Var { float var[]; };
layout(std430, set = 0, binding = 4) buffer RmOut { float rm_out[]; };
layout(std430, set = 0, binding = 5) buffer RvOut { float rv_out[]; };

layout(push_constant) uniform Push {
    uint c;
    float momentum;
    float unbias;
} pc;

void main() {
    uint i = flat_index();
    if (i >= pc.c) {
        return;
    }
    float keep = 1.0 - pc.momentum;
    precise float rm = keep * rm_in[i] + pc.momentum * mean[i];
    precise float rv = keep * rv_in[i] + pc.momentum * var[i] * pc.unbias;
    rm_out[i] = rm;
    rv_out[i] = rv;
}
