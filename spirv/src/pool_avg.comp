#version 450
// Global average pooling. FORWARD: one invocation per (image, channel) plane sums its HW
// values in order and divides by HW. BACKWARD: dx[i] = dy[i / HW] * inv_hw, inv_hw = 1/HW
// rounded by the host as the CPU does.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = WG_SIZE) in;
layout(constant_id = 0) const bool FORWARD = true;

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint n; // outputs: planes (forward) or input elements (backward)
    uint hw;
    float inv_hw;
} pc;

void main() {
    uint i = flat_index();
    if (i >= pc.n) {
        return;
    }
    if (FORWARD) {
        float s = 0.0;
        for (uint j = 0u; j < pc.hw; j++) {
            s += x[i * pc.hw + j];
        }
        y[i] = s / float(pc.hw);
    } else {
        y[i] = x[i / pc.hw] * pc.inv_hw;
    }
}
