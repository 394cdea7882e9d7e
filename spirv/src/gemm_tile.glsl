// The tiled GEMM body shared by `gemm.comp` and the implicit-GEMM convolutions.
//
// C[z][row][col] = sum over k in [k_begin, k_end) of A(z, row, k) B(z, k, col) for the tile
// whose first row and column are (row0, col0). A 64x64 tile of C per workgroup of 16x16
// invocations, each owning a 4x4 strided block; K is walked in steps of 16 through shared
// memory (2 x 16 x 65 floats, 8.3 KiB). Each output is accumulated in a fixed order of k, so
// results are reproducible run to run.
//
// The includer defines:
//   float load_a(z, row, k)                  A(z, row, k), for row < m and k < k_end;
//   void load_b4(z, k, col, k_end, out v[4]) B(z, k + j, col) for j < 4, 0 where k + j >= k_end
//                                            (col < n), so that index arithmetic (im2col) is
//                                            done once per four elements;
//   void store_c(z, row, col, v).
// Every invocation loads the same B column on every k step, so what a loader derives from the
// column alone is loop-invariant and hoisted by the compiler.
#ifndef FRACTALNET_GEMM_TILE_GLSL
#define FRACTALNET_GEMM_TILE_GLSL

#define BM 64u
#define BN 64u
#define BK 16u

layout(local_size_x = 16, local_size_y = 16) in;

// Column padding (65) makes the k-major stores of the A tile conflict-free.
shared float tile_a[BK][BM + 1u];
shared float tile_b[BK][BN + 1u];

float load_a(uint z, uint row, uint k);
void load_b4(uint z, uint k, uint col, uint k_end, out float v[4]);
void store_c(uint z, uint row, uint col, float v);

void gemm_tile(uint z, uint m, uint n, uint k_begin, uint k_end, uint row0, uint col0) {
    uint tx = gl_LocalInvocationID.x;
    uint ty = gl_LocalInvocationID.y;
    uint tid = ty * 16u + tx;
    // A loads: k column tid % 16 of rows tid / 16 + 16 r (consecutive invocations walk k).
    uint a_k = tid % BK;
    uint a_row = tid / BK;
    // B loads: k rows 4 (tid / 64) .. + 3 of column tid % 64 (consecutive invocations walk
    // the columns).
    uint b_col = tid % BN;
    uint b_k = (tid / BN) * 4u;
    uint gc = col0 + b_col;

    float acc[4][4];
    for (uint i = 0u; i < 4u; i++) {
        for (uint j = 0u; j < 4u; j++) {
            acc[i][j] = 0.0;
        }
    }

    for (uint k0 = k_begin; k0 < k_end; k0 += BK) {
        uint gk = k0 + a_k;
        for (uint r = 0u; r < 4u; r++) {
            uint gr = row0 + a_row + 16u * r;
            tile_a[a_k][a_row + 16u * r] = (gr < m && gk < k_end) ? load_a(z, gr, gk) : 0.0;
        }
        float bv[4];
        if (gc < n) {
            load_b4(z, k0 + b_k, gc, k_end, bv);
        } else {
            bv = float[4](0.0, 0.0, 0.0, 0.0);
        }
        for (uint r = 0u; r < 4u; r++) {
            tile_b[b_k + r][b_col] = bv[r];
        }
        barrier();
        for (uint kk = 0u; kk < BK; kk++) {
            float av[4];
            float bw[4];
            for (uint i = 0u; i < 4u; i++) {
                av[i] = tile_a[kk][ty + 16u * i];
                bw[i] = tile_b[kk][tx + 16u * i];
            }
            for (uint i = 0u; i < 4u; i++) {
                for (uint j = 0u; j < 4u; j++) {
                    acc[i][j] = fma(av[i], bw[j], acc[i][j]);
                }
            }
        }
        barrier();
    }

    for (uint i = 0u; i < 4u; i++) {
        uint row = row0 + ty + 16u * i;
        if (row >= m) {
            continue;
        }
        for (uint j = 0u; j < 4u; j++) {
            uint col = col0 + tx + 16u * j;
            if (col < n) {
                store_c(z, row, col, acc[i][j]);
            }
        }
    }
}

// The column tile of a workgroup when the column tiles are spread over x and z (x is capped
// at 65535 workgroups, and a batch-folded convolution can have more column tiles).
uint column_tile_xz() {
    return gl_WorkGroupID.z * gl_NumWorkGroups.x + gl_WorkGroupID.x;
}

#endif
