use crate::backend::{Backend, Cpu};
use crate::tensor::Shape;

#[test]
fn two_hand_worked_steps() {
    let cpu = Cpu::new();
    // 11 elements: the 8-wide SIMD body and the scalar tail must agree.
    let w0: Vec<f32> = (0..11).map(|i| i as f32 * 0.5 - 2.0).collect();
    let g: Vec<f32> = (0..11).map(|i| 1.0 - i as f32 * 0.25).collect();
    let mut w = cpu.from_host(Shape::new([11]), &w0).unwrap();
    let gt = cpu.from_host(Shape::new([11]), &g).unwrap();
    let mut v = cpu.zeros(&Shape::new([11])).unwrap();
    let (lr, m, wd) = (0.1f32, 0.9f32, 0.01f32);
    let (mut we, mut ve) = (w0.clone(), vec![0.0f32; 11]);
    for _ in 0..2 {
        cpu.sgd_update(&mut w, &gt, &mut v, lr, m, wd).unwrap();
        for i in 0..11 {
            ve[i] = m * ve[i] + (g[i] + wd * we[i]);
            we[i] -= lr * ve[i];
        }
    }
    assert_eq!(w.storage, we);
    assert_eq!(v.storage, ve);
    // by hand for element 0: w=-2, g=1: v1 = 1 - 0.02 = 0.98, w1 = -2.098;
    // v2 = 0.882 + 1 - 0.02098 = 1.86102, w2 = -2.098 - 0.186102 = -2.284102
    assert!((w.storage[0] - (-2.284102)).abs() < 1e-5);
}

#[test]
fn mismatched_shapes_are_errors() {
    let cpu = Cpu::new();
    let mut w = cpu.zeros(&Shape::new([3])).unwrap();
    let g = cpu.zeros(&Shape::new([4])).unwrap();
    let mut v = cpu.zeros(&Shape::new([3])).unwrap();
    assert!(cpu.sgd_update(&mut w, &g, &mut v, 0.1, 0.9, 0.0).is_err());
}
