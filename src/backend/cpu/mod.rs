//! The CPU backend: storage is a `Vec<f32>`; every op calls its kernel in `crate::ops::<op>::cpu`
//! after the op's shape rules have been checked. Work is spread over rayon's pool (see
//! `Cpu::with_threads`); no result depends on the number of threads.

use super::Backend;
use crate::error::{Error, Result};
use crate::ops::batchnorm::{self, BatchStats};
use crate::ops::conv2d::{self, Conv2dParams, ConvGeom, winograd};
use crate::ops::pool::{self, Pool2dParams};
use crate::ops::{dropout, elementwise, join, linear, sgd, softmax_xent};
use crate::tensor::{Shape, Tensor, same_shape};

#[derive(Clone, Debug, Default)]
pub struct Cpu;

impl Cpu {
    pub fn new() -> Self {
        Cpu
    }
    /// Sets the size of rayon's global pool (once per process; later calls are ignored).
    pub fn with_threads(threads: usize) -> Self {
        if threads > 0 {
            let _ = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build_global();
        }
        Cpu
    }
    fn t(&self, shape: Shape, v: Vec<f32>) -> Tensor<Self> {
        debug_assert_eq!(shape.numel(), v.len());
        Tensor { shape, storage: v }
    }
}

impl Backend for Cpu {
    type Storage = Vec<f32>;

    fn name(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    fn zeros(&self, shape: &Shape) -> Result<Tensor<Self>> {
        Ok(self.t(shape.clone(), vec![0.0; shape.numel()]))
    }

    fn from_host(&self, shape: Shape, data: &[f32]) -> Result<Tensor<Self>> {
        if shape.numel() != data.len() {
            return Err(Error::shape(
                "from_host",
                format!("shape {shape} but {} values", data.len()),
            ));
        }
        Ok(self.t(shape, data.to_vec()))
    }

    fn to_host(&self, t: &Tensor<Self>) -> Result<Vec<f32>> {
        Ok(t.storage.clone())
    }

    fn add_assign(&self, acc: &mut Tensor<Self>, x: &Tensor<Self>) -> Result<()> {
        same_shape("add_assign", &acc.shape, &x.shape)?;
        elementwise::cpu::add_assign(&mut acc.storage, &x.storage);
        Ok(())
    }

    fn scale(&self, x: &Tensor<Self>, s: f32) -> Result<Tensor<Self>> {
        Ok(self.t(x.shape.clone(), elementwise::cpu::scale(&x.storage, s)))
    }

    fn mul(&self, a: &Tensor<Self>, b: &Tensor<Self>) -> Result<Tensor<Self>> {
        same_shape("mul", &a.shape, &b.shape)?;
        Ok(self.t(
            a.shape.clone(),
            elementwise::cpu::mul(&a.storage, &b.storage),
        ))
    }

    fn relu_forward(&self, x: &Tensor<Self>) -> Result<Tensor<Self>> {
        Ok(self.t(x.shape.clone(), elementwise::cpu::relu(&x.storage)))
    }

    fn relu_backward(&self, y: &Tensor<Self>, dy: &Tensor<Self>) -> Result<Tensor<Self>> {
        same_shape("relu_backward", &y.shape, &dy.shape)?;
        Ok(self.t(
            y.shape.clone(),
            elementwise::cpu::relu_backward(&y.storage, &dy.storage),
        ))
    }

    fn conv2d_forward(
        &self,
        x: &Tensor<Self>,
        w: &Tensor<Self>,
        p: Conv2dParams,
    ) -> Result<Tensor<Self>> {
        let g = ConvGeom::new(&x.shape, &w.shape, p)?;
        Ok(self.t(
            g.out_shape(),
            conv2d::cpu::forward(&g, &x.storage, &w.storage),
        ))
    }

    fn conv2d_bias_relu_forward(
        &self,
        x: &Tensor<Self>,
        w: &Tensor<Self>,
        bias: &Tensor<Self>,
        _ones: &Tensor<Self>,
        _zeros: &Tensor<Self>,
        prepared: &Tensor<Self>,
        p: Conv2dParams,
    ) -> Result<Tensor<Self>> {
        let g = ConvGeom::new(&x.shape, &w.shape, p)?;
        if bias.shape.dims() != [g.cout] {
            return Err(Error::shape(
                "conv2d_bias_relu",
                format!("bias {} for {} output channels", bias.shape, g.cout),
            ));
        }
        if !prepared.storage.is_empty() {
            let wt = winograd::Weights::from_prepared(&prepared.storage, g.cout, g.cin)
                .ok_or_else(|| {
                    Error::shape(
                        "conv2d_bias_relu",
                        format!(
                            "prepared weights {} do not fit weight {}",
                            prepared.shape, w.shape
                        ),
                    )
                })?;
            if winograd::applies(&g) && winograd::pays(&g, wt.tile()) {
                let y = winograd::forward_new(&g, &x.storage, &wt, Some(&bias.storage));
                return Ok(self.t(g.out_shape(), y));
            }
        }
        Ok(self.t(
            g.out_shape(),
            conv2d::cpu::forward_bias_relu(&g, &x.storage, &w.storage, &bias.storage),
        ))
    }

    /// Winograd weights (`ops::conv2d::winograd`; F(4x4, 3x3) or F(2x2, 3x3) by the map
    /// size) for 3x3 kernels, unless
    /// FRACTALNET_NO_WINOGRAD is set (for side-by-side timing against the direct kernel).
    fn conv2d_bias_relu_prepare(
        &self,
        w: &Tensor<Self>,
        hw: [usize; 2],
    ) -> Result<Option<Tensor<Self>>> {
        let [cout, cin, kh, kw] = w.shape.nchw("conv2d_bias_relu_prepare")?;
        if kh != 3 || kw != 3 || !winograd::enabled() {
            return Ok(None);
        }
        let tile = winograd::Tile::for_map(hw);
        let u = winograd::Weights::new(&w.storage, cout, cin, tile).into_prepared();
        Ok(Some(self.t(Shape::new([u.len()]), u)))
    }

    fn conv2d_backward(
        &self,
        x: &Tensor<Self>,
        w: &Tensor<Self>,
        dy: &Tensor<Self>,
        p: Conv2dParams,
        need_dx: bool,
    ) -> Result<(Option<Tensor<Self>>, Tensor<Self>)> {
        let g = ConvGeom::new(&x.shape, &w.shape, p)?;
        same_shape("conv2d_backward", &g.out_shape(), &dy.shape)?;
        let (dx, dw) = conv2d::cpu::backward(&g, &x.storage, &w.storage, &dy.storage, need_dx);
        Ok((
            dx.map(|v| self.t(x.shape.clone(), v)),
            self.t(w.shape.clone(), dw),
        ))
    }

    fn batchnorm_forward_train(
        &self,
        x: &Tensor<Self>,
        gamma: &Tensor<Self>,
        beta: &Tensor<Self>,
        eps: f32,
        relu: bool,
    ) -> Result<(Tensor<Self>, BatchStats<Self>)> {
        let dims = batchnorm::check(&x.shape, &[&gamma.shape, &beta.shape])?;
        let (mean, var) = batchnorm::cpu::stats(&x.storage, dims);
        let y = batchnorm::cpu::apply(
            &x.storage,
            dims,
            &gamma.storage,
            &beta.storage,
            &mean,
            &var,
            eps,
            relu,
        );
        let c = Shape::new([dims[1]]);
        Ok((
            self.t(x.shape.clone(), y),
            BatchStats {
                mean: self.t(c.clone(), mean),
                var: self.t(c, var),
            },
        ))
    }

    fn batchnorm_forward_eval(
        &self,
        x: &Tensor<Self>,
        gamma: &Tensor<Self>,
        beta: &Tensor<Self>,
        mean: &Tensor<Self>,
        var: &Tensor<Self>,
        eps: f32,
        relu: bool,
    ) -> Result<Tensor<Self>> {
        let dims = batchnorm::check(
            &x.shape,
            &[&gamma.shape, &beta.shape, &mean.shape, &var.shape],
        )?;
        let y = batchnorm::cpu::apply(
            &x.storage,
            dims,
            &gamma.storage,
            &beta.storage,
            &mean.storage,
            &var.storage,
            eps,
            relu,
        );
        Ok(self.t(x.shape.clone(), y))
    }

    fn batchnorm_backward(
        &self,
        x: &Tensor<Self>,
        gamma: &Tensor<Self>,
        stats: &BatchStats<Self>,
        y: &Tensor<Self>,
        dy: &Tensor<Self>,
        eps: f32,
        relu: bool,
    ) -> Result<(Tensor<Self>, Tensor<Self>, Tensor<Self>)> {
        let dims = batchnorm::check(
            &x.shape,
            &[&gamma.shape, &stats.mean.shape, &stats.var.shape],
        )?;
        same_shape("batchnorm_backward", &x.shape, &dy.shape)?;
        same_shape("batchnorm_backward", &x.shape, &y.shape)?;
        let (dx, dg, db) = batchnorm::cpu::backward(
            &x.storage,
            dims,
            &gamma.storage,
            &stats.mean.storage,
            &stats.var.storage,
            &y.storage,
            &dy.storage,
            eps,
            relu,
        );
        let c = Shape::new([dims[1]]);
        Ok((
            self.t(x.shape.clone(), dx),
            self.t(c.clone(), dg),
            self.t(c, db),
        ))
    }

    fn batchnorm_update_running(
        &self,
        running_mean: &mut Tensor<Self>,
        running_var: &mut Tensor<Self>,
        stats: &BatchStats<Self>,
        momentum: f32,
        n: usize,
    ) -> Result<()> {
        same_shape(
            "batchnorm_update_running",
            &running_mean.shape,
            &stats.mean.shape,
        )?;
        same_shape(
            "batchnorm_update_running",
            &running_var.shape,
            &stats.var.shape,
        )?;
        batchnorm::cpu::update_running(
            &mut running_mean.storage,
            &mut running_var.storage,
            &stats.mean.storage,
            &stats.var.storage,
            momentum,
            n,
        );
        Ok(())
    }

    fn dropout_forward(
        &self,
        x: &Tensor<Self>,
        rate: f32,
        seed: u64,
    ) -> Result<(Tensor<Self>, Tensor<Self>)> {
        dropout::check_rate(rate)?;
        let mask = dropout::cpu::mask(x.numel(), rate, seed);
        let y = elementwise::cpu::mul(&x.storage, &mask);
        Ok((self.t(x.shape.clone(), y), self.t(x.shape.clone(), mask)))
    }

    fn maxpool2d_forward(&self, x: &Tensor<Self>, p: Pool2dParams) -> Result<Tensor<Self>> {
        let out = p.out_shape(&x.shape)?;
        let d = x.shape.nchw("maxpool2d")?;
        Ok(self.t(
            out.clone(),
            pool::cpu::max_forward(&x.storage, d, [out.dim(2), out.dim(3)], p),
        ))
    }

    fn maxpool2d_backward(
        &self,
        x: &Tensor<Self>,
        dy: &Tensor<Self>,
        p: Pool2dParams,
    ) -> Result<Tensor<Self>> {
        let out = p.out_shape(&x.shape)?;
        same_shape("maxpool2d_backward", &out, &dy.shape)?;
        let d = x.shape.nchw("maxpool2d")?;
        Ok(self.t(
            x.shape.clone(),
            pool::cpu::max_backward(&x.storage, &dy.storage, d, [out.dim(2), out.dim(3)], p),
        ))
    }

    fn global_avgpool_forward(&self, x: &Tensor<Self>) -> Result<Tensor<Self>> {
        let [n, c, h, w] = x.shape.nchw("global_avgpool")?;
        if h * w == 0 {
            return Err(Error::shape(
                "global_avgpool",
                format!("empty input {}", x.shape),
            ));
        }
        Ok(self.t(
            Shape::new([n, c, 1, 1]),
            pool::cpu::avg_forward(&x.storage, h * w),
        ))
    }

    fn global_avgpool_backward(&self, dy: &Tensor<Self>, input: &Shape) -> Result<Tensor<Self>> {
        let [n, c, h, w] = input.nchw("global_avgpool")?;
        same_shape(
            "global_avgpool_backward",
            &Shape::new([n, c, 1, 1]),
            &dy.shape,
        )?;
        Ok(self.t(input.clone(), pool::cpu::avg_backward(&dy.storage, h * w)))
    }

    fn join_forward(&self, inputs: &[&Tensor<Self>]) -> Result<Tensor<Self>> {
        let shapes: Vec<&Shape> = inputs.iter().map(|t| &t.shape).collect();
        join::check(&shapes)?;
        let data: Vec<&[f32]> = inputs.iter().map(|t| t.storage.as_slice()).collect();
        Ok(self.t(inputs[0].shape.clone(), join::cpu::mean(&data)))
    }

    fn linear_forward(
        &self,
        x: &Tensor<Self>,
        w: &Tensor<Self>,
        b: &Tensor<Self>,
    ) -> Result<Tensor<Self>> {
        let d = linear::check(&x.shape, &w.shape, &b.shape)?;
        Ok(self.t(
            Shape::new([d[0], d[2]]),
            linear::cpu::forward(&x.storage, &w.storage, &b.storage, d),
        ))
    }

    fn linear_backward(
        &self,
        x: &Tensor<Self>,
        w: &Tensor<Self>,
        dy: &Tensor<Self>,
    ) -> Result<(Tensor<Self>, Tensor<Self>, Tensor<Self>)> {
        let [n, _] = x.shape.matrix("linear")?;
        let [k, _] = w.shape.matrix("linear")?;
        let d = linear::check(&x.shape, &w.shape, &Shape::new([k]))?;
        same_shape("linear_backward", &Shape::new([n, k]), &dy.shape)?;
        let (dx, dw, db) = linear::cpu::backward(&x.storage, &w.storage, &dy.storage, d);
        Ok((
            self.t(x.shape.clone(), dx),
            self.t(w.shape.clone(), dw),
            self.t(Shape::new([k]), db),
        ))
    }

    fn softmax_xent(
        &self,
        logits: &Tensor<Self>,
        labels: &Tensor<Self>,
    ) -> Result<(Tensor<Self>, Tensor<Self>)> {
        let d = softmax_xent::check(&logits.shape, &labels.shape)?;
        softmax_xent::check_labels(&labels.storage, d[1])?;
        let (loss, dz) = softmax_xent::cpu::forward_backward(&logits.storage, &labels.storage, d);
        Ok((
            self.t(Shape::new([1]), vec![loss]),
            self.t(logits.shape.clone(), dz),
        ))
    }

    fn argmax(&self, logits: &Tensor<Self>) -> Result<Tensor<Self>> {
        let d = logits.shape.matrix("argmax")?;
        Ok(self.t(
            Shape::new([d[0]]),
            softmax_xent::cpu::argmax(&logits.storage, d),
        ))
    }

    fn sgd_update(
        &self,
        w: &mut Tensor<Self>,
        g: &Tensor<Self>,
        v: &mut Tensor<Self>,
        lr: f32,
        momentum: f32,
        weight_decay: f32,
    ) -> Result<()> {
        same_shape("sgd_update", &w.shape, &g.shape)?;
        same_shape("sgd_update", &w.shape, &v.shape)?;
        sgd::cpu::update(
            &mut w.storage,
            &g.storage,
            &mut v.storage,
            lr,
            momentum,
            weight_decay,
        );
        Ok(())
    }
}
