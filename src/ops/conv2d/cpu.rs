//! im2col + GEMM convolution. Images are independent, so the batch is cut into groups of
//! consecutive images and the groups are spread over rayon. The images of a group share one
//! GEMM (their im2col matrices side by side), so the small deep layers (4x4, 2x2 outputs)
//! still get GEMMs wide enough to amortise packing. The grouping is a function of the
//! geometry only; the weight gradient is summed per group and the group partials are added
//! in order, so no result depends on the thread count.

use super::ConvGeom;
use crate::ops::gemm::cpu::gemm_uninit;
use crate::ops::gemm::kernel::NR;
use crate::ops::gemm::{CLayout, InPlaceB, MatRef, PackB, gemm_nt_acc, sgemm};
use crate::ops::min_items;
use rayon::prelude::*;

/// GEMM columns (images x output pixels) a group aims for.
const GROUP_COLS: usize = 512;
/// Groups come in multiples of this, so that 1, 2 or 4 threads share them evenly.
const GROUP_QUANTUM: usize = 4;

/// Image ranges of the groups: consecutive, sizes differing by at most one. Depends only on
/// (n, output pixels per image).
pub fn groups(n: usize, hw_o: usize) -> Vec<std::ops::Range<usize>> {
    if n == 0 {
        return Vec::new();
    }
    let want = (n * hw_o)
        .div_ceil(GROUP_COLS)
        .max(1)
        .next_multiple_of(GROUP_QUANTUM);
    let count = want.min(n);
    (0..count)
        .map(|i| i * n / count..(i + 1) * n / count)
        .collect()
}

/// col[(ci*kh + ky)*kw + kx, oy*wo + ox] = x[ci, oy*s + ky - pad, ox*s + kx - pad] (or 0),
/// with row stride `ld` (>= ho*wo: several images side by side).
pub fn im2col(g: &ConvGeom, x: &[f32], col: &mut [f32], ld: usize) {
    let hw_o = g.ho * g.wo;
    if is_same_stride1(g) {
        return im2col_same(g, x, col, ld);
    }
    for ci in 0..g.cin {
        let plane = &x[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = (ci * g.kh + ky) * g.kw + kx;
                let dst = &mut col[row * ld..row * ld + hw_o];
                for oy in 0..g.ho {
                    let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                    let drow = &mut dst[oy * g.wo..(oy + 1) * g.wo];
                    if iy < 0 || iy >= g.h as isize {
                        drow.fill(0.0);
                        continue;
                    }
                    let srow = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                    if g.stride == 1 {
                        // contiguous run: ix = ox + kx - pad
                        let off = kx as isize - g.pad as isize;
                        let lo = (-off).clamp(0, g.wo as isize) as usize;
                        let hi = (g.w as isize - off).clamp(0, g.wo as isize) as usize;
                        drow[..lo].fill(0.0);
                        if hi > lo {
                            let s0 = (lo as isize + off) as usize;
                            drow[lo..hi].copy_from_slice(&srow[s0..s0 + (hi - lo)]);
                        }
                        drow[hi.max(lo)..].fill(0.0);
                    } else {
                        for (ox, d) in drow.iter_mut().enumerate() {
                            let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                            *d = if ix >= 0 && ix < g.w as isize {
                                srow[ix as usize]
                            } else {
                                0.0
                            };
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of im2col (row stride `ld`): dx[ci, iy, ix] += col[...] for every window that
/// read it (`dx` comes in zeroed). The rows are added in order, so the sum order is fixed.
/// `col` is scratch: entries that fall outside the image may be zeroed.
pub fn col2im(g: &ConvGeom, col: &mut [f32], ld: usize, dx: &mut [f32]) {
    let hw_o = g.ho * g.wo;
    if is_same_stride1(g) {
        return col2im_same(g, col, ld, dx);
    }
    for ci in 0..g.cin {
        let plane = &mut dx[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = (ci * g.kh + ky) * g.kw + kx;
                let src = &col[row * ld..row * ld + hw_o];
                for oy in 0..g.ho {
                    let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let drow = &mut plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                    let srow = &src[oy * g.wo..(oy + 1) * g.wo];
                    if g.stride == 1 {
                        // contiguous run: ix = ox + kx - pad
                        let off = kx as isize - g.pad as isize;
                        let lo = (-off).clamp(0, g.wo as isize) as usize;
                        let hi = (g.w as isize - off).clamp(0, g.wo as isize) as usize;
                        if hi > lo {
                            let d0 = (lo as isize + off) as usize;
                            for (d, s) in drow[d0..d0 + (hi - lo)].iter_mut().zip(&srow[lo..hi]) {
                                *d += *s;
                            }
                        }
                    } else {
                        for (ox, s) in srow.iter().enumerate() {
                            let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                            if ix >= 0 && ix < g.w as isize {
                                drow[ix as usize] += *s;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Stride 1 and output size = input size ("same" padding, e.g. 3x3 pad 1): the im2col row of
/// (ci, ky, kx) is then the input plane shifted by (ky - pad) rows and (kx - pad) columns,
/// one contiguous copy plus zeroed borders instead of a copy per output row.
fn is_same_stride1(g: &ConvGeom) -> bool {
    g.stride == 1 && g.ho == g.h && g.wo == g.w && g.kh <= 2 * g.pad + 1 && g.kw <= 2 * g.pad + 1
}

/// For the (ky, kx) tap of a same/stride-1 conv: the shift (dy, dx), the valid output rows
/// [r0, r1) and columns [c0, c1) (those whose tap reads inside the image).
#[inline]
fn tap(g: &ConvGeom, ky: usize, kx: usize) -> (isize, isize, usize, usize, usize, usize) {
    let (dy, dx) = (ky as isize - g.pad as isize, kx as isize - g.pad as isize);
    let clip = |d: isize, n: usize| {
        (
            (-d).clamp(0, n as isize) as usize,
            (n as isize - d).clamp(0, n as isize) as usize,
        )
    };
    let (r0, r1) = clip(dy, g.h);
    let (c0, c1) = clip(dx, g.w);
    (dy, dx, r0, r1, c0, c1)
}

/// Zeroes columns [0, c0) and [c1, w) of the rows of `m` (row length w). Column by column
/// (strided): per row these are 1-2 values, which as slice fills became a memset call each.
#[inline]
fn zero_columns(m: &mut [f32], w: usize, c0: usize, c1: usize) {
    for cx in (0..c0).chain(c1..w) {
        for v in m[cx..].iter_mut().step_by(w) {
            *v = 0.0;
        }
    }
}

fn im2col_same(g: &ConvGeom, x: &[f32], col: &mut [f32], ld: usize) {
    let (h, w) = (g.h, g.w);
    let hw = h * w;
    for ci in 0..g.cin {
        let plane = &x[ci * hw..(ci + 1) * hw];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = (ci * g.kh + ky) * g.kw + kx;
                let dst = &mut col[row * ld..row * ld + hw];
                let (dy, dx, r0, r1, c0, c1) = tap(g, ky, kx);
                dst[..r0 * w].fill(0.0);
                dst[r1 * w..].fill(0.0);
                if r1 <= r0 || c1 <= c0 {
                    dst[r0 * w..r1 * w].fill(0.0);
                    continue;
                }
                // one shifted copy of the valid rows; the entries that wrapped around a row
                // end (invalid columns) are zeroed after
                let (i0, i1) = (r0 * w + c0, (r1 - 1) * w + c1);
                let s0 = (i0 as isize + dy * w as isize + dx) as usize;
                dst[i0..i1].copy_from_slice(&plane[s0..s0 + (i1 - i0)]);
                zero_columns(&mut dst[r0 * w..r1 * w], w, c0, c1);
            }
        }
    }
}

fn col2im_same(g: &ConvGeom, col: &mut [f32], ld: usize, dxs: &mut [f32]) {
    let (h, w) = (g.h, g.w);
    let hw = h * w;
    for ci in 0..g.cin {
        let plane = &mut dxs[ci * hw..(ci + 1) * hw];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = (ci * g.kh + ky) * g.kw + kx;
                let src = &mut col[row * ld..row * ld + hw];
                let (dy, dx, r0, r1, c0, c1) = tap(g, ky, kx);
                if r1 <= r0 || c1 <= c0 {
                    continue;
                }
                // zero the invalid columns of the source so one flat add over the valid
                // rows puts nothing where a row wrapped around
                zero_columns(&mut src[r0 * w..r1 * w], w, c0, c1);
                let (i0, i1) = (r0 * w + c0, (r1 - 1) * w + c1);
                let d0 = (i0 as isize + dy * w as isize + dx) as usize;
                for (d, s) in plane[d0..d0 + (i1 - i0)].iter_mut().zip(&src[i0..i1]) {
                    *d += *s;
                }
            }
        }
    }
}

/// Cuts `v` into the per-group slices (`per` values per image).
fn split_groups<'a>(
    mut v: &'a mut [f32],
    groups: &[std::ops::Range<usize>],
    per: usize,
) -> Vec<&'a mut [f32]> {
    let mut out = Vec::with_capacity(groups.len());
    for r in groups {
        let (a, b) = std::mem::take(&mut v).split_at_mut(r.len() * per);
        out.push(a);
        v = b;
    }
    out
}

/// Grows a scratch buffer to at least `n` values (contents unspecified).
/// The slice starts on a 64-byte boundary, so rows whose length is a multiple of 16 floats
/// (a column matrix over 16k pixels) are read by the kernels' 32- and 64-byte loads without
/// straddling cache lines (measured on the weight-gradient kernel: 99 -> 107 GFLOP/s).
/// Callers write what they read: the offset may change when the buffer grows.
fn scratch(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    const LINE: usize = 16;
    if buf.len() < n + LINE {
        buf.resize(n + LINE, 0.0);
    }
    let off = buf.as_ptr().align_offset(64).min(LINE);
    &mut buf[off..off + n]
}

/// Per-thread scratch (column matrix, gathered dy or y, dcol), kept across calls: rayon's
/// workers live for the whole run, so the buffers are allocated and faulted in once instead
/// of once per conv call.
type Scratch = [Vec<f32>; 3];
thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = const { std::cell::RefCell::new([Vec::new(), Vec::new(), Vec::new()]) };
}

fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        // re-entered on this thread (not expected: nothing inside spawns rayon work)
        Err(_) => f(&mut Default::default()),
    })
}

/// The column matrix of images `r` of `x`, side by side: [k, r.len() * hw_o].
fn group_col<'a>(
    g: &ConvGeom,
    x: &[f32],
    r: &std::ops::Range<usize>,
    buf: &'a mut Vec<f32>,
) -> &'a [f32] {
    let (in_sz, hw_o) = (g.cin * g.h * g.w, g.ho * g.wo);
    let ld = r.len() * hw_o;
    let col = scratch(buf, g.k() * ld);
    for (i, n) in r.clone().enumerate() {
        im2col(g, &x[n * in_sz..(n + 1) * in_sz], &mut col[i * hw_o..], ld);
    }
    col
}

pub fn forward(g: &ConvGeom, x: &[f32], w: &[f32]) -> Vec<f32> {
    forward_with(g, x, w, None, direct_enabled())
}

/// relu(conv(x, w) + bias[co]), the bias and ReLU applied to each output tile in the GEMM's
/// epilogue instead of in a second pass over y.
pub fn forward_bias_relu(g: &ConvGeom, x: &[f32], w: &[f32], bias: &[f32]) -> Vec<f32> {
    forward_with(g, x, w, Some(bias), direct_enabled())
}

/// y = conv(x, w) for the whole batch as one GEMM: W [Cout, k] times the implicit im2col
/// matrix [k, images x pixels], packed straight from a zero-padded copy of x (`Im2colB`) and
/// written straight into y's NCHW images (`CLayout::images`), which are never zeroed first
/// (`gemm_uninit` writes each element once). The GEMM cuts the pixel columns over the
/// threads. With `bias`, relu(conv + bias[co]) fused into the GEMM's epilogue; with `direct`,
/// the padded input is read in place where it can be: both ways give the same bits, since
/// the kernels sum the same products in the same order.
pub(super) fn forward_with(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    direct: bool,
) -> Vec<f32> {
    let wm = MatRef::rm(w, g.cout, g.k());
    let lay = CLayout::images(g.cout, g.ho * g.wo, g.n);
    // SAFETY: the layout covers all n x cout x ho x wo elements (`gemm_uninit` checks it),
    // and the GEMM writes every element it covers.
    unsafe {
        crate::ops::written_by(g.n * g.cout * g.ho * g.wo, |y| {
            with_padded(g, x, direct, |b| {
                gemm_uninit(1.0, &wm, b, y, lay, true, bias)
            })
        })
    }
}

/// Whether `forward_with` reads this geometry's input in place (`Im2colB::in_place_b`).
#[cfg(test)]
pub(super) fn direct_applies(g: &ConvGeom) -> bool {
    let x = vec![0.0f32; g.n * g.cin * g.h * g.w];
    with_padded(g, &x, true, |b| b.in_place_b().is_some())
}

/// Direct convolution (`Im2colB::in_place_b`) unless FRACTALNET_NO_DIRECT_CONV is set (for
/// side-by-side timing against the packed path), looked up once.
fn direct_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("FRACTALNET_NO_DIRECT_CONV").is_none())
}

/// Runs `f` on the implicit im2col of `x`: padded into per-thread scratch first (unless the
/// convolution has no padding), so that every tap of every pixel is in bounds.
fn with_padded<R>(g: &ConvGeom, x: &[f32], direct: bool, f: impl FnOnce(&Im2colB<'_>) -> R) -> R {
    let (hp, wp) = (g.h + 2 * g.pad, g.w + 2 * g.pad);
    let mut koff = Vec::with_capacity(g.k());
    for ci in 0..g.cin {
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                koff.push((ci * hp + ky) * wp + kx);
            }
        }
    }
    if g.pad == 0 {
        return f(&Im2colB {
            g,
            xp: x,
            hp,
            wp,
            koff: &koff,
            in_place: direct,
        });
    }
    with_scratch(|[_, _, padbuf]| {
        let planes = g.n * g.cin;
        let xp = scratch(padbuf, planes * hp * wp);
        xp.par_chunks_mut(hp * wp)
            .zip(x.par_chunks(g.h * g.w))
            .with_min_len(min_items(hp * wp))
            .for_each(|(dst, src)| {
                // Zeros stored by a plain loop: a `fill` of the few values of a pad row or
                // a pad column was a `memset` call per plane or per row (3% of a training
                // step at batch 50). `black_box` keeps LLVM from turning the loop back into
                // one.
                let zero = std::hint::black_box(0.0f32);
                let (top, rest) = dst.split_at_mut(g.pad * wp);
                let (body, bottom) = rest.split_at_mut(g.h * wp);
                for v in top.iter_mut().chain(bottom) {
                    *v = zero;
                }
                for (drow, srow) in body.chunks_exact_mut(wp).zip(src.chunks_exact(g.w)) {
                    let (left, rest) = drow.split_at_mut(g.pad);
                    let (mid, right) = rest.split_at_mut(g.w);
                    for v in left.iter_mut().chain(right) {
                        *v = zero;
                    }
                    mid.copy_from_slice(srow);
                }
            });
        f(&Im2colB {
            g,
            xp,
            hp,
            wp,
            koff: &koff,
            in_place: direct,
        })
    })
}

/// The im2col matrix of a batch, never materialised: B[(ci, ky, kx), (n, oy, ox)] =
/// xp[n, ci, oy * s + ky, ox * s + kx] with xp the zero-padded input. A micro-panel of NR
/// consecutive output pixels is a few runs along output rows (one when a row holds the
/// whole panel); for each k a run is one copy from one padded input row (a strided gather
/// when the stride is not 1), at the offset `koff[k]` of its tap.
pub(super) struct Im2colB<'a> {
    g: &'a ConvGeom,
    xp: &'a [f32],
    hp: usize,
    wp: usize,
    koff: &'a [usize],
    /// Whether `in_place` may offer direct reads (tests turn it off to compare both paths).
    in_place: bool,
}

impl PackB for Im2colB<'_> {
    fn depth(&self) -> usize {
        self.g.k()
    }
    /// Direct convolution: at stride 1, the NR output pixels of a micro-panel that lie in one
    /// output row read, for each tap k, NR consecutive values of one padded input row. When
    /// output rows are whole micro-panels (Wo a multiple of NR: the 32x32 and 16x16 layers),
    /// the kernels read them there, and no im2col value is ever copied.
    fn in_place_b(&self) -> Option<InPlaceB<'_>> {
        let g = self.g;
        if g.stride != 1 || !self.in_place {
            return None;
        }
        let hw_o = g.ho * g.wo;
        let row = if g.is_pointwise() { hw_o } else { g.wo };
        InPlaceB::new(
            self.xp,
            self.koff,
            self.cols(),
            (hw_o, g.cin * self.hp * self.wp),
            (row, self.wp),
        )
    }
    fn cols(&self) -> usize {
        self.g.n * self.g.ho * self.g.wo
    }
    fn pack_b(&self, p0: usize, kc: usize, j0: usize, nc: usize, out: &mut [f32]) {
        let g = self.g;
        let (hw_o, img) = (g.ho * g.wo, g.cin * self.hp * self.wp);
        // a pointwise conv reads an image's pixels in order: runs span its rows
        let row = if g.is_pointwise() { hw_o } else { g.wo };
        for (q, panel) in out
            .chunks_exact_mut(kc * NR)
            .take(nc.div_ceil(NR))
            .enumerate()
        {
            let jb = j0 + q * NR;
            let w = NR.min(j0 + nc - jb);
            // (first column in the panel, length, offset of the run's first tap-(0,0) pixel)
            let mut runs = [(0usize, 0usize, 0usize); NR];
            let (mut nr, mut j) = (0, jb);
            while j < jb + w {
                let (n, rem) = (j / hw_o, j % hw_o);
                let len = (row - rem % row).min(jb + w - j);
                let (oy, ox) = (rem / g.wo, rem % g.wo);
                runs[nr] = (
                    j - jb,
                    len,
                    n * img + oy * g.stride * self.wp + ox * g.stride,
                );
                nr += 1;
                j += len;
            }
            let runs = &runs[..nr];
            let koff = &self.koff[p0..p0 + kc];
            let xp = self.xp;
            // equal runs (every row length FractalNet has) get a loop with a constant copy
            // length; anything else the general one
            let equal = runs.iter().all(|r| r.1 == runs[0].1);
            match (g.stride, equal, runs[0].1) {
                (1, true, 16) => pack_runs::<16>(panel, koff, runs, xp),
                (1, true, 8) => pack_runs::<8>(panel, koff, runs, xp),
                (1, true, 4) => pack_runs::<4>(panel, koff, runs, xp),
                (1, true, 2) => pack_runs::<2>(panel, koff, runs, xp),
                _ => {
                    for (dst, &ko) in panel.chunks_exact_mut(NR).zip(koff) {
                        for &(c0, len, base) in runs {
                            let src = &xp[base + ko..];
                            for (t, v) in dst[c0..c0 + len].iter_mut().enumerate() {
                                *v = src[t * g.stride];
                            }
                        }
                    }
                }
            }
            if w < NR {
                for dst in panel.chunks_exact_mut(NR) {
                    dst[w..].fill(0.0);
                }
            }
        }
    }
}

/// Runs all of length L: for each k, each run is one L-float copy from the padded input.
#[inline]
fn pack_runs<const L: usize>(
    panel: &mut [f32],
    koff: &[usize],
    runs: &[(usize, usize, usize)],
    xp: &[f32],
) {
    for (dst, &ko) in panel.chunks_exact_mut(NR).zip(koff) {
        for &(c0, _, base) in runs {
            let s = base + ko;
            dst[c0..c0 + L].copy_from_slice(&xp[s..s + L]);
        }
    }
}

/// A stride-1 convolution's input gradient is itself a stride-1 convolution: of dy with the
/// kernel flipped in space and transposed in channels, padded by k - 1 - pad. That costs one
/// GEMM of Cin x (Cout k k) x pixels straight into dx, instead of a (Cin k k)-row column
/// gradient and a col2im pass over it.
fn transposed_geom(g: &ConvGeom) -> Option<ConvGeom> {
    (g.stride == 1 && g.kh == g.kw && g.pad < g.kh).then(|| ConvGeom {
        n: g.n,
        cin: g.cout,
        h: g.ho,
        w: g.wo,
        cout: g.cin,
        kh: g.kh,
        kw: g.kw,
        ho: g.h,
        wo: g.w,
        stride: 1,
        pad: g.kh - 1 - g.pad,
    })
}

/// w' [Cin, Cout, kh, kw] with w'[ci, co, ky, kx] = w[co, ci, kh-1-ky, kw-1-kx].
fn flip_transpose(g: &ConvGeom, w: &[f32]) -> Vec<f32> {
    let (kh, kw) = (g.kh, g.kw);
    let mut out = vec![0.0f32; w.len()];
    for co in 0..g.cout {
        for ci in 0..g.cin {
            let src = &w[(co * g.cin + ci) * kh * kw..][..kh * kw];
            let dst = &mut out[(ci * g.cout + co) * kh * kw..][..kh * kw];
            for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                *d = *s;
            }
        }
    }
    out
}

/// Returns (dx if need_dx, dw).
pub fn backward(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    need_dx: bool,
) -> (Option<Vec<f32>>, Vec<f32>) {
    let (in_sz, out_sz, k, hw_o) = (g.cin * g.h * g.w, g.cout * g.ho * g.wo, g.k(), g.ho * g.wo);
    let wsz = g.cout * k;
    let groups = groups(g.n, hw_o);
    let transposed = if need_dx { transposed_geom(g) } else { None };
    let mut dx = match &transposed {
        Some(tg) => forward_with(tg, dy, &flip_transpose(g, w), None, direct_enabled()),
        // strided: col2im adds each group's column gradient into zeros
        None if need_dx => vec![0.0f32; g.n * in_sz],
        None => Vec::new(),
    };
    let col2im_dx = need_dx && transposed.is_none();
    let wt = MatRef::rm_t(w, g.cout, k); // [k, cout]

    // Each group of images: its dw partial, and (strided convolutions) its images' dx.
    let mut dx_groups: Vec<Option<&mut [f32]>> = if col2im_dx {
        split_groups(&mut dx, &groups, in_sz)
            .into_iter()
            .map(Some)
            .collect()
    } else {
        Vec::new()
    };
    dx_groups.resize_with(groups.len(), || None);
    let partials: Vec<Vec<f32>> = dx_groups
        .into_par_iter()
        .zip(groups.par_iter())
        .map(|(dxg, r)| {
            with_scratch(|[colbuf, dybuf, dcolbuf]| {
                let ld = r.len() * hw_o;
                let col = group_col(g, x, r, colbuf);
                // dy of the group as [cout, images x pixels]
                let dyg: &[f32] = if r.len() == 1 {
                    &dy[r.start * out_sz..r.end * out_sz]
                } else {
                    let t = scratch(dybuf, g.cout * ld);
                    for (i, n) in r.clone().enumerate() {
                        let dyn_ = &dy[n * out_sz..(n + 1) * out_sz];
                        for (co, src) in dyn_.chunks_exact(hw_o).enumerate() {
                            t[co * ld + i * hw_o..co * ld + (i + 1) * hw_o].copy_from_slice(src);
                        }
                    }
                    t
                };
                // dw [cout, k] = dy [cout, ld] col^T: dot products of contiguous rows
                let mut dw = vec![0.0f32; wsz];
                gemm_nt_acc(g.cout, k, ld, dyg, ld, col, ld, &mut dw, k);
                if let Some(dxg) = dxg {
                    let dcol = scratch(dcolbuf, k * ld);
                    sgemm(1.0, wt, MatRef::rm(dyg, g.cout, ld), 0.0, dcol);
                    for (i, dxn) in dxg.chunks_exact_mut(in_sz).enumerate() {
                        col2im(g, &mut dcol[i * hw_o..], ld, dxn);
                    }
                }
                dw
            })
        })
        .collect();
    let mut dw = vec![0.0f32; wsz];
    for p in &partials {
        crate::ops::elementwise::cpu::add_assign(&mut dw, p);
    }
    (if need_dx { Some(dx) } else { None }, dw)
}
