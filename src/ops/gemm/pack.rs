//! Packing: copying blocks of A and B into the micro-panel order the kernels stream.
//!
//! A block of A (mc x kc) becomes ceil(mc / MR) panels, each kc x MR, k-major; a block of B
//! (kc x nc) becomes ceil(nc / NR) panels, each kc x NR, k-major. Rows or columns past the
//! matrix edge are zero, so the kernels always run whole tiles.

use super::cpu::MatRef;
use super::kernel::{MR, NR};

/// A matrix that can be packed as the left operand (m x k).
pub trait PackA: Sync {
    fn rows(&self) -> usize;
    fn depth(&self) -> usize;
    /// Rows i0..i0+mc, depth p0..p0+kc, into `out` (at least ceil(mc/MR)*MR*kc floats).
    fn pack_a(&self, i0: usize, mc: usize, p0: usize, kc: usize, out: &mut [f32]);
    /// The matrix as row-major values with rows `lda` apart, when the kernels can read it in
    /// place instead of packing it: element (i, k) at `data[i * lda + k]`, all in bounds.
    fn in_place(&self) -> Option<(&[f32], usize)> {
        None
    }
}

/// A matrix that can be packed as the right operand (k x n).
pub trait PackB: Sync {
    fn depth(&self) -> usize;
    fn cols(&self) -> usize;
    /// Depth p0..p0+kc, columns j0..j0+nc, into `out` (at least ceil(nc/NR)*NR*kc floats).
    fn pack_b(&self, p0: usize, kc: usize, j0: usize, nc: usize, out: &mut [f32]);
    /// When the kernels can read every micro-panel where it lies instead of packing it.
    fn in_place_b(&self) -> Option<InPlaceB<'_>> {
        None
    }
}

/// B readable in place, panel by panel: the micro-panel of columns jb..jb + NR (jb a multiple
/// of NR) has its row k at `data[base(jb) + koff[k]..][..NR]`, where columns are laid out in
/// three levels: `seg` columns per segment `seg_stride` apart, `row` columns per row
/// `row_stride` apart within a segment (a convolution: images, output rows, pixels).
/// `InPlaceB::new` checks that every read is inside `data`.
#[derive(Clone, Copy)]
pub struct InPlaceB<'a> {
    data: &'a [f32],
    koff: &'a [usize],
    seg: usize,
    seg_stride: usize,
    row: usize,
    row_stride: usize,
}

impl<'a> InPlaceB<'a> {
    /// None unless every micro-panel of `cols` columns is NR consecutive values (rows of
    /// `row` columns, a multiple of NR; segments of whole rows) and every read is in bounds.
    pub fn new(
        data: &'a [f32],
        koff: &'a [usize],
        cols: usize,
        (seg, seg_stride): (usize, usize),
        (row, row_stride): (usize, usize),
    ) -> Option<Self> {
        let ok =
            row > 0 && row.is_multiple_of(NR) && seg.is_multiple_of(row) && cols.is_multiple_of(NR);
        let me = InPlaceB {
            data,
            koff,
            seg,
            seg_stride,
            row,
            row_stride,
        };
        if !ok || cols == 0 {
            return None;
        }
        // the bases grow with jb, so the last panel's last tap bounds every read
        let last = me.base(cols - NR) + koff.iter().copied().max()? + NR;
        (last <= data.len()).then_some(me)
    }
    #[inline]
    pub fn base(&self, jb: usize) -> usize {
        let (s, r) = (jb / self.seg, jb % self.seg);
        s * self.seg_stride + r / self.row * self.row_stride + r % self.row
    }
    pub fn data(&self) -> &'a [f32] {
        self.data
    }
    pub fn koff(&self) -> &'a [usize] {
        self.koff
    }
}

impl MatRef<'_> {
    #[inline]
    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[(i as isize * self.rs + j as isize * self.cs) as usize]
    }
}

impl PackA for MatRef<'_> {
    fn rows(&self) -> usize {
        self.rows
    }
    fn depth(&self) -> usize {
        self.cols
    }
    fn in_place(&self) -> Option<(&[f32], usize)> {
        (self.cs == 1 && self.rs >= 0 && self.span_ok()).then_some((self.data, self.rs as usize))
    }
    fn pack_a(&self, i0: usize, mc: usize, p0: usize, kc: usize, out: &mut [f32]) {
        for (r, panel) in out
            .chunks_exact_mut(kc * MR)
            .take(mc.div_ceil(MR))
            .enumerate()
        {
            let ib = i0 + r * MR;
            let h = (mc - r * MR).min(MR);
            if self.cs == 1 && self.rs >= 0 {
                // rows contiguous in k: MR streams interleaved
                let rs = self.rs as usize;
                for i in 0..MR {
                    if i < h {
                        let row = &self.data[(ib + i) * rs + p0..(ib + i) * rs + p0 + kc];
                        for (dst, &v) in panel[i..].iter_mut().step_by(MR).zip(row) {
                            *dst = v;
                        }
                    } else {
                        for dst in panel[i..].iter_mut().step_by(MR) {
                            *dst = 0.0;
                        }
                    }
                }
            } else {
                for (k, dst) in panel.chunks_exact_mut(MR).enumerate() {
                    for (i, d) in dst.iter_mut().enumerate() {
                        *d = if i < h { self.at(ib + i, p0 + k) } else { 0.0 };
                    }
                }
            }
        }
    }
}

impl PackB for MatRef<'_> {
    fn depth(&self) -> usize {
        self.rows
    }
    fn cols(&self) -> usize {
        self.cols
    }
    fn pack_b(&self, p0: usize, kc: usize, j0: usize, nc: usize, out: &mut [f32]) {
        for (q, panel) in out
            .chunks_exact_mut(kc * NR)
            .take(nc.div_ceil(NR))
            .enumerate()
        {
            let jb = j0 + q * NR;
            let w = (nc - q * NR).min(NR);
            if self.cs == 1 && self.rs >= 0 {
                // rows contiguous in j: one copy of NR values per k
                let rs = self.rs as usize;
                for (k, dst) in panel.chunks_exact_mut(NR).enumerate() {
                    let s = (p0 + k) * rs + jb;
                    if w == NR {
                        // a constant length: inlined vector moves, not a memmove call
                        dst.copy_from_slice(&self.data[s..s + NR]);
                    } else {
                        dst[..w].copy_from_slice(&self.data[s..s + w]);
                        dst[w..].fill(0.0);
                    }
                }
            } else if self.rs == 1 && self.cs >= 0 {
                // columns contiguous in k (a transposed operand): NR streams interleaved
                let cs = self.cs as usize;
                for j in 0..NR {
                    if j < w {
                        let col = &self.data[(jb + j) * cs + p0..(jb + j) * cs + p0 + kc];
                        for (dst, &v) in panel[j..].iter_mut().step_by(NR).zip(col) {
                            *dst = v;
                        }
                    } else {
                        for dst in panel[j..].iter_mut().step_by(NR) {
                            *dst = 0.0;
                        }
                    }
                }
            } else {
                for (k, dst) in panel.chunks_exact_mut(NR).enumerate() {
                    for (j, d) in dst.iter_mut().enumerate() {
                        *d = if j < w { self.at(p0 + k, jb + j) } else { 0.0 };
                    }
                }
            }
        }
    }
}
