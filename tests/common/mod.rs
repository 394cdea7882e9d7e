//! Test helpers shared by the integration tests.
#![allow(dead_code)]

use fractalnet::backend::{Backend, Cpu};
use fractalnet::ops::batchnorm::BatchStats;
use fractalnet::ops::conv2d::Conv2dParams;
use fractalnet::ops::pool::Pool2dParams;
use fractalnet::{Result, Shape, Tensor};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The CPU backend with a count of the convolutions it ran (forward) and the running
/// statistics it updated: an independent witness of what the executor computed.
#[derive(Default)]
pub struct Counting {
    cpu: Cpu,
    pub conv_forward: AtomicUsize,
    pub bn_updates: AtomicUsize,
}

impl Counting {
    pub fn convs(&self) -> usize {
        self.conv_forward.load(Ordering::SeqCst)
    }
    pub fn reset(&self) {
        self.conv_forward.store(0, Ordering::SeqCst);
        self.bn_updates.store(0, Ordering::SeqCst);
    }
}

type T = Tensor<Counting>;
fn up(t: Tensor<Cpu>) -> T {
    Tensor {
        shape: t.shape,
        storage: t.storage,
    }
}
fn dn(t: &T) -> Tensor<Cpu> {
    Tensor {
        shape: t.shape.clone(),
        storage: t.storage.clone(),
    }
}
fn st_dn(s: &BatchStats<Counting>) -> BatchStats<Cpu> {
    BatchStats {
        mean: dn(&s.mean),
        var: dn(&s.var),
    }
}

impl Backend for Counting {
    type Storage = Vec<f32>;
    fn name(&self) -> String {
        "counting-cpu".into()
    }
    fn zeros(&self, shape: &Shape) -> Result<T> {
        self.cpu.zeros(shape).map(up)
    }
    fn from_host(&self, shape: Shape, data: &[f32]) -> Result<T> {
        self.cpu.from_host(shape, data).map(up)
    }
    fn to_host(&self, t: &T) -> Result<Vec<f32>> {
        Ok(t.storage.clone())
    }
    fn add_assign(&self, acc: &mut T, x: &T) -> Result<()> {
        let mut a = dn(acc);
        self.cpu.add_assign(&mut a, &dn(x))?;
        *acc = up(a);
        Ok(())
    }
    fn scale(&self, x: &T, s: f32) -> Result<T> {
        self.cpu.scale(&dn(x), s).map(up)
    }
    fn mul(&self, a: &T, b: &T) -> Result<T> {
        self.cpu.mul(&dn(a), &dn(b)).map(up)
    }
    fn relu_forward(&self, x: &T) -> Result<T> {
        self.cpu.relu_forward(&dn(x)).map(up)
    }
    fn relu_backward(&self, y: &T, dy: &T) -> Result<T> {
        self.cpu.relu_backward(&dn(y), &dn(dy)).map(up)
    }
    fn conv2d_forward(&self, x: &T, w: &T, p: Conv2dParams) -> Result<T> {
        self.conv_forward.fetch_add(1, Ordering::SeqCst);
        self.cpu.conv2d_forward(&dn(x), &dn(w), p).map(up)
    }
    fn conv2d_backward(
        &self,
        x: &T,
        w: &T,
        dy: &T,
        p: Conv2dParams,
        need_dx: bool,
    ) -> Result<(Option<T>, T)> {
        let (a, b) = self
            .cpu
            .conv2d_backward(&dn(x), &dn(w), &dn(dy), p, need_dx)?;
        Ok((a.map(up), up(b)))
    }
    fn batchnorm_forward_train(
        &self,
        x: &T,
        g: &T,
        b: &T,
        eps: f32,
        relu: bool,
    ) -> Result<(T, BatchStats<Self>)> {
        let (y, s) = self
            .cpu
            .batchnorm_forward_train(&dn(x), &dn(g), &dn(b), eps, relu)?;
        Ok((
            up(y),
            BatchStats {
                mean: up(s.mean),
                var: up(s.var),
            },
        ))
    }
    fn batchnorm_forward_eval(
        &self,
        x: &T,
        g: &T,
        b: &T,
        m: &T,
        v: &T,
        eps: f32,
        relu: bool,
    ) -> Result<T> {
        self.cpu
            .batchnorm_forward_eval(&dn(x), &dn(g), &dn(b), &dn(m), &dn(v), eps, relu)
            .map(up)
    }
    fn batchnorm_backward(
        &self,
        x: &T,
        g: &T,
        s: &BatchStats<Self>,
        y: &T,
        dy: &T,
        eps: f32,
        relu: bool,
    ) -> Result<(T, T, T)> {
        let (a, b, c) =
            self.cpu
                .batchnorm_backward(&dn(x), &dn(g), &st_dn(s), &dn(y), &dn(dy), eps, relu)?;
        Ok((up(a), up(b), up(c)))
    }
    fn batchnorm_update_running(
        &self,
        rm: &mut T,
        rv: &mut T,
        s: &BatchStats<Self>,
        m: f32,
        n: usize,
    ) -> Result<()> {
        self.bn_updates.fetch_add(1, Ordering::SeqCst);
        let (mut a, mut b) = (dn(rm), dn(rv));
        self.cpu
            .batchnorm_update_running(&mut a, &mut b, &st_dn(s), m, n)?;
        *rm = up(a);
        *rv = up(b);
        Ok(())
    }
    fn dropout_forward(&self, x: &T, rate: f32, seed: u64) -> Result<(T, T)> {
        let (a, b) = self.cpu.dropout_forward(&dn(x), rate, seed)?;
        Ok((up(a), up(b)))
    }
    fn maxpool2d_forward(&self, x: &T, p: Pool2dParams) -> Result<T> {
        self.cpu.maxpool2d_forward(&dn(x), p).map(up)
    }
    fn maxpool2d_backward(&self, x: &T, dy: &T, p: Pool2dParams) -> Result<T> {
        self.cpu.maxpool2d_backward(&dn(x), &dn(dy), p).map(up)
    }
    fn global_avgpool_forward(&self, x: &T) -> Result<T> {
        self.cpu.global_avgpool_forward(&dn(x)).map(up)
    }
    fn global_avgpool_backward(&self, dy: &T, input: &Shape) -> Result<T> {
        self.cpu.global_avgpool_backward(&dn(dy), input).map(up)
    }
    fn join_forward(&self, inputs: &[&T]) -> Result<T> {
        let v: Vec<Tensor<Cpu>> = inputs.iter().map(|t| dn(t)).collect();
        let r: Vec<&Tensor<Cpu>> = v.iter().collect();
        self.cpu.join_forward(&r).map(up)
    }
    fn linear_forward(&self, x: &T, w: &T, b: &T) -> Result<T> {
        self.cpu.linear_forward(&dn(x), &dn(w), &dn(b)).map(up)
    }
    fn linear_backward(&self, x: &T, w: &T, dy: &T) -> Result<(T, T, T)> {
        let (a, b, c) = self.cpu.linear_backward(&dn(x), &dn(w), &dn(dy))?;
        Ok((up(a), up(b), up(c)))
    }
    fn softmax_xent(&self, z: &T, y: &T) -> Result<(T, T)> {
        let (a, b) = self.cpu.softmax_xent(&dn(z), &dn(y))?;
        Ok((up(a), up(b)))
    }
    fn argmax(&self, z: &T) -> Result<T> {
        self.cpu.argmax(&dn(z)).map(up)
    }
    fn sgd_update(&self, w: &mut T, g: &T, v: &mut T, lr: f32, m: f32, wd: f32) -> Result<()> {
        let (mut a, mut b) = (dn(w), dn(v));
        self.cpu.sgd_update(&mut a, &dn(g), &mut b, lr, m, wd)?;
        *w = up(a);
        *v = up(b);
        Ok(())
    }
}
pub mod reference;
