//! im2col + GEMM convolution. Images are independent, so the batch is split over rayon;
//! the weight gradient is summed per fixed group of images and the group partials are added
//! in order, so the result does not depend on the thread count.

use super::ConvGeom;
use crate::ops::gemm::{sgemm, MatRef};
use rayon::prelude::*;

/// Images per weight-gradient partial (fixed: results must not depend on the thread count).
const DW_GROUP: usize = 4;

/// col[(ci*kh + ky)*kw + kx, oy*wo + ox] = x[ci, oy*s + ky - pad, ox*s + kx - pad] (or 0).
pub fn im2col(g: &ConvGeom, x: &[f32], col: &mut [f32]) {
    let hw_o = g.ho * g.wo;
    for ci in 0..g.cin {
        let plane = &x[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = (ci * g.kh + ky) * g.kw + kx;
                let dst = &mut col[row * hw_o..(row + 1) * hw_o];
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
                            *d = if ix >= 0 && ix < g.w as isize { srow[ix as usize] } else { 0.0 };
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of im2col: dx[ci, iy, ix] += col[...] for every window that read it.
pub fn col2im(g: &ConvGeom, col: &[f32], dx: &mut [f32]) {
    dx.fill(0.0);
    let hw_o = g.ho * g.wo;
    for ci in 0..g.cin {
        let plane = &mut dx[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = (ci * g.kh + ky) * g.kw + kx;
                let src = &col[row * hw_o..(row + 1) * hw_o];
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

pub fn forward(g: &ConvGeom, x: &[f32], w: &[f32]) -> Vec<f32> {
    let (in_sz, out_sz, k, hw_o) = (g.cin * g.h * g.w, g.cout * g.ho * g.wo, g.k(), g.ho * g.wo);
    let mut y = vec![0.0f32; g.n * out_sz];
    let wm = MatRef::rm(w, g.cout, k);
    y.par_chunks_mut(out_sz).zip(x.par_chunks(in_sz)).for_each_init(
        || vec![0.0f32; if g.is_pointwise() { 0 } else { k * hw_o }],
        |col, (yn, xn)| {
            let cm = if g.is_pointwise() {
                MatRef::rm(xn, k, hw_o)
            } else {
                im2col(g, xn, col);
                MatRef::rm(col, k, hw_o)
            };
            sgemm(1.0, wm, cm, 0.0, yn);
        },
    );
    y
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
    let groups = g.n.div_ceil(DW_GROUP);
    let mut dx = if need_dx { vec![0.0f32; g.n * in_sz] } else { Vec::new() };
    let wt = MatRef::rm_t(w, g.cout, k); // [k, cout]

    // Each group of images: its dw partial, and (when asked) its images' dx.
    let partials: Vec<Vec<f32>> = {
        let dx_groups: Vec<&mut [f32]> = if need_dx {
            dx.chunks_mut(DW_GROUP * in_sz).collect()
        } else {
            Vec::new()
        };
        let mut dx_iter: Vec<Option<&mut [f32]>> = dx_groups.into_iter().map(Some).collect();
        dx_iter.resize_with(groups, || None);
        dx_iter
            .into_par_iter()
            .enumerate()
            .map(|(gi, mut dxg)| {
                let mut dw = vec![0.0f32; wsz];
                let mut col = vec![0.0f32; k * hw_o];
                let mut dcol = vec![0.0f32; if need_dx && !g.is_pointwise() { k * hw_o } else { 0 }];
                let n0 = gi * DW_GROUP;
                let n1 = (n0 + DW_GROUP).min(g.n);
                for n in n0..n1 {
                    let xn = &x[n * in_sz..(n + 1) * in_sz];
                    let dyn_ = &dy[n * out_sz..(n + 1) * out_sz];
                    let cm = if g.is_pointwise() {
                        MatRef::rm(xn, k, hw_o)
                    } else {
                        im2col(g, xn, &mut col);
                        MatRef::rm(&col, k, hw_o)
                    };
                    // dw += dy_n [cout, hw] col^T [hw, k]
                    let colt = MatRef { data: cm.data, rows: hw_o, cols: k, rs: 1, cs: hw_o as isize };
                    sgemm(1.0, MatRef::rm(dyn_, g.cout, hw_o), colt, 1.0, &mut dw);
                    if let Some(dxg) = dxg.as_deref_mut() {
                        let dxn = &mut dxg[(n - n0) * in_sz..(n - n0 + 1) * in_sz];
                        if g.is_pointwise() {
                            sgemm(1.0, wt, MatRef::rm(dyn_, g.cout, hw_o), 0.0, dxn);
                        } else {
                            sgemm(1.0, wt, MatRef::rm(dyn_, g.cout, hw_o), 0.0, &mut dcol);
                            col2im(g, &dcol, dxn);
                        }
                    }
                }
                dw
            })
            .collect()
    };
    let mut dw = vec![0.0f32; wsz];
    for p in &partials {
        crate::ops::elementwise::cpu::add_assign(&mut dw, p);
    }
    (if need_dx { Some(dx) } else { None }, dw)
}
