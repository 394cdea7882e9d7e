// Max-pool window search shared by forward and backward: the FIRST maximum in row-major
// window order, a NaN replaced by the first non-NaN after it (as the CPU does). Padding
// pixels (`pad` each side) are skipped: they never win, like -inf.
#ifndef FRACTALNET_POOL_COMMON_GLSL
#define FRACTALNET_POOL_COMMON_GLSL

layout(push_constant) uniform Push {
    uint planes; // N * C
    uint h;
    uint w;
    uint ho;
    uint wo;
    uint kernel;
    uint stride;
    uint pad;
} pc;

// The real pixels [lo, hi) along an axis of n pixels of window o.
uvec2 window_span(uint o, uint n) {
    uint start = o * pc.stride;
    uint lo = start > pc.pad ? start - pc.pad : 0u;
    uint end = start + pc.kernel;
    uint hi = min(end > pc.pad ? end - pc.pad : 0u, n);
    return uvec2(lo, hi);
}

// Index within the plane starting at `base` of the first maximum of window (oy, ox).
uint argmax_window(uint base, uint oy, uint ox) {
    uvec2 ys = window_span(oy, pc.h);
    uvec2 xs = window_span(ox, pc.w);
    uint best = ys.x * pc.w + xs.x;
    float bv = x[base + best];
    for (uint iy = ys.x; iy < ys.y; iy++) {
        for (uint ix = xs.x; ix < xs.y; ix++) {
            uint i = iy * pc.w + ix;
            float v = x[base + i];
            if (v > bv || (isnan(bv) && !isnan(v))) {
                bv = v;
                best = i;
            }
        }
    }
    return best;
}

#endif
