use crate::ops::gemm::{MatRef, sgemm};

pub fn forward(x: &[f32], w: &[f32], b: &[f32], [n, f, k]: [usize; 3]) -> Vec<f32> {
    let mut y: Vec<f32> = (0..n).flat_map(|_| b.iter().copied()).collect();
    sgemm(1.0, MatRef::rm(x, n, f), MatRef::rm_t(w, k, f), 1.0, &mut y);
    y
}

pub fn backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    [n, f, k]: [usize; 3],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut dx = vec![0.0f32; n * f];
    sgemm(1.0, MatRef::rm(dy, n, k), MatRef::rm(w, k, f), 0.0, &mut dx);
    let mut dw = vec![0.0f32; k * f];
    sgemm(
        1.0,
        MatRef::rm_t(dy, n, k),
        MatRef::rm(x, n, f),
        0.0,
        &mut dw,
    );
    let mut db = vec![0.0f32; k];
    for row in dy.chunks(k) {
        for (d, &g) in db.iter_mut().zip(row) {
            *d += g;
        }
    }
    (dx, dw, db)
}
