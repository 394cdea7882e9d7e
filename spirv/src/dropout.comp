#version 450
// Inverted dropout with the counter-based mask of crate::rng::philox_uniform: element i
// draws word i % 4 of Philox4x32-10 at counter (i / 4, 0, 0, 0) under key (seed lo, seed hi),
// u = (word >> 8) * 2^-24 (exact in f32), kept iff u >= rate, kept value `keep` = 1/(1-rate)
// as the host rounded it. Integer arithmetic only up to the comparison: the mask is the
// CPU's bit for bit. One invocation per Philox block of four elements. Indices are u32 (the
// host rejects tensors of 2^32 elements or more), so the counter's high word is 0.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = WG_SIZE) in;

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Y { float y[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Mask { float mask[]; };

layout(push_constant) uniform Push {
    uint n;
    uint seed_lo;
    uint seed_hi;
    float rate;
    float keep;
} pc;

const uint PHILOX_M0 = 0xD2511F53u;
const uint PHILOX_M1 = 0xCD9E8D57u;
const uint PHILOX_W0 = 0x9E3779B9u;
const uint PHILOX_W1 = 0xBB67AE85u;

uvec4 philox4x32_10(uvec4 c, uvec2 k) {
    for (uint round = 0u; round < 10u; round++) {
        if (round > 0u) {
            k += uvec2(PHILOX_W0, PHILOX_W1);
        }
        uint hi0, lo0, hi1, lo1;
        umulExtended(PHILOX_M0, c.x, hi0, lo0);
        umulExtended(PHILOX_M1, c.z, hi1, lo1);
        c = uvec4(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
    }
    return c;
}

void main() {
    uint block = flat_index();
    uint i0 = block * 4u;
    if (i0 >= pc.n) {
        return;
    }
    uvec4 words = philox4x32_10(uvec4(block, 0u, 0u, 0u), uvec2(pc.seed_lo, pc.seed_hi));
    for (uint j = 0u; j < 4u; j++) {
        uint i = i0 + j;
        if (i < pc.n) {
            float u = float(words[j] >> 8u) * (1.0 / 16777216.0);
            float m = u >= pc.rate ? pc.keep : 0.0;
            mask[i] = m;
            y[i] = x[i] * m;
        }
    }
}
