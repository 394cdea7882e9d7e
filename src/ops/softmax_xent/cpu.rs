/// Returns (mean loss, dlogits).
pub fn forward_backward(z: &[f32], labels: &[f32], [n, k]: [usize; 2]) -> (f32, Vec<f32>) {
    let mut d = vec![0.0f32; n * k];
    let mut total = 0.0f64;
    for i in 0..n {
        let row = &z[i * k..(i + 1) * k];
        let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
        let lse = m + s.ln();
        let y = labels[i] as usize;
        total += lse - row[y] as f64;
        for j in 0..k {
            let p = (row[j] as f64 - lse).exp();
            d[i * k + j] = ((p - if j == y { 1.0 } else { 0.0 }) / n as f64) as f32;
        }
    }
    ((total / n as f64) as f32, d)
}

pub fn argmax(z: &[f32], [_, k]: [usize; 2]) -> Vec<f32> {
    z.chunks(k)
        .map(|row| {
            let mut best = 0;
            for j in 1..k {
                if row[j] > row[best] {
                    best = j;
                }
            }
            best as f32
        })
        .collect()
}
