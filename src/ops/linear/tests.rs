use crate::backend::{Backend, Cpu};
use crate::gradcheck::{check_coords, check_grad, random_tensor, random_vec, weighted_sum};
use crate::tensor::Shape;

#[test]
fn hand_worked_forward() {
    let cpu = Cpu::new();
    let x = cpu
        .from_host(Shape::new([2, 3]), &[1., 2., 3., -1., 0., 1.])
        .unwrap();
    let w = cpu
        .from_host(Shape::new([2, 3]), &[1., 0., 1., 0.5, 0.5, 0.5])
        .unwrap();
    let b = cpu.from_host(Shape::new([2]), &[10., 20.]).unwrap();
    assert_eq!(
        cpu.linear_forward(&x, &w, &b).unwrap().storage,
        [14., 23., 10., 20.]
    );
}

#[test]
fn backward_matches_finite_differences() {
    let cpu = Cpu::new();
    let x = random_tensor(&cpu, [5, 7], 1);
    let w = random_tensor(&cpu, [3, 7], 2);
    let b = random_tensor(&cpu, [3], 3);
    check_grad(
        &cpu,
        &x,
        1e-2,
        1e-3,
        |t| cpu.linear_forward(t, &w, &b),
        |t, dy| Ok(cpu.linear_backward(t, &w, dy)?.0),
    );
    let r = random_vec(15, 0xD1CE);
    let rt = cpu.from_host(Shape::new([5, 3]), &r).unwrap();
    let (_, dw, db) = cpu.linear_backward(&x, &w, &rt).unwrap();
    check_coords(&w.storage, &dw.storage, 1e-2, 1e-3, "fc weight", |wv| {
        weighted_sum(
            &cpu.linear_forward(&x, &cpu.from_host(w.shape.clone(), wv).unwrap(), &b)
                .unwrap()
                .storage,
            &r,
        )
    });
    check_coords(&b.storage, &db.storage, 1e-2, 1e-3, "fc bias", |bv| {
        weighted_sum(
            &cpu.linear_forward(&x, &w, &cpu.from_host(b.shape.clone(), bv).unwrap())
                .unwrap()
                .storage,
            &r,
        )
    });
}

#[test]
fn bad_shapes_are_errors() {
    let cpu = Cpu::new();
    let x = cpu.zeros(&Shape::new([2, 3])).unwrap();
    let w = cpu.zeros(&Shape::new([4, 5])).unwrap();
    let b = cpu.zeros(&Shape::new([4])).unwrap();
    assert!(cpu.linear_forward(&x, &w, &b).is_err());
}
