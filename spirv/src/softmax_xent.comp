#version 450
// Softmax cross-entropy, one invocation per sample: loss_row = logsumexp(z) - z[label],
// dz = (softmax(z) - onehot(label)) / N. The per-sample losses are averaged by
// reduce_rows.comp (in order). Labels were validated by the host; an index is clamped anyway
// so that a bad one can never read out of bounds.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = WG_SIZE) in;

layout(std430, set = 0, binding = 0) readonly buffer Z { float z[]; };
layout(std430, set = 0, binding = 1) readonly buffer Labels { float labels[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Dz { float dz[]; };
layout(std430, set = 0, binding = 3) writeonly buffer Loss { float loss_row[]; };

layout(push_constant) uniform Push {
    uint n;
    uint k;
} pc;

void main() {
    uint row = flat_index();
    if (row >= pc.n) {
        return;
    }
    uint base = row * pc.k;
    float m = z[base];
    for (uint j = 1u; j < pc.k; j++) {
        m = max(m, z[base + j]);
    }
    float s = 0.0;
    for (uint j = 0u; j < pc.k; j++) {
        s += exp(z[base + j] - m);
    }
    float lse = m + log(s);
    uint label = min(uint(max(labels[row], 0.0)), pc.k - 1u);
    loss_row[row] = lse - z[base + label];
    for (uint j = 0u; j < pc.k; j++) {
        float p = exp(z[base + j] - lse);
        dz[base + j] = (p - (j == label ? 1.0 : 0.0)) / float(pc.n);
    }
}
