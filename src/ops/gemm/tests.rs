use super::*;

fn naive(a: &MatRef, b: &MatRef) -> Vec<f32> {
    let mut c = vec![0.0f32; a.rows * b.cols];
    for i in 0..a.rows {
        for j in 0..b.cols {
            let mut s = 0.0f64;
            for k in 0..a.cols {
                let av = a.data[(i as isize * a.rs + k as isize * a.cs) as usize] as f64;
                let bv = b.data[(k as isize * b.rs + j as isize * b.cs) as usize] as f64;
                s += av * bv;
            }
            c[i * b.cols + j] = s as f32;
        }
    }
    c
}

#[test]
fn hand_worked_2x2() {
    let a = [1.0, 2.0, 3.0, 4.0];
    let b = [5.0, 6.0, 7.0, 8.0];
    let mut c = [1.0f32; 4];
    sgemm(1.0, MatRef::rm(&a, 2, 2), MatRef::rm(&b, 2, 2), 1.0, &mut c);
    assert_eq!(c, [20.0, 23.0, 44.0, 51.0]);
    let mut c = [0.0f32; 4];
    // a^T b: [[1,3],[2,4]] [[5,6],[7,8]] = [[26,30],[38,44]]
    sgemm(
        1.0,
        MatRef::rm_t(&a, 2, 2),
        MatRef::rm(&b, 2, 2),
        0.0,
        &mut c,
    );
    assert_eq!(c, [26.0, 30.0, 38.0, 44.0]);
}

#[test]
fn matches_naive_on_odd_sizes_and_transposes() {
    let mut rng = crate::rng::SeededRng::new(7);
    for &(m, k, n) in &[(1, 1, 1), (3, 5, 7), (17, 33, 9), (64, 27, 130)] {
        let a: Vec<f32> = (0..m * k).map(|_| rng.uniform_f32() - 0.5).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.uniform_f32() - 0.5).collect();
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let am = if ta {
                MatRef::rm_t(&a, k, m)
            } else {
                MatRef::rm(&a, m, k)
            };
            let bm = if tb {
                MatRef::rm_t(&b, n, k)
            } else {
                MatRef::rm(&b, k, n)
            };
            let want = naive(&am, &bm);
            let mut c = vec![0.0f32; m * n];
            sgemm(1.0, am, bm, 0.0, &mut c);
            for (x, y) in c.iter().zip(&want) {
                assert!(
                    (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                    "{m}x{k}x{n} {x} vs {y}"
                );
            }
        }
    }
}
