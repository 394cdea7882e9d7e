use crate::backend::{Backend, Cpu};
use crate::gradcheck::{check_grad, random_tensor};
use crate::tensor::Shape;

#[test]
fn hand_worked_values() {
    let cpu = Cpu::new();
    let x = cpu
        .from_host(
            Shape::new([9]),
            &[-2.0, -0.5, 0.0, 0.5, 1.0, 2.0, -3.0, 4.0, -1.0],
        )
        .unwrap();
    assert_eq!(
        cpu.to_host(&cpu.relu_forward(&x).unwrap()).unwrap(),
        [0.0, 0.0, 0.0, 0.5, 1.0, 2.0, 0.0, 4.0, 0.0]
    );
    assert_eq!(
        cpu.to_host(&cpu.scale(&x, -2.0).unwrap()).unwrap(),
        [4.0, 1.0, -0.0, -1.0, -2.0, -4.0, 6.0, -8.0, 2.0]
    );
    let mut acc = x.clone();
    cpu.add_assign(&mut acc, &x).unwrap();
    assert_eq!(
        cpu.to_host(&acc).unwrap(),
        [-4.0, -1.0, 0.0, 1.0, 2.0, 4.0, -6.0, 8.0, -2.0]
    );
    let m = cpu.mul(&x, &x).unwrap();
    assert_eq!(
        cpu.to_host(&m).unwrap(),
        [4.0, 0.25, 0.0, 0.25, 1.0, 4.0, 9.0, 16.0, 1.0]
    );
    let y = cpu.relu_forward(&x).unwrap();
    let dy = cpu.from_host(Shape::new([9]), &[1.0; 9]).unwrap();
    assert_eq!(
        cpu.to_host(&cpu.relu_backward(&y, &dy).unwrap()).unwrap(),
        [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    );
}

#[test]
fn mismatched_shapes_are_errors() {
    let cpu = Cpu::new();
    let a = cpu.zeros(&Shape::new([4])).unwrap();
    let mut b = cpu.zeros(&Shape::new([5])).unwrap();
    assert!(cpu.add_assign(&mut b, &a).is_err());
    assert!(cpu.mul(&a, &b).is_err());
    assert!(cpu.relu_backward(&a, &b).is_err());
}

#[test]
fn long_vectors_take_the_parallel_path_and_agree() {
    let cpu = Cpu::new();
    let x = random_tensor(&cpu, [100_003], 3);
    let xs = cpu.to_host(&x).unwrap();
    let y = cpu.to_host(&cpu.relu_forward(&x).unwrap()).unwrap();
    for (a, b) in xs.iter().zip(&y) {
        assert_eq!(a.max(0.0), *b);
    }
}

#[test]
fn relu_backward_matches_finite_differences() {
    let cpu = Cpu::new();
    // keep inputs away from the kink so the difference quotient is well defined
    let x0: Vec<f32> = cpu
        .to_host(&random_tensor(&cpu, [2, 3, 4, 5], 11))
        .unwrap()
        .into_iter()
        .map(|v| if v.abs() < 0.1 { v + 0.2 } else { v })
        .collect();
    let x = cpu.from_host(Shape::new([2, 3, 4, 5]), &x0).unwrap();
    check_grad(
        &cpu,
        &x,
        1e-2,
        1e-3,
        |t| cpu.relu_forward(t),
        |t, dy| cpu.relu_backward(&cpu.relu_forward(t)?, dy),
    );
}
