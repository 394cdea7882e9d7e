use crate::backend::{Backend, Cpu};
use crate::gradcheck::{check_coords, random_vec};
use crate::tensor::Shape;

#[test]
fn hand_worked_loss_and_gradient() {
    let cpu = Cpu::new();
    // row 0: logits (0, ln 3) label 1 -> p = (1/4, 3/4), loss = ln(4/3)
    // row 1: logits (0, 0) label 0 -> p = (1/2, 1/2), loss = ln 2
    let z = cpu
        .from_host(Shape::new([2, 2]), &[0.0, 3f32.ln(), 0.0, 0.0])
        .unwrap();
    let y = cpu.from_host(Shape::new([2]), &[1.0, 0.0]).unwrap();
    let (loss, d) = cpu.softmax_xent(&z, &y).unwrap();
    let want = (((4.0f64 / 3.0).ln() + 2f64.ln()) / 2.0) as f32;
    assert!((loss.storage[0] - want).abs() < 1e-6);
    let wd = [0.125, -0.125, -0.25, 0.25];
    for (a, b) in d.storage.iter().zip(wd) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
    assert_eq!(cpu.argmax(&z).unwrap().storage, [1.0, 0.0]);
}

#[test]
fn large_logits_are_stable() {
    let cpu = Cpu::new();
    let z = cpu
        .from_host(Shape::new([1, 3]), &[1000.0, 0.0, -1000.0])
        .unwrap();
    let y = cpu.from_host(Shape::new([1]), &[0.0]).unwrap();
    let (loss, d) = cpu.softmax_xent(&z, &y).unwrap();
    assert!(loss.storage[0].abs() < 1e-6 && d.storage.iter().all(|v| v.is_finite()));
}

#[test]
fn gradient_matches_finite_differences() {
    let cpu = Cpu::new();
    let zv: Vec<f32> = random_vec(4 * 5, 9).iter().map(|v| v * 3.0).collect();
    let y = cpu
        .from_host(Shape::new([4]), &[0.0, 4.0, 2.0, 2.0])
        .unwrap();
    let z = cpu.from_host(Shape::new([4, 5]), &zv).unwrap();
    let (_, d) = cpu.softmax_xent(&z, &y).unwrap();
    check_coords(&zv, &d.storage, 1e-2, 1e-3, "logits", |v| {
        cpu.softmax_xent(&cpu.from_host(Shape::new([4, 5]), v).unwrap(), &y)
            .unwrap()
            .0
            .storage[0] as f64
    });
}

#[test]
fn labels_out_of_range_are_errors() {
    let cpu = Cpu::new();
    let z = cpu.zeros(&Shape::new([2, 3])).unwrap();
    for bad in [[0.0, 3.0], [-1.0, 0.0], [0.5, 1.0], [f32::NAN, 0.0]] {
        let y = cpu.from_host(Shape::new([2]), &bad).unwrap();
        let e = cpu.softmax_xent(&z, &y).unwrap_err().to_string();
        assert!(e.contains("label"), "{e}");
    }
    let y3 = cpu.zeros(&Shape::new([3])).unwrap();
    assert!(cpu.softmax_xent(&z, &y3).is_err());
}
