#version 450
// Element-wise ops, one pipeline per OP (specialisation constant 0). `precise` keeps the
// driver from fusing multiplies and adds, so the results match the CPU bit for bit.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = WG_SIZE) in;

#define OP_ADD 0u      // y = a + b (add_assign binds y = a)
#define OP_MUL 1u      // y = a * b
#define OP_SCALE 2u    // y = a * s
#define OP_RELU 3u     // y = max(a, 0)
#define OP_RELU_BWD 4u // y = b where a > 0, else 0 (a = forward output, b = dy)
layout(constant_id = 0) const uint OP = 0u;

layout(std430, set = 0, binding = 0) readonly buffer A { float a[]; };
layout(std430, set = 0, binding = 1) readonly buffer B { float b[]; };
layout(std430, set = 0, binding = 2) buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint n;
    float s;
} pc;

void main() {
    uint i = flat_index();
    if (i >= pc.n) {
        return;
    }
    precise float r;
    if (OP == OP_ADD) {
        r = a[i] + b[i];
    } else if (OP == OP_MUL) {
        r = a[i] * b[i];
    } else if (OP == OP_SCALE) {
        r = a[i] * pc.s;
    } else if (OP == OP_RELU) {
        r = max(a[i], 0.0);
    } else {
        r = a[i] > 0.0 ? b[i] : 0.0;
    }
    y[i] = r;
}
