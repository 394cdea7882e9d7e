#version 450
// One invocation per INPUT element: it gathers dy from every window that contains it and
// whose first maximum it is, in row-major window order (the order in which the CPU scatters),
// so overlapping windows need no atomics and the sums match the CPU's.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = WG_SIZE) in;

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer Dy { float dy[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Dx { float dx[]; };

#include "pool_common.glsl"

// The windows o (along one axis) with o * stride <= i + pad < o * stride + kernel, as [lo, hi).
uvec2 windows_containing(uint real_i, uint count) {
    uint i = real_i + pc.pad;
    uint lo = i + 1u >= pc.kernel ? (i + 1u - pc.kernel + pc.stride - 1u) / pc.stride : 0u;
    uint hi = min(i / pc.stride + 1u, count);
    return uvec2(lo, max(lo, hi));
}

void main() {
    uint i = flat_index();
    uint per = pc.h * pc.w;
    if (i >= pc.planes * per) {
        return;
    }
    uint plane = i / per;
    uint r = i - plane * per;
    uint iy = r / pc.w;
    uint ix = r - iy * pc.w;
    uint base = plane * per;
    uvec2 ys = windows_containing(iy, pc.ho);
    uvec2 xs = windows_containing(ix, pc.wo);
    precise float g = 0.0;
    for (uint oy = ys.x; oy < ys.y; oy++) {
        for (uint ox = xs.x; ox < xs.y; ox++) {
            if (argmax_window(base, oy, ox) == r) {
                g += dy[(plane * pc.ho + oy) * pc.wo + ox];
            }
        }
    }
    dx[i] = g;
}
