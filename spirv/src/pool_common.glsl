// Max-pool window search shared by forward and backward: the FIRST maximum in row-major
// window order, a NaN replaced by the first non-NaN after it (as the CPU does).
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
} pc;

// Index within the plane starting at `base` of the first maximum of window (oy, ox).
uint argmax_window(uint base, uint oy, uint ox) {
    uint best = (oy * pc.stride) * pc.w + ox * pc.stride;
    float bv = x[base + best];
    for (uint ky = 0u; ky < pc.kernel; ky++) {
        for (uint kx = 0u; kx < pc.kernel; kx++) {
            uint i = (oy * pc.stride + ky) * pc.w + ox * pc.stride + kx;
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
