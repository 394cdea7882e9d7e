#version 450
// One invocation per output element.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = WG_SIZE) in;

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Y { float y[]; };

#include "pool_common.glsl"

void main() {
    uint i = flat_index();
    uint per = pc.ho * pc.wo;
    if (i >= pc.planes * per) {
        return;
    }
    uint plane = i / per;
    uint r = i - plane * per;
    uint oy = r / pc.wo;
    uint ox = r - oy * pc.wo;
    uint base = plane * pc.h * pc.w;
    y[i] = x[base + argmax_window(base, oy, ox)];
}
