use crate::backend::{Backend, Cpu};
use crate::gradcheck::{check_grad, random_tensor};
use crate::tensor::Shape;

#[test]
fn mean_of_active_inputs_in_order() {
    let cpu = Cpu::new();
    let a = cpu
        .from_host(Shape::new([1, 1, 1, 3]), &[1., 2., 3.])
        .unwrap();
    let b = cpu
        .from_host(Shape::new([1, 1, 1, 3]), &[3., 0., -3.])
        .unwrap();
    let c = cpu
        .from_host(Shape::new([1, 1, 1, 3]), &[2., 1., 6.])
        .unwrap();
    assert_eq!(
        cpu.join_forward(&[&a, &b, &c]).unwrap().storage,
        [2., 1., 2.]
    );
    assert_eq!(cpu.join_forward(&[&a, &b]).unwrap().storage, [2., 1., 0.]);
    assert_eq!(cpu.join_forward(&[&c]).unwrap().storage, [2., 1., 6.]);
    // summed first, then divided: (0.1 + 0.2 + 0.3) / 3 exactly as f32 arithmetic gives it
    let t = |v: f32| cpu.from_host(Shape::new([1]), &[v]).unwrap();
    let got = cpu
        .join_forward(&[&t(0.1), &t(0.2), &t(0.3)])
        .unwrap()
        .storage[0];
    assert_eq!(got, (0.1f32 + 0.2f32 + 0.3f32) / 3.0);
}

#[test]
fn gradient_is_an_equal_share() {
    let cpu = Cpu::new();
    let a = random_tensor(&cpu, [2, 3, 4, 4], 1);
    let b = random_tensor(&cpu, [2, 3, 4, 4], 2);
    check_grad(
        &cpu,
        &a,
        1e-2,
        1e-3,
        |t| cpu.join_forward(&[t, &b]),
        |_, dy| cpu.scale(dy, 0.5),
    );
}

#[test]
fn mismatched_or_empty_inputs_are_errors() {
    let cpu = Cpu::new();
    let a = cpu.zeros(&Shape::new([1, 2, 2, 2])).unwrap();
    let b = cpu.zeros(&Shape::new([1, 2, 2, 3])).unwrap();
    assert!(cpu.join_forward(&[&a, &b]).is_err());
    assert!(cpu.join_forward(&[]).is_err());
}

/// The SIMD kernel must give exactly the spec's scalar arithmetic: sum in order, then divide.
#[test]
fn simd_mean_is_the_scalar_sum_then_divide_bit_for_bit() {
    for count in 1..=4 {
        let len = 8192 * 2 + 13;
        let ins: Vec<Vec<f32>> = (0..count)
            .map(|i| crate::gradcheck::random_vec(len, 90 + i as u64))
            .collect();
        let refs: Vec<&[f32]> = ins.iter().map(|v| v.as_slice()).collect();
        let got = super::cpu::mean(&refs);
        for (j, g) in got.iter().enumerate() {
            let mut s = ins[0][j];
            for x in &ins[1..] {
                s += x[j];
            }
            let want = if count > 1 { s / count as f32 } else { s };
            assert_eq!(g.to_bits(), want.to_bits(), "count {count} at {j}");
        }
    }
}
