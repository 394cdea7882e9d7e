#version 450
// One step of the join's running sum: y = a + b, divided by `count` on the last step. A join
// of inputs x0..xk-1 is y = x0 + x1, then y = y + x2 (binding a = y), ..., the last step
// dividing: the CPU's order, sum first then divide.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = WG_SIZE) in;

layout(std430, set = 0, binding = 0) readonly buffer A { float a[]; };
layout(std430, set = 0, binding = 1) readonly buffer B { float b[]; };
layout(std430, set = 0, binding = 2) buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint n;
    float count; // 0 on every step but the last
} pc;

void main() {
    uint i = flat_index();
    if (i >= pc.n) {
        return;
    }
    precise float s = a[i] + b[i];
    if (pc.count != 0.0) {
        s = s / pc.count;
    }
    y[i] = s;
}
