// Shared by every kernel. Element-wise kernels run 256 invocations per workgroup over a
// 2-D grid of workgroups (the x count is capped at 65535, the guaranteed minimum), so the
// flat index is rebuilt here. Nothing depends on the subgroup size.
#ifndef FRACTALNET_COMMON_GLSL
#define FRACTALNET_COMMON_GLSL

#define WG_SIZE 256

uint flat_index() {
    uint group = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    return group * WG_SIZE + gl_LocalInvocationID.x;
}

#endif
