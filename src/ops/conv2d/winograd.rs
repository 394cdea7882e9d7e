//! Winograd F(2x2, 3x3) convolution (Lavin & Gray, 2016) for inference: 3x3 kernels,
//! stride 1, padding 1.
//!
//! Each 2x2 block of outputs ("tile") comes from a 4x4 patch of the zero-padded input. With
//! V = B^T d B (the patch transformed), U = G g G^T (the kernel transformed, once per weight
//! tensor) and M = sum over input channels of U .* V (elementwise in the 4x4 transformed
//! domain), the tile is A^T M A. The sum over channels is 16 independent GEMMs, one per
//! transformed position xi: M[xi] [Cout, tiles] = U[xi] [Cout, Cin] V[xi] [Cin, tiles], which
//! run on the packed SGEMM's microkernel. That is 16 multiply-adds per tile and channel pair
//! instead of 36: 2.25x fewer. The rounding differs from the direct convolution (the
//! transforms add and subtract before multiplying), by a few ulps of the values summed; the
//! tests hold it to an f64 reference.
//!
//! Tiles are processed in chunks small enough that a chunk's transformed input and its 16
//! products stay in L2, chunk by chunk over rayon. A chunk's tiles are always transformed,
//! multiplied and summed in the same way, so the result does not depend on the thread count.

use super::ConvGeom;
use crate::ops::gemm::kernel::{self, APanel, BPanel, MR, NR, Store};
use rayon::prelude::*;
use std::borrow::Cow;

/// Transformed positions per tile (4 x 4).
const XI: usize = 16;
/// Floats of transformed input plus products a chunk may hold (256 KiB: half a Zen 3 L2).
const CHUNK_FLOATS: usize = 1 << 16;
/// The most tiles in one chunk (the GEMMs read U in place up to 256 columns).
const MAX_CHUNK_TILES: usize = 256;

/// Whether a convolution is one this module computes: 3x3, stride 1, padding 1.
pub fn applies(g: &ConvGeom) -> bool {
    g.kh == 3 && g.kw == 3 && g.stride == 1 && g.pad == 1 && g.ho == g.h && g.wo == g.w
}

/// Whether Winograd is expected to beat the direct convolution on this geometry: the GEMM
/// columns (tiles, rounded up to whole 16-column micro-panels per chunk) times 16 against
/// the direct convolution's columns (pixels, rounded likewise) times 9. At batch 1 a 2x2 or
/// 4x4 map is a single partial micro-panel either way, and the direct one is cheaper.
/// And the transforms must be cheap next to the GEMMs: per tile, the input transform costs
/// in proportion to Cin and the output transform to Cout, the GEMMs to Cin x Cout, so their
/// share goes as 1/Cin + 1/Cout. `cargo bench --bench winograd` (batch 100, 2 threads):
/// 16 -> 16 on 32x32 maps ran at 0.6-0.7x the direct convolution and 32 -> 32 on 16x16 at
/// 0.87-1.0x; 32 -> 64 on 8x8 at 1.1-1.2x, 64 -> 64 at 1.4x, 128 -> 128 on 2x2 at 2.1-2.7x.
/// So Winograd runs where 1/Cin + 1/Cout <= 3/64.
pub fn pays(g: &ConvGeom) -> bool {
    let cheap_transforms = 64 * (g.cin + g.cout) <= 3 * g.cin * g.cout;
    if !applies(g) || g.n == 0 || !cheap_transforms {
        return false;
    }
    let tiles = g.n * tiles_per_image(g);
    let tb = chunk_tiles(g, tiles);
    let wino_cols = tiles / tb * tb + (tiles % tb).next_multiple_of(NR);
    let direct_cols = (g.n * g.h * g.w).next_multiple_of(NR);
    XI * wino_cols < 9 * direct_cols
}

fn tiles_per_image(g: &ConvGeom) -> usize {
    g.h.div_ceil(2) * g.w.div_ceil(2)
}

/// Tiles per chunk: a multiple of NR that keeps a chunk's V and M within `CHUNK_FLOATS`,
/// no more than the layer has (rounded up to a micro-panel).
fn chunk_tiles(g: &ConvGeom, tiles: usize) -> usize {
    let fit = CHUNK_FLOATS / (XI * (g.cin + g.cout)).max(1);
    (fit / NR * NR)
        .clamp(NR, MAX_CHUNK_TILES)
        .min(tiles.next_multiple_of(NR))
}

/// A layer's kernels transformed: U[xi][co][ci] = (G g[co][ci] G^T)[xi], computed once per
/// weight tensor (an inference layer keeps it beside its weights).
#[derive(Clone, Debug)]
pub struct Weights<'a> {
    cout: usize,
    cin: usize,
    /// [XI][ceil(cout / MR)][cin][MR]: per position, the microkernel's packed A panels (rows
    /// past cout are zero).
    u: Cow<'a, [f32]>,
}

/// Winograd for folded inference layers unless FRACTALNET_NO_WINOGRAD is set (side-by-side
/// timing against the direct kernel), looked up once.
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("FRACTALNET_NO_WINOGRAD").is_none())
}

fn prepared_len(cout: usize, cin: usize) -> usize {
    XI * cout.div_ceil(MR) * MR * cin
}

impl Weights<'static> {
    /// From OIHW 3x3 weights `w` [cout, cin, 3, 3].
    // the loops index several arrays by the same transform position, as the formulas do
    #[allow(clippy::needless_range_loop)]
    pub fn new(w: &[f32], cout: usize, cin: usize) -> Self {
        assert_eq!(
            w.len(),
            cout * cin * 9,
            "winograd weights: [cout, cin, 3, 3]"
        );
        let panels = cout.div_ceil(MR);
        let mut u = vec![0.0f32; prepared_len(cout, cin)];
        for co in 0..cout {
            for ci in 0..cin {
                let k = &w[(co * cin + ci) * 9..][..9];
                // G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
                let g3 = |a: f32, b: f32, c: f32| [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
                let cols: [[f32; 4]; 3] = std::array::from_fn(|c| g3(k[c], k[3 + c], k[6 + c]));
                for r in 0..4 {
                    let row = g3(cols[0][r], cols[1][r], cols[2][r]);
                    for (c, v) in row.into_iter().enumerate() {
                        let xi = r * 4 + c;
                        u[((xi * panels + co / MR) * cin + ci) * MR + co % MR] = v;
                    }
                }
            }
        }
        Weights {
            cout,
            cin,
            u: Cow::Owned(u),
        }
    }
}

impl<'a> Weights<'a> {
    /// The transformed weights as one flat tensor (a layer's `Role::Prepared`).
    pub fn into_prepared(self) -> Vec<f32> {
        self.u.into_owned()
    }
    /// Reads back what `into_prepared` gave, for a [cout, cin, 3, 3] weight; None if the
    /// length does not fit.
    pub fn from_prepared(u: &'a [f32], cout: usize, cin: usize) -> Option<Self> {
        (u.len() == prepared_len(cout, cin)).then_some(Weights {
            cout,
            cin,
            u: Cow::Borrowed(u),
        })
    }
    pub fn cout(&self) -> usize {
        self.cout
    }
    pub fn cin(&self) -> usize {
        self.cin
    }
}

/// y's base pointer, shared by the chunks of one call: each chunk writes only the outputs of
/// its own tiles, and distinct tiles cover distinct outputs.
#[derive(Clone, Copy)]
struct YPtr(*mut f32);
// SAFETY: see the type's comment: concurrent writers never touch the same element.
unsafe impl Send for YPtr {}
// SAFETY: as above.
unsafe impl Sync for YPtr {}

thread_local! {
    static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// y [N, Cout, H, W] = conv(x, w) (+ bias, then ReLU, when `bias` is given), with `wt` the
/// transformed kernels of w. Every value of y is written.
pub fn forward(g: &ConvGeom, x: &[f32], wt: &Weights, bias: Option<&[f32]>, y: &mut [f32]) {
    assert!(applies(g), "winograd: 3x3 stride-1 pad-1 convolutions only");
    assert!(
        wt.cout == g.cout && wt.cin == g.cin,
        "winograd: weights for another layer"
    );
    assert_eq!(x.len(), g.n * g.cin * g.h * g.w, "winograd: input size");
    assert_eq!(y.len(), g.n * g.cout * g.h * g.w, "winograd: output size");
    if let Some(b) = bias {
        assert_eq!(b.len(), g.cout, "winograd: one bias per output channel");
    }
    let tiles = g.n * tiles_per_image(g);
    if tiles == 0 || g.cout == 0 {
        return;
    }
    if g.cin == 0 {
        for (co, plane) in y.chunks_exact_mut(g.h * g.w).enumerate() {
            let b = bias.map_or(0.0, |b| b[co % g.cout].max(0.0));
            plane.fill(b);
        }
        return;
    }
    let tb = chunk_tiles(g, tiles);
    let yp = YPtr(y.as_mut_ptr());
    let work = |c: usize| {
        let t0 = c * tb;
        let len = tb.min(tiles - t0);
        SCRATCH.with(|s| match s.try_borrow_mut() {
            Ok(mut s) => {
                let (v, m) = &mut *s;
                chunk(g, x, wt, bias, t0, len, v, m, yp)
            }
            Err(_) => chunk(
                g,
                x,
                wt,
                bias,
                t0,
                len,
                &mut Vec::new(),
                &mut Vec::new(),
                yp,
            ),
        })
    };
    let chunks = tiles.div_ceil(tb);
    // below about a millisecond of work a hand-off to another thread costs more than it saves
    if chunks == 1 || rayon::current_num_threads() == 1 {
        (0..chunks).for_each(work);
    } else {
        (0..chunks).into_par_iter().for_each(work);
    }
}

/// Grows per-thread scratch to at least `n` floats, at first straight to a chunk's full
/// budget: growing in steps, layer by layer, leaves freed blocks that make the allocator
/// trim and re-fault the pages of the layers' outputs (measured: 8x the page faults).
fn grow(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if buf.len() < n {
        buf.resize(n.max(CHUNK_FLOATS), 0.0);
    }
    &mut buf[..n]
}

/// Tiles t0..t0 + len: transform the input, 16 GEMMs, transform back into y.
// the transforms index several arrays by the same position, as the formulas do
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
fn chunk(
    g: &ConvGeom,
    x: &[f32],
    wt: &Weights,
    bias: Option<&[f32]>,
    t0: usize,
    len: usize,
    vbuf: &mut Vec<f32>,
    mbuf: &mut Vec<f32>,
    y: YPtr,
) {
    let (cin, cout) = (g.cin, g.cout);
    let cols = len.next_multiple_of(NR);
    let v = grow(vbuf, XI * cin * cols);
    // M[xi] [ceil(cout / MR) * MR][cols]: whole MR-row tiles, the rows past cout unused
    let rows = cout.div_ceil(MR) * MR;
    let m = grow(mbuf, XI * rows * cols);
    let (tw, per_img) = (g.w.div_ceil(2), tiles_per_image(g));
    let (h, w) = (g.h as isize, g.w as isize);

    // where each tile's 4x4 input patch starts in image 0, channel 0: (offset, whole patch
    // inside the image); and where its 2x2 outputs go
    let mut tiles_at = Vec::with_capacity(cols);
    for tl in 0..cols {
        let t = t0 + tl.min(len - 1);
        let (n, r) = (t / per_img, t % per_img);
        let (y0, x0) = (2 * (r / tw) as isize - 1, 2 * (r % tw) as isize - 1);
        tiles_at.push((n, y0, x0, tl < len));
    }
    let hw = g.h * g.w;

    // V[xi] in micro-panel order [cols / NR][cin][NR]: per channel and panel, the 16 tiles'
    // patches are gathered lane by lane, then transformed as 16-lane vectors
    for ci in 0..cin {
        for (q, panel) in tiles_at.chunks_exact(NR).enumerate() {
            let mut d = [[[0.0f32; NR]; 4]; 4];
            for (lane, &(n, y0, x0, used)) in panel.iter().enumerate() {
                if !used {
                    continue;
                }
                let plane = &x[(n * cin + ci) * hw..][..hw];
                if y0 >= 0 && x0 >= 0 && y0 + 4 <= h && x0 + 4 <= w {
                    for (i, di) in d.iter_mut().enumerate() {
                        let s = (y0 as usize + i) * g.w + x0 as usize;
                        for (j, dij) in di.iter_mut().enumerate() {
                            dij[lane] = plane[s + j];
                        }
                    }
                } else {
                    for (i, di) in d.iter_mut().enumerate() {
                        let iy = y0 + i as isize;
                        if iy < 0 || iy >= h {
                            continue;
                        }
                        for (j, dij) in di.iter_mut().enumerate() {
                            let ix = x0 + j as isize;
                            if ix >= 0 && ix < w {
                                dij[lane] = plane[iy as usize * g.w + ix as usize];
                            }
                        }
                    }
                }
            }
            // B^T d B, B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]:
            // first down the columns (e = B^T d), then along the rows (e B)
            let mut e = [[[0.0f32; NR]; 4]; 4];
            for j in 0..4 {
                for l in 0..NR {
                    let (d0, d1, d2, d3) = (d[0][j][l], d[1][j][l], d[2][j][l], d[3][j][l]);
                    e[0][j][l] = d0 - d2;
                    e[1][j][l] = d1 + d2;
                    e[2][j][l] = d2 - d1;
                    e[3][j][l] = d1 - d3;
                }
            }
            let base = q * cin * NR + ci * NR;
            for (i, ei) in e.iter().enumerate() {
                let mut o = [[0.0f32; NR]; 4];
                for l in 0..NR {
                    let (a0, a1, a2, a3) = (ei[0][l], ei[1][l], ei[2][l], ei[3][l]);
                    o[0][l] = a0 - a2;
                    o[1][l] = a1 + a2;
                    o[2][l] = a2 - a1;
                    o[3][l] = a1 - a3;
                }
                for (j, oj) in o.iter().enumerate() {
                    v[(i * 4 + j) * cin * cols + base..][..NR].copy_from_slice(oj);
                }
            }
        }
    }

    let isa = kernel::isa();
    for xi in 0..XI {
        let u = &wt.u[xi * rows * cin..][..rows * cin];
        let v = &v[xi * cin * cols..][..cin * cols];
        let m = &mut m[xi * rows * cols..][..rows * cols];
        for q in 0..cols / NR {
            let b = BPanel::packed(v[q * cin * NR..][..cin * NR].as_ptr());
            for r in 0..rows / MR {
                let a = APanel::packed(u[r * cin * MR..][..cin * MR].as_ptr());
                let c = m[r * MR * cols + q * NR..].as_mut_ptr();
                // SAFETY: the A panel is cin x MR packed floats and the B panel cin x NR
                // (both sliced above); C's MR rows of NR floats, `cols` apart, start inside
                // `m` at row r * MR, column q * NR: the last one ends at (r * MR + MR - 1) *
                // cols + q * NR + NR <= rows * cols.
                unsafe {
                    kernel::tile(
                        isa,
                        cin,
                        a,
                        b,
                        c,
                        cols,
                        1.0,
                        Store::Overwrite,
                        std::ptr::null(),
                    )
                };
            }
        }
    }

    // A^T M A, A^T = [[1, 1, 1, 0], [0, 1, -1, -1]], 16 tiles at a time; then bias and
    // ReLU, stored clipped at the image's edges
    for co in 0..cout {
        let b = bias.map(|b| b[co]);
        for (q, panel) in tiles_at.chunks_exact(NR).enumerate() {
            let mv = |xi: usize| -> &[f32] { &m[(xi * rows + co) * cols + q * NR..][..NR] };
            let mut s = [[[0.0f32; NR]; 4]; 2];
            for k in 0..4 {
                let (m0, m1, m2, m3) = (mv(k), mv(4 + k), mv(8 + k), mv(12 + k));
                for l in 0..NR {
                    s[0][k][l] = m0[l] + m1[l] + m2[l];
                    s[1][k][l] = m1[l] - m2[l] - m3[l];
                }
            }
            let mut out = [[[0.0f32; NR]; 2]; 2];
            for i in 0..2 {
                for l in 0..NR {
                    let (a0, a1, a2, a3) = (s[i][0][l], s[i][1][l], s[i][2][l], s[i][3][l]);
                    out[i][0][l] = a0 + a1 + a2;
                    out[i][1][l] = a1 - a2 - a3;
                }
                if let Some(b) = b {
                    for o in out[i].iter_mut() {
                        for val in o.iter_mut() {
                            *val = (*val + b).max(0.0);
                        }
                    }
                }
            }
            for (lane, &(n, y0, x0, used)) in panel.iter().enumerate() {
                if !used {
                    break;
                }
                let (oy, ox) = ((y0 + 1) as usize, (x0 + 1) as usize);
                let base = (n * cout + co) * hw;
                if oy + 2 <= g.h && ox + 2 <= g.w {
                    let o = base + oy * g.w + ox;
                    // SAFETY: the whole 2x2 block (n, co, oy..oy + 2, ox..ox + 2) is inside
                    // y (checked just above; n < N, co < Cout), and only this tile writes it.
                    unsafe {
                        *y.0.add(o) = out[0][0][lane];
                        *y.0.add(o + 1) = out[0][1][lane];
                        *y.0.add(o + g.w) = out[1][0][lane];
                        *y.0.add(o + g.w + 1) = out[1][1][lane];
                    }
                    continue;
                }
                for (i, oi) in out.iter().enumerate() {
                    if oy + i >= g.h {
                        continue;
                    }
                    for (j, oij) in oi.iter().enumerate() {
                        if ox + j < g.w {
                            // SAFETY: (n, co, oy + i, ox + j) is inside y (n < N, co < Cout,
                            // the position checked against H and W), and only this tile
                            // writes it.
                            unsafe { *y.0.add(base + (oy + i) * g.w + ox + j) = oij[lane] };
                        }
                    }
                }
            }
        }
    }
}
