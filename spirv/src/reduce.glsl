// A fixed-shape tree reduction over one workgroup of WG_SIZE invocations in shared memory:
// the same additions in the same order on every device, whatever its subgroup size.
#ifndef FRACTALNET_REDUCE_GLSL
#define FRACTALNET_REDUCE_GLSL

shared float red_a[WG_SIZE];
shared float red_b[WG_SIZE];

// Sums a and b over the workgroup; every invocation gets the totals.
void workgroup_sum2(inout float a, inout float b) {
    uint t = gl_LocalInvocationID.x;
    red_a[t] = a;
    red_b[t] = b;
    barrier();
    for (uint s = WG_SIZE / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            red_a[t] += red_a[t + s];
            red_b[t] += red_b[t + s];
        }
        barrier();
    }
    a = red_a[0];
    b = red_b[0];
    barrier();
}

#endif
