//! The blocked driver (Goto/BLIS loop order) around the packing routines and microkernels.
//!
//! ```text
//! for jc in N by NC:            B block (KC x NC) packed once, in L3
//!   for pc in K by KC:
//!     for ic in M by MC:        A block (MC x KC) packed once, in L2
//!       for jr, ir:             one MR x NR tile: B micro-panel in L1, A streamed from L2
//! ```
//!
//! A parallel call cuts C into rectangles along M or N (never K), one per thread, each run
//! by the serial driver: every element of C is summed in the same order whatever the thread
//! count, so results are bit-identical on 1, 2 or 64 threads.

use super::kernel::{self, APanel, BPanel, Isa, MR, NR, Store, bias_relu};
use super::pack::{InPlaceB, PackA, PackB};
use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::ops::Range;

const KC: usize = 256;
const MC: usize = 144;
const NC: usize = 4096;
/// NC when all of M fits one A block: each packed B block is then used by that one block
/// right after packing, so it should stay in L2 rather than spill to L3.
const NC_ONE_A_BLOCK: usize = 256;
/// Below this many multiply-adds (about 0.2 ms on one core) a parallel call is cut in two for
/// the calling thread and the spinning helper of `ops::team`, not handed to rayon, whose
/// sleeping workers take about as long to wake as the work takes.
const PAR_MIN_MACS: usize = 1 << 23;
/// Below this many (a few microseconds) a parallel call stays on the calling thread.
const TEAM_MIN_MACS: usize = 1 << 17;
/// Without the helper: below this many a parallel call stays on the calling thread.
const RAYON_ONLY_MIN_MACS: usize = 1 << 20;

/// The helper thread for small products, unless FRACTALNET_NO_TEAM is set (side-by-side
/// timing against rayon alone), looked up once.
fn team_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("FRACTALNET_NO_TEAM").is_none())
}
/// Products with at most this many columns read a row-major A in place instead of packing
/// it: packing copies all of A, which costs as much as the arithmetic when each row of A
/// meets only a few columns of B (a convolution at batch 1 on 2x2..8x8 images).
const IN_PLACE_A_MAX_N: usize = 256;

/// A read-only strided matrix view: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: isize,
    pub cs: isize,
}

impl<'a> MatRef<'a> {
    /// A row-major `rows x cols` matrix.
    pub fn rm(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            rs: cols as isize,
            cs: 1,
        }
    }
    /// A row-major `rows x cols` matrix whose rows are `ld` apart.
    pub fn rm_ld(data: &'a [f32], rows: usize, cols: usize, ld: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            rs: ld as isize,
            cs: 1,
        }
    }
    /// The transpose of a row-major `rows x cols` matrix (a `cols x rows` view).
    pub fn rm_t(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows: cols,
            cols: rows,
            rs: 1,
            cs: cols as isize,
        }
    }
    pub(crate) fn span_ok(&self) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        let corners = [
            0,
            (self.rows as isize - 1) * self.rs,
            (self.cols as isize - 1) * self.cs,
            (self.rows as isize - 1) * self.rs + (self.cols as isize - 1) * self.cs,
        ];
        corners
            .iter()
            .all(|&o| o >= 0 && (o as usize) < self.data.len())
    }
}

/// Where C's elements live: (i, j) at `i * rs + (j / seg) * seg_stride + j % seg`.
///
/// A plain row-major matrix is one segment. A convolution over several images writes its
/// [Cout, images x pixels] product straight into NCHW: one segment per image (`seg` = pixels,
/// `rs` = pixels, `seg_stride` = Cout x pixels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CLayout {
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub seg: usize,
    pub seg_stride: usize,
}

impl CLayout {
    pub fn row_major(rows: usize, cols: usize) -> Self {
        Self::row_major_ld(rows, cols, cols)
    }
    pub fn row_major_ld(rows: usize, cols: usize, ld: usize) -> Self {
        CLayout {
            rows,
            cols,
            rs: ld,
            seg: cols.max(1),
            seg_stride: rows * ld,
        }
    }
    /// `images` NCHW outputs of [rows, hw] each, side by side as columns.
    pub fn images(rows: usize, hw: usize, images: usize) -> Self {
        CLayout {
            rows,
            cols: hw * images,
            rs: hw,
            seg: hw.max(1),
            seg_stride: rows * hw,
        }
    }
    #[inline]
    fn off(&self, i: usize, j: usize) -> usize {
        i * self.rs + (j / self.seg) * self.seg_stride + j % self.seg
    }
    /// Distinct (i, j) map to distinct offsets, all below `len`.
    fn valid_for(&self, len: usize) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        let rows_fit = self.rows == 1 || self.rs >= self.seg.min(self.cols);
        let segs_fit =
            self.cols <= self.seg || self.seg_stride >= (self.rows - 1) * self.rs + self.seg;
        rows_fit && segs_fit && self.off(self.rows - 1, self.cols - 1) < len
    }
}

/// c (row-major `m x n`, leading dimension n) = alpha * a b + beta * c, on the calling thread.
///
/// Panics only on a caller bug (dimension or span mismatch), never on user data: every op
/// validates shapes before it reaches here.
pub fn sgemm(alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: &mut [f32]) {
    assert!(a.span_ok() && b.span_ok(), "sgemm spans");
    let lay = CLayout::row_major(a.rows, b.cols);
    gemm(alpha, &a, &b, beta, c, lay, false);
}

/// As `sgemm`, with C cut into one rectangle per thread of rayon's pool.
pub fn sgemm_par(alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: &mut [f32]) {
    assert!(a.span_ok() && b.span_ok(), "sgemm spans");
    let lay = CLayout::row_major(a.rows, b.cols);
    gemm(alpha, &a, &b, beta, c, lay, true);
}

/// The general entry: C (laid out by `lay`) = alpha * A B + beta * C, with A and B any
/// packable operands (strided matrices, or a convolution's implicit im2col). With `par`,
/// large products are cut along M or N over rayon's pool.
pub fn gemm<A: PackA, B: PackB>(
    alpha: f32,
    a: &A,
    b: &B,
    beta: f32,
    c: &mut [f32],
    lay: CLayout,
    par: bool,
) {
    gemm_post(alpha, a, b, beta, c, lay, par, None)
}

/// `gemm` with beta 0, then C = max(C + bias[row], 0) (`kernel::bias_relu`) applied to each
/// tile in registers before it is stored (a convolution's bias and ReLU, fused): the values
/// of a separate pass over C, without that pass over memory.
#[allow(clippy::too_many_arguments)]
pub fn gemm_bias_relu<A: PackA, B: PackB>(
    alpha: f32,
    a: &A,
    b: &B,
    c: &mut [f32],
    lay: CLayout,
    par: bool,
    bias: &[f32],
) {
    assert_eq!(bias.len(), a.rows(), "gemm_bias_relu: one bias per row");
    gemm_post(alpha, a, b, 0.0, c, lay, par, Some(bias))
}

/// `gemm` (or `gemm_bias_relu` when `bias` is given) with beta 0 into memory that was never
/// initialised: every element of `c` is written exactly once, none is read, so the output
/// of a convolution needs no zeroing pass before the product lands in it.
///
/// Panics only on a caller bug: `lay` must cover `c` exactly (rows x cols elements, distinct
/// offsets inside `c`), so that after the call every element holds its value.
#[allow(clippy::too_many_arguments)]
pub fn gemm_uninit<A: PackA, B: PackB>(
    alpha: f32,
    a: &A,
    b: &B,
    c: &mut [MaybeUninit<f32>],
    lay: CLayout,
    par: bool,
    bias: Option<&[f32]>,
) {
    assert_eq!(
        lay.rows * lay.cols,
        c.len(),
        "gemm_uninit: C layout covers C"
    );
    if let Some(bias) = bias {
        assert_eq!(bias.len(), a.rows(), "gemm_uninit: one bias per row");
    }
    // SAFETY: `gemm_raw` checks the layout against `c.len()`, and with beta 0 it only writes
    // C's elements (never reads or forms references to them).
    unsafe {
        gemm_raw(
            alpha,
            a,
            b,
            0.0,
            (c.as_mut_ptr().cast::<f32>(), c.len()),
            lay,
            par,
            bias,
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn gemm_post<A: PackA, B: PackB>(
    alpha: f32,
    a: &A,
    b: &B,
    beta: f32,
    c: &mut [f32],
    lay: CLayout,
    par: bool,
    bias: Option<&[f32]>,
) {
    // SAFETY: `c` is initialised, writable memory of `c.len()` floats.
    unsafe { gemm_raw(alpha, a, b, beta, (c.as_mut_ptr(), c.len()), lay, par, bias) }
}

/// The driver, on C given as a pointer and a length.
///
/// # Safety
/// `c.0` must be valid for writes of `c.1` floats, and for reads too unless beta is 0; with
/// beta 0 the elements need not be initialised (they are only written, through pointers).
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_raw<A: PackA, B: PackB>(
    alpha: f32,
    a: &A,
    b: &B,
    beta: f32,
    (cptr, clen): (*mut f32, usize),
    lay: CLayout,
    par: bool,
    bias: Option<&[f32]>,
) {
    let (m, k, n) = (a.rows(), a.depth(), b.cols());
    assert_eq!(k, b.depth(), "gemm inner dimensions");
    assert!(
        lay.rows == m && lay.cols == n && lay.valid_for(clen),
        "gemm C layout {lay:?} for {m}x{n} in {clen} values"
    );
    if m == 0 || n == 0 {
        return;
    }
    if beta != 0.0 && beta != 1.0 || k == 0 || alpha == 0.0 {
        for i in 0..m {
            for j in 0..n {
                // SAFETY: (i, j) is inside C (valid_for); read only when beta is not 0.
                unsafe {
                    let p = cptr.add(lay.off(i, j));
                    let mut v = if beta == 0.0 { 0.0 } else { p.read() * beta };
                    if let (Some(bias), true) = (bias, k == 0 || alpha == 0.0) {
                        bias_relu(std::slice::from_mut(&mut v), bias[i]);
                    }
                    p.write(v);
                }
            }
        }
        if k == 0 || alpha == 0.0 {
            return;
        }
    }
    let store0 = if beta == 0.0 {
        Store::Overwrite
    } else {
        Store::Accumulate
    };
    let cp = CPtr {
        ptr: cptr,
        bias: bias.map_or(std::ptr::null(), |b| b.as_ptr()),
    };
    let isa = kernel::isa();
    let threads = rayon::current_num_threads();
    let macs = m * n * k;
    if !par || threads <= 1 || macs < TEAM_MIN_MACS {
        serial(isa, alpha, a, b, store0, cp, lay, 0..m, 0..n);
        return;
    }
    if !team_enabled() && macs < RAYON_ONLY_MIN_MACS {
        serial(isa, alpha, a, b, store0, cp, lay, 0..m, 0..n);
        return;
    }
    if macs < PAR_MIN_MACS && team_enabled() {
        // two halves: this thread and the spinning helper (`ops::team`), cut as below
        let (mt, nt) = (m.div_ceil(MR), n.div_ceil(NR));
        let (r0, r1) = if nt >= mt {
            let cut = (nt / 2 * NR).min(n);
            ((0..m, 0..cut), (0..m, cut..n))
        } else {
            let cut = (mt / 2 * MR).min(m);
            ((0..cut, 0..n), (cut..m, 0..n))
        };
        crate::ops::team::join(
            || {
                serial(
                    isa,
                    alpha,
                    a,
                    b,
                    store0,
                    cp,
                    lay,
                    r0.0.clone(),
                    r0.1.clone(),
                )
            },
            || {
                serial(
                    isa,
                    alpha,
                    a,
                    b,
                    store0,
                    cp,
                    lay,
                    r1.0.clone(),
                    r1.1.clone(),
                )
            },
        );
        return;
    }
    // One rectangle per thread along the dimension with more tiles, cut at tile edges so
    // that which tiles are partial never depends on the cut.
    let (mt, nt) = (m.div_ceil(MR), n.div_ceil(NR));
    let cuts = |tiles: usize, unit: usize, len: usize| -> Vec<Range<usize>> {
        let parts = threads.min(tiles);
        (0..parts)
            .map(|p| (p * tiles / parts * unit).min(len)..((p + 1) * tiles / parts * unit).min(len))
            .collect()
    };
    use rayon::prelude::*;
    let rects: Vec<(Range<usize>, Range<usize>)> = if nt >= mt {
        cuts(nt, NR, n).into_iter().map(|j| (0..m, j)).collect()
    } else {
        cuts(mt, MR, m).into_iter().map(|i| (i, 0..n)).collect()
    };
    rects
        .into_par_iter()
        .for_each(|(rows, cols)| serial(isa, alpha, a, b, store0, cp, lay, rows, cols));
}

/// C's base pointer, shared by the threads of one call. Each thread writes only the elements
/// of its own rectangle, and `CLayout::valid_for` (checked in `gemm`) makes distinct elements
/// distinct addresses.
#[derive(Clone, Copy)]
struct CPtr {
    ptr: *mut f32,
    /// One bias per row of C for the fused bias + ReLU epilogue, or null.
    bias: *const f32,
}
// SAFETY: see the type's comment: concurrent writers never touch the same element.
unsafe impl Send for CPtr {}
// SAFETY: as above.
unsafe impl Sync for CPtr {}

/// 64-byte aligned storage for packed panels.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

thread_local! {
    static PACK: RefCell<(Vec<Line>, Vec<Line>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

fn floats(buf: &mut Vec<Line>, n: usize) -> &mut [f32] {
    let lines = n.div_ceil(16);
    if buf.len() < lines {
        buf.resize(lines, Line([0.0; 16]));
    }
    // SAFETY: `Line` is 16 f32s with no padding (repr(C), size 64 = 16 * 4), so `lines`
    // Lines are `lines * 16` initialised f32s.
    unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<f32>(), n) }
}

#[allow(clippy::too_many_arguments)]
fn serial<A: PackA, B: PackB>(
    isa: Isa,
    alpha: f32,
    a: &A,
    b: &B,
    store0: Store,
    c: CPtr,
    lay: CLayout,
    rows: Range<usize>,
    cols: Range<usize>,
) {
    let k = a.depth();
    // B read where it lies (a direct convolution) skips packing altogether
    let b_in_place = b.in_place_b();
    let body = |(abuf, bbuf): &mut (Vec<Line>, Vec<Line>)| {
        let sweep = |ap: ASrc<'_>, bp: BSrc<'_>, (ic, mc), (jc, nc), kc, store, last| {
            macro_kernel(
                isa,
                kc,
                ap,
                bp,
                (ic, mc),
                (jc, nc),
                c,
                lay,
                alpha,
                store,
                last,
            )
        };
        fn block<'a, B: PackB>(
            b: &B,
            in_place: Option<InPlaceB<'a>>,
            bbuf: &'a mut Vec<Line>,
            (pc, kc): (usize, usize),
            (jc, nc): (usize, usize),
        ) -> BSrc<'a> {
            match in_place {
                Some(ib) => BSrc::InPlace(ib, pc),
                None => {
                    let bp = floats(bbuf, nc.div_ceil(NR) * NR * kc);
                    b.pack_b(pc, kc, jc, nc, bp);
                    BSrc::Packed(bp)
                }
            }
        }
        if rows.len() <= MC {
            // One A block: packed once per depth block (or read in place when B is narrow),
            // then every column block sweeps under it. Small packed B blocks stay in L2
            // between packing and use.
            let mc = rows.len();
            let in_place = a.in_place().filter(|_| cols.len() <= IN_PLACE_A_MAX_N);
            for pc in (0..k).step_by(KC) {
                let kc = KC.min(k - pc);
                let store = if pc == 0 { store0 } else { Store::Accumulate };
                let ap = match in_place {
                    None => {
                        let ap = floats(abuf, mc.div_ceil(MR) * MR * kc);
                        a.pack_a(rows.start, mc, pc, kc, ap);
                        ASrc::Packed(ap)
                    }
                    Some((data, lda)) => {
                        // whole panels are read in place; a partial last one is packed
                        let whole = mc / MR * MR;
                        let tail = floats(abuf, MR * kc);
                        if whole < mc {
                            a.pack_a(rows.start + whole, mc - whole, pc, kc, tail);
                        }
                        ASrc::InPlace {
                            data,
                            lda,
                            p0: pc,
                            tail,
                        }
                    }
                };
                for jc in cols.clone().step_by(NC_ONE_A_BLOCK) {
                    let nc = NC_ONE_A_BLOCK.min(cols.end - jc);
                    let bp = block(b, b_in_place, bbuf, (pc, kc), (jc, nc));
                    sweep(ap, bp, (rows.start, mc), (jc, nc), kc, store, pc + kc == k);
                }
            }
            return;
        }
        for jc in cols.clone().step_by(NC) {
            let nc = NC.min(cols.end - jc);
            for pc in (0..k).step_by(KC) {
                let kc = KC.min(k - pc);
                let store = if pc == 0 { store0 } else { Store::Accumulate };
                let bp = block(b, b_in_place, bbuf, (pc, kc), (jc, nc));
                for ic in rows.clone().step_by(MC) {
                    let mc = MC.min(rows.end - ic);
                    let ap = floats(abuf, mc.div_ceil(MR) * MR * kc);
                    a.pack_a(ic, mc, pc, kc, ap);
                    sweep(
                        ASrc::Packed(ap),
                        bp,
                        (ic, mc),
                        (jc, nc),
                        kc,
                        store,
                        pc + kc == k,
                    );
                }
            }
        }
    };
    PACK.with(|p| match p.try_borrow_mut() {
        Ok(mut bufs) => body(&mut bufs),
        Err(_) => body(&mut (Vec::new(), Vec::new())),
    });
}

/// Where the kernels read one A block from: packed panels, or a row-major matrix in place
/// (rows `lda` apart, depth from `p0`) with only its partial last panel packed (`tail`).
#[derive(Clone, Copy)]
enum ASrc<'a> {
    Packed(&'a [f32]),
    InPlace {
        data: &'a [f32],
        lda: usize,
        p0: usize,
        tail: &'a [f32],
    },
}

impl ASrc<'_> {
    /// Panel `r` of the block: rows ib..ib + h, depth kc.
    fn panel(&self, r: usize, ib: usize, h: usize, kc: usize) -> APanel {
        match *self {
            ASrc::Packed(ap) => APanel::packed(ap[r * kc * MR..(r + 1) * kc * MR].as_ptr()),
            ASrc::InPlace { tail, .. } if h < MR => APanel::packed(tail[..kc * MR].as_ptr()),
            ASrc::InPlace { data, lda, p0, .. } => {
                // rows ib..ib + MR are inside A (a whole panel) and p0 + kc <= A's depth, so
                // every (i, k) the kernel reads, (ib + i) * lda + p0 + k, is inside `data`
                // (`in_place` vouches for the view's span)
                assert!(
                    (ib + MR - 1) * lda + p0 + kc <= data.len(),
                    "in-place A panel span"
                );
                APanel {
                    ptr: data[ib * lda + p0..].as_ptr(),
                    rs: lda,
                    cs: 1,
                }
            }
        }
    }
}

/// Where the kernels read one B block from: packed panels, or B in place (depth from `p0`).
#[derive(Clone, Copy)]
enum BSrc<'a> {
    Packed(&'a [f32]),
    InPlace(InPlaceB<'a>, usize),
}

impl BSrc<'_> {
    /// Panel `q` of the block, columns jb..jb + NR, depth kc.
    fn panel(&self, q: usize, jb: usize, kc: usize) -> BPanel {
        match *self {
            BSrc::Packed(bp) => BPanel::packed(bp[q * kc * NR..(q + 1) * kc * NR].as_ptr()),
            BSrc::InPlace(ib, p0) => {
                // `InPlaceB::new` vouches for every read of a panel that starts at a multiple
                // of NR (every cut and block size here is one) with depth inside koff
                assert!(jb.is_multiple_of(NR), "in-place B panel at column {jb}");
                BPanel {
                    ptr: ib.data()[ib.base(jb)..].as_ptr(),
                    koff: ib.koff()[p0..p0 + kc].as_ptr(),
                }
            }
        }
    }
}

/// Every tile of one packed A block (rows ic.., mc) against one B block (columns jc.., nc):
/// the B micro-panel stays in L1 while the A micro-panels stream past.
#[allow(clippy::too_many_arguments)]
fn macro_kernel(
    isa: Isa,
    kc: usize,
    ap: ASrc<'_>,
    bp: BSrc<'_>,
    (ic, mc): (usize, usize),
    (jc, nc): (usize, usize),
    c: CPtr,
    lay: CLayout,
    alpha: f32,
    store: Store,
    last: bool,
) {
    let bias = (last && !c.bias.is_null()).then_some(c.bias);
    let panels = nc.div_ceil(NR);
    // columns jb..jb + w of panel q; whole and consecutive in C (one segment) or not
    let at = |q: usize| {
        let jb = jc + q * NR;
        let w = NR.min(jc + nc - jb);
        (jb, w, w == NR && jb % lay.seg + NR <= lay.seg)
    };
    let one_panel = |q: usize| {
        let (jb, w, contiguous) = at(q);
        let bpanel = bp.panel(q, jb, kc);
        for r in 0..mc.div_ceil(MR) {
            let ib = ic + r * MR;
            let h = MR.min(ic + mc - ib);
            let apanel = ap.panel(r, ib, h, kc);
            if contiguous && h == MR {
                // SAFETY: the tile's MR rows and NR columns are inside C (checked by
                // valid_for), and NR columns from jb are consecutive addresses (same segment).
                unsafe {
                    kernel::tile(
                        isa,
                        kc,
                        apanel,
                        bpanel,
                        c.ptr.add(lay.off(ib, jb)),
                        lay.rs,
                        alpha,
                        store,
                        // SAFETY: one bias per row of C (`gemm_bias_relu` checks it), and
                        // the tile's MR rows are rows of C
                        bias.map_or(std::ptr::null(), |b| b.add(ib)),
                    )
                };
            } else {
                edge_tile(
                    isa,
                    kc,
                    apanel,
                    bpanel,
                    c,
                    lay,
                    alpha,
                    store,
                    (ib, h),
                    (jb, w),
                    bias,
                );
            }
        }
    };
    // two whole panels at once where the ISA gains by it (`kernel::tiles`): same bits
    let pairs = kernel::panels_per_call(isa) == 2;
    let mut q = 0;
    while q < panels {
        let pair = (pairs && q + 1 < panels).then(|| (at(q), at(q + 1)));
        let Some(((j0, _, true), (j1, _, true))) = pair else {
            one_panel(q);
            q += 1;
            continue;
        };
        let b2 = [bp.panel(q, j0, kc), bp.panel(q + 1, j1, kc)];
        for r in 0..mc.div_ceil(MR) {
            let ib = ic + r * MR;
            let h = MR.min(ic + mc - ib);
            let apanel = ap.panel(r, ib, h, kc);
            if h == MR {
                // SAFETY: as in `one_panel`, for each of the two tiles; both panels come from
                // one B block, so they share its depth offsets when read in place.
                unsafe {
                    kernel::tiles::<2>(
                        isa,
                        kc,
                        apanel,
                        b2,
                        [c.ptr.add(lay.off(ib, j0)), c.ptr.add(lay.off(ib, j1))],
                        lay.rs,
                        alpha,
                        store,
                        bias.map_or(std::ptr::null(), |b| b.add(ib)),
                    )
                };
            } else {
                for (bpanel, jb) in b2.into_iter().zip([j0, j1]) {
                    edge_tile(
                        isa,
                        kc,
                        apanel,
                        bpanel,
                        c,
                        lay,
                        alpha,
                        store,
                        (ib, h),
                        (jb, NR),
                        bias,
                    );
                }
            }
        }
        q += 2;
    }
}

/// A partial or scattered tile: computed whole into a local tile, then stored element-wise
/// with the same arithmetic as the kernel's own store.
#[allow(clippy::too_many_arguments)]
fn edge_tile(
    isa: Isa,
    kc: usize,
    apanel: APanel,
    bpanel: BPanel,
    c: CPtr,
    lay: CLayout,
    alpha: f32,
    store: Store,
    (ib, h): (usize, usize),
    (jb, w): (usize, usize),
    bias: Option<*const f32>,
) {
    let mut tile = [Line([0.0; 16]); MR];
    // SAFETY: the A panel addresses MR x kc floats (`ASrc::panel`), the B panel kc rows of
    // NR (`BSrc::panel`), and `tile` is MR rows of NR floats.
    unsafe {
        kernel::tile(
            isa,
            kc,
            apanel,
            bpanel,
            tile.as_mut_ptr().cast::<f32>(),
            NR,
            1.0,
            Store::Overwrite,
            std::ptr::null(),
        )
    };
    // Through pointers: with `Store::Overwrite` C may be uninitialised (`gemm_uninit`), so
    // its elements are written without being read or referenced first.
    let store_at = |p: *mut f32, v: f32, row: usize| {
        // SAFETY: callers pass addresses of elements of C inside this tile (valid_for), which
        // nothing else touches during the call; C is read only for `Store::Accumulate`, whose
        // callers guarantee initialised memory; one bias per row of C (`gemm_bias_relu`).
        unsafe {
            let mut s = match (store, alpha == 1.0) {
                (Store::Overwrite, _) => v * alpha,
                (Store::Accumulate, true) => p.read() + v,
                (Store::Accumulate, false) => v.mul_add(alpha, p.read()),
            };
            if let Some(bias) = bias {
                bias_relu(std::slice::from_mut(&mut s), *bias.add(row));
            }
            p.write(s);
        }
    };
    let whole_rows = w == NR && jb % lay.seg + NR <= lay.seg;
    for (i, row) in tile.iter().take(h).enumerate() {
        if whole_rows {
            // whole consecutive rows (a partial row panel: Cout 16 = 6 + 6 + 4)
            let base = lay.off(ib + i, jb);
            for (j, &v) in row.0.iter().enumerate() {
                // SAFETY: row ib + i, columns jb..jb + NR are inside C and consecutive (one
                // segment; valid_for).
                store_at(unsafe { c.ptr.add(base + j) }, v, ib + i);
            }
        } else {
            for (j, &v) in row.0.iter().take(w).enumerate() {
                // SAFETY: (ib + i, jb + j) is inside C, so its offset is (valid_for).
                store_at(unsafe { c.ptr.add(lay.off(ib + i, jb + j)) }, v, ib + i);
            }
        }
    }
}
