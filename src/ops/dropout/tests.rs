use crate::backend::{Backend, Cpu};
use crate::gradcheck::random_tensor;
use crate::rng::philox_uniform;
use crate::tensor::Shape;

#[test]
fn mask_follows_the_counter_based_stream() {
    let cpu = Cpu::new();
    let x = random_tensor(&cpu, [3, 4, 5, 6], 1);
    let (y, m) = cpu.dropout_forward(&x, 0.3, 99).unwrap();
    for i in 0..x.numel() {
        let keep = philox_uniform(99, i as u64) >= 0.3;
        let want = if keep { 1.0 / 0.7 } else { 0.0 };
        assert_eq!(m.storage[i], want);
        assert_eq!(y.storage[i], x.storage[i] * want);
    }
    // the kept fraction is near 1 - rate
    let kept = m.storage.iter().filter(|&&v| v > 0.0).count() as f64 / m.numel() as f64;
    assert!((kept - 0.7).abs() < 0.05, "{kept}");
    // a different seed gives a different mask, the same seed the same one
    assert_ne!(
        cpu.dropout_forward(&x, 0.3, 100).unwrap().1.storage,
        m.storage
    );
    assert_eq!(
        cpu.dropout_forward(&x, 0.3, 99).unwrap().1.storage,
        m.storage
    );
}

#[test]
fn backward_is_the_mask_and_rate_zero_is_identity() {
    let cpu = Cpu::new();
    let x = random_tensor(&cpu, [2, 2, 3, 3], 4);
    let (y, m) = cpu.dropout_forward(&x, 0.0, 5).unwrap();
    assert_eq!(y.storage, x.storage);
    // the op is linear in x, so its gradient for dy is exactly dy * mask
    let (_, m2) = cpu.dropout_forward(&x, 0.5, 6).unwrap();
    let dy = random_tensor(&cpu, [2, 2, 3, 3], 7);
    let dx = cpu.mul(&dy, &m2).unwrap();
    for i in 0..dx.numel() {
        assert_eq!(dx.storage[i], dy.storage[i] * m2.storage[i]);
        assert!(m2.storage[i] == 0.0 || m2.storage[i] == 2.0);
    }
    assert!(m.storage.iter().all(|&v| v == 1.0));
}

#[test]
fn bad_rate_is_an_error() {
    let cpu = Cpu::new();
    let x = cpu.zeros(&Shape::new([4])).unwrap();
    assert!(cpu.dropout_forward(&x, 1.0, 0).is_err());
    assert!(cpu.dropout_forward(&x, -0.1, 0).is_err());
}
