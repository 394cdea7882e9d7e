//! Winograd F(2x2, 3x3) and F(4x4, 3x3) convolution (Lavin & Gray, 2016) for inference:
//! 3x3 kernels, stride 1, padding 1.
//!
//! Described below for F(2x2, 3x3); F(4x4, 3x3) is the same with 4x4 output tiles from 6x6
//! patches and 36 transformed positions: 36 multiply-adds per 16 outputs and channel pair
//! instead of 144 (4x fewer), and transforms that cost about half as much per output, at a
//! larger rounding error (the transforms scale by up to 8 and 1/24).
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
//! Which tile a layer gets is decided when its weights are prepared, from the map size the
//! plan gives it (`Tile::for_map`: F(4x4, 3x3) on maps of 4x4 and more); whether it runs at
//! all, per call, by `pays`.
//!
//! Tiles are processed in chunks small enough that a chunk's transformed input and its
//! products stay in L2: two chunks go to the calling thread and the spinning helper
//! (`ops::team`), more over rayon. A chunk's tiles are always transformed, multiplied and
//! summed in the same way, so the result does not depend on the thread count.

use super::ConvGeom;
use crate::ops::gemm::kernel::{self, APanel, BPanel, MR, NR, Store};
use rayon::prelude::*;
use std::borrow::Cow;

/// Floats of transformed input plus products a chunk may hold (256 KiB: half a Zen 3 L2).
const CHUNK_FLOATS: usize = 1 << 16;
/// The most tiles in one chunk.
const MAX_CHUNK_TILES: usize = 256;

/// The output tile: F(2x2, 3x3) or F(4x4, 3x3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tile {
    F2,
    F4,
}

impl Tile {
    /// Output tile side.
    pub fn m(self) -> usize {
        match self {
            Tile::F2 => 2,
            Tile::F4 => 4,
        }
    }
    /// Input patch side (m + 2).
    fn alpha(self) -> usize {
        self.m() + 2
    }
    /// Transformed positions per tile.
    fn xi(self) -> usize {
        self.alpha() * self.alpha()
    }
    /// The tile a layer's weights are prepared for, by its map [H, W]: F(4x4, 3x3) on maps
    /// of 4x4 and more (4x fewer multiplies, transforms half as costly per output), F(2x2,
    /// 3x3) on smaller ones, where a 4x4 tile would mostly cover padding. `cargo bench
    /// --bench winograd`, batch 100, direct time / Winograd time, F(2x2) against F(4x4):
    /// 32 -> 32 on 16x16 0.96 / 1.60, 64 -> 64 on 8x8 1.53 / 2.33, 128 -> 128 on 4x4
    /// 1.78 / 2.45, on 2x2 2.42 / 1.16.
    pub fn for_map([h, w]: [usize; 2]) -> Tile {
        if h.min(w) >= 4 { Tile::F4 } else { Tile::F2 }
    }
}

/// Whether a convolution is one this module computes: 3x3, stride 1, padding 1.
pub fn applies(g: &ConvGeom) -> bool {
    g.kh == 3 && g.kw == 3 && g.stride == 1 && g.pad == 1 && g.ho == g.h && g.wo == g.w
}

/// Whether Winograd with `tile` is expected to beat the direct convolution on this
/// geometry: the GEMM columns (tiles, rounded up to whole 16-column micro-panels per chunk)
/// times the transformed positions against the direct convolution's columns (pixels,
/// rounded likewise) times 9. At batch 1 a 2x2 or 4x4 map is a single partial micro-panel
/// either way, and the direct one is cheaper. And the transforms must be cheap next to the
/// GEMMs: per tile, the input transform costs in proportion to Cin and the output transform
/// to Cout, the GEMMs to Cin x Cout, so their share goes as 1/Cin + 1/Cout.
/// `cargo bench --bench winograd` (batch 100, 2 threads), F(2x2, 3x3): 16 -> 16 on 32x32
/// maps ran at 0.6-0.7x the direct convolution and 32 -> 32 on 16x16 at 0.87-1.0x; 32 -> 64
/// on 8x8 at 1.1-1.2x, 64 -> 64 at 1.4x, 128 -> 128 on 2x2 at 2.1-2.7x: it runs where
/// 1/Cin + 1/Cout <= 3/64. F(4x4, 3x3): see `F4_MIN_CHANNELS`.
pub fn pays(g: &ConvGeom, tile: Tile) -> bool {
    let cheap_transforms = match tile {
        Tile::F2 => 64 * (g.cin + g.cout) <= 3 * g.cin * g.cout,
        Tile::F4 => g.cin.min(g.cout) >= F4_MIN_CHANNELS,
    };
    if !applies(g) || g.n == 0 || !cheap_transforms {
        return false;
    }
    let tiles = g.n * tiles_per_image(g, tile);
    let tb = chunk_tiles(g, tile, tiles);
    let wino_cols = tiles / tb * tb + (tiles % tb).next_multiple_of(NR);
    let direct_cols = (g.n * g.h * g.w).next_multiple_of(NR);
    tile.xi() * wino_cols < 9 * direct_cols
}

/// F(4x4, 3x3) needs at least this many input and output channels to pay: `cargo bench
/// --bench winograd`, batch 100: 3 -> 16 on 32x32 ran at 0.91x the direct convolution,
/// 16 -> 16 at 1.09x, 16 -> 32 on 16x16 at 1.26x, 32 -> 32 at 1.60x.
const F4_MIN_CHANNELS: usize = 16;

fn tiles_per_image(g: &ConvGeom, tile: Tile) -> usize {
    g.h.div_ceil(tile.m()) * g.w.div_ceil(tile.m())
}

/// Tiles per chunk: a multiple of NR that keeps a chunk's V and M within `CHUNK_FLOATS`,
/// no more than the layer has (rounded up to a micro-panel), and at most half of it when
/// it has two panels or more, so that two threads share even a batch-1 layer.
fn chunk_tiles(g: &ConvGeom, tile: Tile, tiles: usize) -> usize {
    let fit = CHUNK_FLOATS / (tile.xi() * (g.cin + g.cout)).max(1);
    let half = tiles.div_ceil(2).next_multiple_of(NR);
    (fit / NR * NR).clamp(NR, MAX_CHUNK_TILES).min(half)
}

/// A layer's kernels transformed: U[xi][co][ci] = (G g[co][ci] G^T)[xi], computed once per
/// weight tensor (an inference layer keeps it beside its weights).
#[derive(Clone, Debug)]
pub struct Weights<'a> {
    tile: Tile,
    cout: usize,
    cin: usize,
    /// [xi][ceil(cout / MR)][cin][MR]: per position, the microkernel's packed A panels (rows
    /// past cout are zero).
    u: Cow<'a, [f32]>,
}

/// Winograd for folded inference layers unless FRACTALNET_NO_WINOGRAD is set (side-by-side
/// timing against the direct kernel), looked up once.
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("FRACTALNET_NO_WINOGRAD").is_none())
}

fn prepared_len(tile: Tile, cout: usize, cin: usize) -> usize {
    tile.xi() * cout.div_ceil(MR) * MR * cin
}

/// G for F(2x2, 3x3) (4 x 3) and F(4x4, 3x3) (6 x 3), row by row.
const G2: [[f32; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];
const G4: [[f32; 3]; 6] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

impl Weights<'static> {
    /// From OIHW 3x3 weights `w` [cout, cin, 3, 3].
    pub fn new(w: &[f32], cout: usize, cin: usize, tile: Tile) -> Self {
        assert_eq!(
            w.len(),
            cout * cin * 9,
            "winograd weights: [cout, cin, 3, 3]"
        );
        let g: &[[f32; 3]] = match tile {
            Tile::F2 => &G2,
            Tile::F4 => &G4,
        };
        let a = tile.alpha();
        let panels = cout.div_ceil(MR);
        let mut u = vec![0.0f32; prepared_len(tile, cout, cin)];
        for co in 0..cout {
            for ci in 0..cin {
                let k = &w[(co * cin + ci) * 9..][..9];
                // G k G^T, in f64 so that the transform adds no rounding of its own beyond
                // the final one
                let gk: Vec<[f64; 3]> = g
                    .iter()
                    .map(|gr| {
                        std::array::from_fn(|c| {
                            (0..3).map(|t| gr[t] as f64 * k[t * 3 + c] as f64).sum()
                        })
                    })
                    .collect();
                for (r, gkr) in gk.iter().enumerate() {
                    for (c, gc) in g.iter().enumerate() {
                        let v: f64 = (0..3).map(|t| gkr[t] * gc[t] as f64).sum();
                        let xi = r * a + c;
                        u[((xi * panels + co / MR) * cin + ci) * MR + co % MR] = v as f32;
                    }
                }
            }
        }
        Weights {
            tile,
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
    /// Reads back what `into_prepared` gave, for a [cout, cin, 3, 3] weight (the tile is
    /// told by the length); None if the length fits neither.
    pub fn from_prepared(u: &'a [f32], cout: usize, cin: usize) -> Option<Self> {
        let tile = [Tile::F2, Tile::F4]
            .into_iter()
            .find(|&t| u.len() == prepared_len(t, cout, cin))?;
        Some(Weights {
            tile,
            cout,
            cin,
            u: Cow::Borrowed(u),
        })
    }
    pub fn tile(&self) -> Tile {
        self.tile
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
    assert_eq!(y.len(), g.n * g.cout * g.h * g.w, "winograd: output size");
    forward_to(g, x, wt, bias, YPtr(y.as_mut_ptr()));
}

/// `forward` into a new tensor, which is never zeroed first: every value is written once
/// (zeroing it took 7-10% of a batch-100 column's time).
pub fn forward_new(g: &ConvGeom, x: &[f32], wt: &Weights, bias: Option<&[f32]>) -> Vec<f32> {
    let n = g.n * g.cout * g.h * g.w;
    let mut y: Vec<f32> = Vec::with_capacity(n);
    forward_to(
        g,
        x,
        wt,
        bias,
        YPtr(y.spare_capacity_mut().as_mut_ptr().cast::<f32>()),
    );
    // SAFETY: `forward_to` wrote all n values (each output of each channel of each image
    // belongs to exactly one tile, and every tile is stored; or the cin == 0 fill), through
    // the raw pointer, without reading any.
    unsafe { y.set_len(n) };
    y
}

/// The body of `forward`: `y` addresses n * cout * h * w writable floats, which are only
/// written (each exactly once), never read.
fn forward_to(g: &ConvGeom, x: &[f32], wt: &Weights, bias: Option<&[f32]>, y: YPtr) {
    assert!(applies(g), "winograd: 3x3 stride-1 pad-1 convolutions only");
    assert!(
        wt.cout == g.cout && wt.cin == g.cin,
        "winograd: weights for another layer"
    );
    assert_eq!(x.len(), g.n * g.cin * g.h * g.w, "winograd: input size");
    if let Some(b) = bias {
        assert_eq!(b.len(), g.cout, "winograd: one bias per output channel");
    }
    let tile = wt.tile;
    let tiles = g.n * tiles_per_image(g, tile);
    if tiles == 0 || g.cout == 0 {
        return;
    }
    if g.cin == 0 {
        let hw = g.h * g.w;
        for plane in 0..g.n * g.cout {
            let b = bias.map_or(0.0, |b| b[plane % g.cout].max(0.0));
            for i in 0..hw {
                // SAFETY: plane * hw + i < n * cout * h * w, the floats `y` addresses.
                unsafe { y.0.add(plane * hw + i).write(b) };
            }
        }
        return;
    }
    let tb = chunk_tiles(g, tile, tiles);
    let yp = y;
    let work = |c: usize| {
        let t0 = c * tb;
        let len = tb.min(tiles - t0);
        let run = |v: &mut Vec<f32>, m: &mut Vec<f32>| match tile {
            Tile::F2 => chunk_for_cpu::<4, 2>(g, x, wt, bias, t0, len, v, m, yp),
            Tile::F4 => chunk_for_cpu::<6, 4>(g, x, wt, bias, t0, len, v, m, yp),
        };
        SCRATCH.with(|s| match s.try_borrow_mut() {
            Ok(mut s) => {
                let (v, m) = &mut *s;
                run(v, m)
            }
            Err(_) => run(&mut Vec::new(), &mut Vec::new()),
        })
    };
    let chunks = tiles.div_ceil(tb);
    if chunks == 1 || rayon::current_num_threads() == 1 {
        (0..chunks).for_each(work);
    } else if chunks == 2 {
        // a batch-1 layer: the calling thread and the spinning helper, not a rayon hand-off
        crate::ops::team::join(|| work(0), || work(1));
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

/// 16 lanes (tiles) of one value.
type Lanes = [f32; NR];

/// B^T for F(2x2, 3x3) applied to one column of 4 values, 16 tiles at once:
/// B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]].
#[inline(always)]
fn bt4(d: &[Lanes; 4]) -> [Lanes; 4] {
    let mut o = [[0.0f32; NR]; 4];
    for l in 0..NR {
        let (d0, d1, d2, d3) = (d[0][l], d[1][l], d[2][l], d[3][l]);
        o[0][l] = d0 - d2;
        o[1][l] = d1 + d2;
        o[2][l] = d2 - d1;
        o[3][l] = d1 - d3;
    }
    o
}

/// A^T for F(2x2, 3x3): [[1, 1, 1, 0], [0, 1, -1, -1]].
#[inline(always)]
fn at4(m: &[Lanes; 4]) -> [Lanes; 2] {
    let mut o = [[0.0f32; NR]; 2];
    for l in 0..NR {
        let (m0, m1, m2, m3) = (m[0][l], m[1][l], m[2][l], m[3][l]);
        o[0][l] = m0 + m1 + m2;
        o[1][l] = m1 - m2 - m3;
    }
    o
}

/// B^T for F(4x4, 3x3) (points 0, 1, -1, 2, -2 and infinity), 16 tiles at once:
/// rows [4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
/// [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1].
#[inline(always)]
fn bt6(d: &[Lanes; 6]) -> [Lanes; 6] {
    let mut o = [[0.0f32; NR]; 6];
    for l in 0..NR {
        let (d0, d1, d2, d3, d4, d5) = (d[0][l], d[1][l], d[2][l], d[3][l], d[4][l], d[5][l]);
        o[0][l] = 4.0 * d0 - 5.0 * d2 + d4;
        o[1][l] = -4.0 * (d1 + d2) + d3 + d4;
        o[2][l] = 4.0 * (d1 - d2) - d3 + d4;
        o[3][l] = 2.0 * (d3 - d1) - d2 + d4;
        o[4][l] = 2.0 * (d1 - d3) - d2 + d4;
        o[5][l] = 4.0 * d1 - 5.0 * d3 + d5;
    }
    o
}

/// A^T for F(4x4, 3x3): rows [1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
/// [0, 1, -1, 8, -8, 1].
#[inline(always)]
fn at6(m: &[Lanes; 6]) -> [Lanes; 4] {
    let mut o = [[0.0f32; NR]; 4];
    for l in 0..NR {
        let (m0, m1, m2, m3, m4, m5) = (m[0][l], m[1][l], m[2][l], m[3][l], m[4][l], m[5][l]);
        let (p12, d12, p34, d34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
        o[0][l] = m0 + p12 + p34;
        o[1][l] = d12 + 2.0 * d34;
        o[2][l] = p12 + 4.0 * p34;
        o[3][l] = d12 + 8.0 * d34 + m5;
    }
    o
}

/// `chunk` with the transforms of tile side A, compiled for AVX2 + FMA where the CPU has
/// them (8-wide instead of SSE's 4: the transforms are half of a batch-100 column's time).
/// The arithmetic is the same operation by operation (no contraction into FMAs), so the
/// bits do not depend on the instruction set.
#[allow(clippy::too_many_arguments)]
fn chunk_for_cpu<const A: usize, const M: usize>(
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
    #[cfg(target_arch = "x86_64")]
    match kernel::isa() {
        // SAFETY: Avx512 is only chosen when the CPU has AVX-512F, AVX2 and FMA.
        kernel::Isa::Avx512 => {
            return unsafe { chunk_avx512::<A, M>(g, x, wt, bias, t0, len, vbuf, mbuf, y) };
        }
        // SAFETY: Avx2Fma is only chosen when the CPU has AVX2 and FMA.
        kernel::Isa::Avx2Fma => {
            return unsafe { chunk_avx2::<A, M>(g, x, wt, bias, t0, len, vbuf, mbuf, y) };
        }
        kernel::Isa::Portable => {}
    }
    chunk_any::<A, M>(g, x, wt, bias, t0, len, vbuf, mbuf, y)
}

/// As `chunk_avx2`, with 512-bit vectors: a 16-lane transform row is one register.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn chunk_avx512<const A: usize, const M: usize>(
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
    chunk_any::<A, M>(g, x, wt, bias, t0, len, vbuf, mbuf, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn chunk_avx2<const A: usize, const M: usize>(
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
    chunk_any::<A, M>(g, x, wt, bias, t0, len, vbuf, mbuf, y)
}

/// The tile's 1-D transforms picked by its patch side, inlined into the caller.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn chunk_any<const A: usize, const M: usize>(
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
    // A = 4 or 6 (the only instances); the casts re-type the fixed-size transforms
    let bt = |d: &[Lanes; A]| -> [Lanes; A] {
        let mut o = [[0.0f32; NR]; A];
        if A == 4 {
            let d4: &[Lanes; 4] = d[..].try_into().unwrap_or(&[[0.0; NR]; 4]);
            o[..4].copy_from_slice(&bt4(d4));
        } else {
            let d6: &[Lanes; 6] = d[..].try_into().unwrap_or(&[[0.0; NR]; 6]);
            o[..6].copy_from_slice(&bt6(d6));
        }
        o
    };
    let at = |m: &[Lanes; A]| -> [Lanes; M] {
        let mut o = [[0.0f32; NR]; M];
        if A == 4 {
            let m4: &[Lanes; 4] = m[..].try_into().unwrap_or(&[[0.0; NR]; 4]);
            o[..2].copy_from_slice(&at4(m4));
        } else {
            let m6: &[Lanes; 6] = m[..].try_into().unwrap_or(&[[0.0; NR]; 6]);
            o[..4].copy_from_slice(&at6(m6));
        }
        o
    };
    chunk::<A, M>(g, x, wt, bias, t0, len, vbuf, mbuf, y, bt, at)
}

/// B^T d B for one channel of one panel of 16 patches, stored into V at panel q, channel ci:
/// first down the columns (e = B^T d), then along the rows (e B).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn transform_in<const A: usize>(
    d: &[[Lanes; A]; A],
    e: &mut [[Lanes; A]; A],
    v: &mut [f32],
    q: usize,
    ci: usize,
    cin: usize,
    cols: usize,
    bt: &impl Fn(&[Lanes; A]) -> [Lanes; A],
) {
    for j in 0..A {
        let col: [Lanes; A] = std::array::from_fn(|i| d[i][j]);
        for (i, ei) in bt(&col).into_iter().enumerate() {
            e[i][j] = ei;
        }
    }
    let base = q * cin * NR + ci * NR;
    for (i, ei) in e.iter().enumerate() {
        for (j, oj) in bt(ei).iter().enumerate() {
            v[(i * A + j) * cin * cols + base..][..NR].copy_from_slice(oj);
        }
    }
}

/// The input patches of a panel of 16 tiles read with AVX-512 masked gathers.
#[cfg(target_arch = "x86_64")]
mod gather {
    use super::{Lanes, NR};
    use std::arch::x86_64::*;

    /// Per lane, where its patch starts in x (channel 0), and which lanes may read each
    /// patch row and column: inside the image, and a tile of the chunk.
    pub struct Panel {
        base: [i32; NR],
        rows: [u16; 8],
        cols: [u16; 8],
        /// per lane, the patch columns inside its image (bit k: column k)
        lane_cols: [u8; NR],
    }

    impl Panel {
        /// None when an offset does not fit an i32 or the patch is wider than 8.
        pub fn new(
            tiles: &[(usize, isize, isize, bool)],
            image: usize,
            [h, w]: [usize; 2],
            side: usize,
        ) -> Option<Panel> {
            if side > 8 || tiles.len() != NR {
                return None;
            }
            let mut p = Panel {
                base: [0; NR],
                rows: [0; 8],
                cols: [0; 8],
                lane_cols: [0; NR],
            };
            for (lane, &(n, y0, x0, used)) in tiles.iter().enumerate() {
                let b = (n as i64) * (image as i64) + y0 as i64 * w as i64 + x0 as i64;
                p.base[lane] = i32::try_from(b).ok()?;
                for k in 0..side {
                    let (iy, ix) = (y0 + k as isize, x0 + k as isize);
                    if used && iy >= 0 && (iy as usize) < h {
                        p.rows[k] |= 1 << lane;
                    }
                    if used && ix >= 0 && (ix as usize) < w {
                        p.cols[k] |= 1 << lane;
                        p.lane_cols[lane] |= 1 << k;
                    }
                }
            }
            Some(p)
        }

        /// d[i][j][lane] = x[base[lane] + chan + i * w + j] where row i and column j are
        /// inside the lane's image, else 0.
        ///
        /// # Safety
        /// The CPU has AVX-512F; every such index (unmasked) is inside x, and x.len() fits
        /// an i32.
        #[target_feature(enable = "avx512f")]
        pub unsafe fn gather<const A: usize>(
            &self,
            x: &[f32],
            chan: usize,
            w: usize,
            d: &mut [[Lanes; A]; A],
        ) {
            // SAFETY (whole body): the contract; masked-off lanes read nothing.
            unsafe {
                let base = _mm512_add_epi32(
                    _mm512_loadu_si512(self.base.as_ptr().cast()),
                    _mm512_set1_epi32(chan as i32),
                );
                for (i, di) in d.iter_mut().enumerate() {
                    let row = _mm512_add_epi32(base, _mm512_set1_epi32((i * w) as i32));
                    for (j, dij) in di.iter_mut().enumerate() {
                        let idx = _mm512_add_epi32(row, _mm512_set1_epi32(j as i32));
                        let v = _mm512_mask_i32gather_ps::<4>(
                            _mm512_setzero_ps(),
                            self.rows[i] & self.cols[j],
                            idx,
                            x.as_ptr(),
                        );
                        _mm512_storeu_ps(dij.as_mut_ptr(), v);
                    }
                }
            }
        }

        /// The same as `gather`, by rows: each lane's patch row is one masked load of 8
        /// floats (the columns outside its image read nothing), and the 16 rows are
        /// transposed into the 16-lane vectors of each column (two 8 x 8 transposes). For
        /// CPUs whose gathers are slow (AMD Zen 4).
        ///
        /// # Safety
        /// As `gather`; also AVX-512VL.
        #[target_feature(enable = "avx512f,avx512vl,avx2")]
        pub unsafe fn gather_rows<const A: usize>(
            &self,
            x: &[f32],
            chan: usize,
            w: usize,
            d: &mut [[Lanes; A]; A],
        ) {
            // SAFETY (whole body): the contract; a row of a lane is read only when it is
            // inside the lane's image, and then only its columns inside the image (the
            // mask): those addresses are pixels of x. The address of a masked-off column
            // (x0 = -1) is formed with wrapping_offset and never read.
            unsafe {
                let xp = x.as_ptr();
                for (i, di) in d.iter_mut().enumerate() {
                    let mut r = [_mm256_setzero_ps(); NR];
                    for (lane, rl) in r.iter_mut().enumerate() {
                        if self.rows[i] >> lane & 1 == 1 {
                            let off = self.base[lane] as isize + (chan + i * w) as isize;
                            *rl = _mm256_maskz_loadu_ps(
                                self.lane_cols[lane],
                                xp.wrapping_offset(off),
                            );
                        }
                    }
                    let lo = transpose8(&r[..8]);
                    let hi = transpose8(&r[8..]);
                    for (j, dij) in di.iter_mut().enumerate() {
                        _mm256_storeu_ps(dij.as_mut_ptr(), lo[j]);
                        _mm256_storeu_ps(dij.as_mut_ptr().add(8), hi[j]);
                    }
                }
            }
        }
    }

    /// out[j][k] = r[k][j]: an 8 x 8 transpose of 8 vectors.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn transpose8(r: &[__m256]) -> [__m256; 8] {
        let t = |a: usize, b: usize| {
            (
                _mm256_unpacklo_ps(r[a], r[b]),
                _mm256_unpackhi_ps(r[a], r[b]),
            )
        };
        let (t0, t1) = t(0, 1);
        let (t2, t3) = t(2, 3);
        let (t4, t5) = t(4, 5);
        let (t6, t7) = t(6, 7);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ]
    }
}

/// Tiles t0..t0 + len: transform the input, A*A GEMMs, transform back into y. `A` is the
/// patch side, `M` the output tile side, `bt` and `at` the 1-D transforms.
// the transforms index several arrays by the same position, as the formulas do
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
fn chunk<const A: usize, const M: usize>(
    g: &ConvGeom,
    x: &[f32],
    wt: &Weights,
    bias: Option<&[f32]>,
    t0: usize,
    len: usize,
    vbuf: &mut Vec<f32>,
    mbuf: &mut Vec<f32>,
    y: YPtr,
    bt: impl Fn(&[Lanes; A]) -> [Lanes; A],
    at: impl Fn(&[Lanes; A]) -> [Lanes; M],
) {
    let xin = A * A;
    let (cin, cout) = (g.cin, g.cout);
    let cols = len.next_multiple_of(NR);
    let v = grow(vbuf, xin * cin * cols);
    // M[xi] [ceil(cout / MR) * MR][cols]: whole MR-row tiles, the rows past cout unused
    let rows = cout.div_ceil(MR) * MR;
    let m = grow(mbuf, xin * rows * cols);
    let tw = g.w.div_ceil(M);
    let per_img = g.h.div_ceil(M) * tw;
    let (h, w) = (g.h as isize, g.w as isize);

    // where each tile's input patch starts (image, row, column; the corner may lie in the
    // padding) and whether it is a tile of the chunk or a filler column of the last panel
    let mut tiles_at = Vec::with_capacity(cols);
    for tl in 0..cols {
        let t = t0 + tl.min(len - 1);
        let (n, r) = (t / per_img, t % per_img);
        let (y0, x0) = ((M * (r / tw)) as isize - 1, (M * (r % tw)) as isize - 1);
        tiles_at.push((n, y0, x0, tl < len));
    }
    let hw = g.h * g.w;

    // V[xi] in micro-panel order [cols / NR][cin][NR]: per channel and panel, the 16 tiles'
    // patches are gathered lane by lane, then transformed as 16-lane vectors
    // the per-panel temporaries live across the loops: zeroing them per panel and channel
    // (a memset each) cost more than their arithmetic; `d` is re-zeroed per panel since
    // only some lanes and taps are written, `e` is overwritten in full
    let mut d = [[[0.0f32; NR]; A]; A];
    let mut e = [[[0.0f32; NR]; A]; A];
    // AVX-512: each (i, j) of a panel's 16 patches is one masked gather (lanes outside the
    // image or unused read nothing and hold 0), not 16 scalar copies
    #[cfg(target_arch = "x86_64")]
    let gathers: Option<Vec<gather::Panel>> = (kernel::isa() == kernel::Isa::Avx512)
        .then(|| {
            tiles_at
                .chunks_exact(NR)
                .map(|p| gather::Panel::new(p, cin * hw, [g.h, g.w], A))
                .collect::<Option<Vec<_>>>()
        })
        .flatten()
        .filter(|_| x.len() <= i32::MAX as usize);
    #[cfg(target_arch = "x86_64")]
    let by_rows = kernel::halves_512();
    for ci in 0..cin {
        for (q, panel) in tiles_at.chunks_exact(NR).enumerate() {
            #[cfg(target_arch = "x86_64")]
            if let Some(gp) = &gathers {
                // SAFETY: Avx512 was found on this CPU, and AVX-512VL too where by_rows
                // (`kernel::halves_512` checks it); every unmasked index is a pixel of image
                // n, channel ci, inside x (`Panel::new`), and x.len() fits an i32. (By rows
                // and transposes where gathers are slow: the same values.)
                unsafe {
                    if by_rows {
                        gp[q].gather_rows::<A>(x, ci * hw, g.w, &mut d)
                    } else {
                        gp[q].gather::<A>(x, ci * hw, g.w, &mut d)
                    }
                };
                transform_in(&d, &mut e, v, q, ci, cin, cols, &bt);
                continue;
            }
            for di in d.iter_mut().flatten() {
                *di = [0.0; NR];
            }
            for (lane, &(n, y0, x0, used)) in panel.iter().enumerate() {
                if !used {
                    continue;
                }
                let plane = &x[(n * cin + ci) * hw..][..hw];
                if y0 >= 0 && x0 >= 0 && y0 + A as isize <= h && x0 + A as isize <= w {
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
            transform_in(&d, &mut e, v, q, ci, cin, cols, &bt);
        }
    }

    let isa = kernel::isa();
    for xi in 0..xin {
        let u = &wt.u[xi * rows * cin..][..rows * cin];
        let v = &v[xi * cin * cols..][..cin * cols];
        let m = &mut m[xi * rows * cols..][..rows * cols];
        let panels = cols / NR;
        let step = kernel::panels_per_call(isa).min(2);
        let mut q = 0;
        while q < panels {
            // two panels at once where the ISA gains by it (`kernel::tiles`, same bits)
            let two = step == 2 && q + 1 < panels;
            let b = |q: usize| BPanel::packed(v[q * cin * NR..][..cin * NR].as_ptr());
            for r in 0..rows / MR {
                let a = APanel::packed(u[r * cin * MR..][..cin * MR].as_ptr());
                let mut c = |q: usize| m[r * MR * cols + q * NR..].as_mut_ptr();
                // SAFETY: the A panel is cin x MR packed floats and each B panel cin x NR
                // (both sliced above); C's MR rows of NR floats, `cols` apart, start inside
                // `m` at row r * MR, column q * NR: the last one ends at (r * MR + MR - 1) *
                // cols + q * NR + NR <= rows * cols (q < panels).
                unsafe {
                    if two {
                        kernel::tiles::<2>(
                            isa,
                            cin,
                            a,
                            [b(q), b(q + 1)],
                            [c(q), c(q + 1)],
                            cols,
                            1.0,
                            Store::Overwrite,
                            std::ptr::null(),
                        )
                    } else {
                        kernel::tile(
                            isa,
                            cin,
                            a,
                            b(q),
                            c(q),
                            cols,
                            1.0,
                            Store::Overwrite,
                            std::ptr::null(),
                        )
                    }
                };
            }
            q += if two { 2 } else { 1 };
        }
    }

    // A^T M A, 16 tiles at a time; then bias and ReLU, stored clipped at the image's edges
    let mut st = [[[0.0f32; NR]; A]; M];
    let mut out = [[[0.0f32; NR]; M]; M];
    for co in 0..cout {
        let b = bias.map(|b| b[co]);
        for (q, panel) in tiles_at.chunks_exact(NR).enumerate() {
            let mv = |xi: usize| -> Lanes {
                m[(xi * rows + co) * cols + q * NR..][..NR]
                    .try_into()
                    .unwrap_or([0.0; NR])
            };
            // s = A^T M (M rows of A values), then out = s A
            let s = &mut st;
            for k in 0..A {
                let col: [Lanes; A] = std::array::from_fn(|i| mv(i * A + k));
                for (i, si) in at(&col).into_iter().enumerate() {
                    s[i][k] = si;
                }
            }
            for i in 0..M {
                out[i] = at(&s[i]);
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
                for (i, oi) in out.iter().enumerate() {
                    if oy + i >= g.h {
                        break;
                    }
                    for (j, oij) in oi.iter().enumerate() {
                        if ox + j >= g.w {
                            break;
                        }
                        // SAFETY: (n, co, oy + i, ox + j) is inside y (n < N, co < Cout, the
                        // position checked against H and W), and only this tile writes it.
                        unsafe { y.0.add(base + (oy + i) * g.w + ox + j).write(oij[lane]) };
                    }
                }
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::{Lanes, NR, gather};

    /// The masked gathers read exactly what the scalar gather reads: patches inside the
    /// image, 0 in the padding and in unused lanes; for tiles of two images, on every
    /// border, with a short last panel.
    #[test]
    #[allow(clippy::needless_range_loop)] // (i, j) index the patch, as the formulas do
    fn masked_gathers_read_the_scalar_patches() {
        if !is_x86_feature_detected!("avx512f") {
            return; // nothing to compare on this CPU (the scalar path is the one used)
        }
        const A: usize = 6;
        let (cin, h, w) = (3, 7, 9);
        let x: Vec<f32> = (0..2 * cin * h * w).map(|i| i as f32 + 0.5).collect();
        // tiles of side 4 over a 7x9 map: 2 x 3 per image; lanes 12.. unused
        let mut tiles = Vec::new();
        for lane in 0..NR {
            let t = lane.min(11);
            let (n, r) = (t / 6, t % 6);
            tiles.push((
                n,
                4 * (r / 3) as isize - 1,
                4 * (r % 3) as isize - 1,
                lane < 12,
            ));
        }
        let panel = gather::Panel::new(&tiles, cin * h * w, [h, w], A).expect("fits");
        for ci in 0..cin {
            let mut d = [[[f32::NAN; NR]; A]; A];
            // SAFETY: this CPU has AVX-512F (checked), unmasked indices are pixels of x.
            let mut d2 = [[[f32::NAN; NR]; A]; A];
            // SAFETY: this CPU has AVX-512F (checked), unmasked indices are pixels of x.
            unsafe { panel.gather::<A>(&x, ci * h * w, w, &mut d) };
            if is_x86_feature_detected!("avx512vl") {
                // SAFETY: as above, and AVX-512VL checked.
                unsafe { panel.gather_rows::<A>(&x, ci * h * w, w, &mut d2) };
                for (a, b) in d
                    .iter()
                    .flatten()
                    .flatten()
                    .zip(d2.iter().flatten().flatten())
                {
                    assert_eq!(a.to_bits(), b.to_bits(), "gather_rows, channel {ci}");
                }
            }
            for (lane, &(n, y0, x0, used)) in tiles.iter().enumerate() {
                for i in 0..A {
                    for j in 0..A {
                        let (iy, ix) = (y0 + i as isize, x0 + j as isize);
                        let inside = iy >= 0 && iy < h as isize && ix >= 0 && ix < w as isize;
                        let want = if used && inside {
                            x[((n * cin + ci) * h + iy as usize) * w + ix as usize]
                        } else {
                            0.0
                        };
                        let got: Lanes = d[i][j];
                        assert_eq!(
                            got[lane].to_bits(),
                            want.to_bits(),
                            "channel {ci} lane {lane} ({i}, {j})"
                        );
                    }
                }
            }
        }
    }
}
