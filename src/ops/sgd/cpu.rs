use wide::f32x8;

pub fn update(w: &mut [f32], g: &[f32], v: &mut [f32], lr: f32, momentum: f32, wd: f32) {
    let n8 = w.len() / 8 * 8;
    let (lr8, m8, wd8) = (f32x8::splat(lr), f32x8::splat(momentum), f32x8::splat(wd));
    let ld = |s: &[f32]| f32x8::from(<[f32; 8]>::try_from(s).unwrap_or([0.0; 8]));
    for ((wc, gc), vc) in w[..n8]
        .chunks_exact_mut(8)
        .zip(g[..n8].chunks_exact(8))
        .zip(v[..n8].chunks_exact_mut(8))
    {
        let wv = ld(wc);
        let nv = m8 * ld(vc) + (ld(gc) + wd8 * wv);
        vc.copy_from_slice(&nv.to_array());
        wc.copy_from_slice(&(wv - lr8 * nv).to_array());
    }
    for i in n8..w.len() {
        v[i] = momentum * v[i] + (g[i] + wd * w[i]);
        w[i] -= lr * v[i];
    }
}
