//! What a device must provide to run a FractalNet: storage plus the op set, forward and backward.
//!
//! The model code (`crate::model`) is generic over `Backend` and never asks which one it has.
//! Each op's semantics and shape rules live in `crate::ops::<op>`; a backend implements the
//! arithmetic. The CPU backend is the reference; another backend (Vulkan) is conformance-tested
//! against it op by op.

pub mod cpu;
pub mod vulkan;

use crate::error::Result;
use crate::ops::batchnorm::BatchStats;
use crate::ops::conv2d::Conv2dParams;
use crate::ops::pool::Pool2dParams;
use crate::tensor::{Shape, Tensor};

pub use cpu::Cpu;

pub trait Backend: Sized {
    /// Device storage of `numel` f32 values.
    type Storage: Clone;

    /// A short human name ("cpu", "vulkan:0 NVIDIA H200").
    fn name(&self) -> String;

    // ---- storage -------------------------------------------------------------------------
    fn zeros(&self, shape: &Shape) -> Result<Tensor<Self>>;
    /// Uploads host data (named for what it takes, not a constructor of `Self`).
    #[allow(clippy::wrong_self_convention)]
    fn from_host(&self, shape: Shape, data: &[f32]) -> Result<Tensor<Self>>;
    fn to_host(&self, t: &Tensor<Self>) -> Result<Vec<f32>>;
    /// Several tensors at once: one wait for the device instead of one per tensor (the
    /// training loop reads a step's loss and predictions together).
    fn to_host_many(&self, ts: &[&Tensor<Self>]) -> Result<Vec<Vec<f32>>> {
        ts.iter().map(|t| self.to_host(t)).collect()
    }
    /// Waits until all queued work is done (a no-op on the CPU); for timing.
    fn sync(&self) -> Result<()> {
        Ok(())
    }

    // ---- element-wise --------------------------------------------------------------------
    /// acc += x (gradient accumulation where a value feeds several consumers).
    fn add_assign(&self, acc: &mut Tensor<Self>, x: &Tensor<Self>) -> Result<()>;
    /// x * s.
    fn scale(&self, x: &Tensor<Self>, s: f32) -> Result<Tensor<Self>>;
    /// a * b, element-wise (dropout's backward multiplies by its saved mask).
    fn mul(&self, a: &Tensor<Self>, b: &Tensor<Self>) -> Result<Tensor<Self>>;
    fn relu_forward(&self, x: &Tensor<Self>) -> Result<Tensor<Self>>;
    /// dy where y > 0, else 0.
    fn relu_backward(&self, y: &Tensor<Self>, dy: &Tensor<Self>) -> Result<Tensor<Self>>;

    // ---- convolution (cross-correlation, no bias, OIHW weights) --------------------------
    fn conv2d_forward(
        &self,
        x: &Tensor<Self>,
        w: &Tensor<Self>,
        p: Conv2dParams,
    ) -> Result<Tensor<Self>>;
    /// relu(conv(x, w) + bias[channel]): an inference layer with BatchNorm folded into its
    /// weights. By default `conv2d_forward`, then `batchnorm_forward_eval` as an identity
    /// BatchNorm that adds the bias: gamma and var `ones`, mean `zeros` ([Cout] each), eps 0,
    /// beta = bias, so its scale is exactly 1 and its shift exactly the bias, and it computes
    /// z + bias correctly rounded. A backend may fuse the two; the result must not change.
    ///
    /// `prepared` is what `conv2d_bias_relu_prepare` made of `w`, or empty. With it a backend
    /// may use another algorithm (the CPU: Winograd), whose rounding differs by a few ulps of
    /// the values summed; an empty one gives the values above.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_bias_relu_forward(
        &self,
        x: &Tensor<Self>,
        w: &Tensor<Self>,
        bias: &Tensor<Self>,
        ones: &Tensor<Self>,
        zeros: &Tensor<Self>,
        prepared: &Tensor<Self>,
        p: Conv2dParams,
    ) -> Result<Tensor<Self>> {
        let _ = prepared;
        let z = self.conv2d_forward(x, w, p)?;
        self.batchnorm_forward_eval(&z, ones, bias, zeros, ones, 0.0, true)
    }
    /// A rearrangement of a folded inference layer's 3x3 weight [Cout, Cin, 3, 3] for a faster
    /// `conv2d_bias_relu_forward` on inputs of `hw` [H, W] (what the plan expects; other
    /// sizes still compute correctly), made once when a network is loaded; None (the
    /// default) where the backend has none.
    fn conv2d_bias_relu_prepare(
        &self,
        w: &Tensor<Self>,
        hw: [usize; 2],
    ) -> Result<Option<Tensor<Self>>> {
        let _ = (w, hw);
        Ok(None)
    }
    /// Returns (dx if `need_dx`, dw).
    fn conv2d_backward(
        &self,
        x: &Tensor<Self>,
        w: &Tensor<Self>,
        dy: &Tensor<Self>,
        p: Conv2dParams,
        need_dx: bool,
    ) -> Result<(Option<Tensor<Self>>, Tensor<Self>)>;

    // ---- BatchNorm over (N, H, W) per channel, optionally fused with ReLU -----------------
    /// Training mode: normalise with the batch mean and biased variance; returns y and the
    /// batch statistics (mean, biased var) that the backward pass and the running update use.
    fn batchnorm_forward_train(
        &self,
        x: &Tensor<Self>,
        gamma: &Tensor<Self>,
        beta: &Tensor<Self>,
        eps: f32,
        relu: bool,
    ) -> Result<(Tensor<Self>, BatchStats<Self>)>;
    /// Evaluation mode: normalise with the given statistics.
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_forward_eval(
        &self,
        x: &Tensor<Self>,
        gamma: &Tensor<Self>,
        beta: &Tensor<Self>,
        mean: &Tensor<Self>,
        var: &Tensor<Self>,
        eps: f32,
        relu: bool,
    ) -> Result<Tensor<Self>>;
    /// Returns (dx, dgamma, dbeta). `y` is the forward output (its sign masks the fused ReLU).
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_backward(
        &self,
        x: &Tensor<Self>,
        gamma: &Tensor<Self>,
        stats: &BatchStats<Self>,
        y: &Tensor<Self>,
        dy: &Tensor<Self>,
        eps: f32,
        relu: bool,
    ) -> Result<(Tensor<Self>, Tensor<Self>, Tensor<Self>)>;
    /// running_mean <- (1-m) running_mean + m mean;
    /// running_var <- (1-m) running_var + m var * n/(n-1), n = N*H*W of the batch.
    fn batchnorm_update_running(
        &self,
        running_mean: &mut Tensor<Self>,
        running_var: &mut Tensor<Self>,
        stats: &BatchStats<Self>,
        momentum: f32,
        n: usize,
    ) -> Result<()>;

    // ---- dropout -------------------------------------------------------------------------
    /// Returns (y, mask) with mask[i] = 0 or 1/(1-rate), drawn from the counter-based RNG
    /// `crate::rng::philox_uniform(seed, i)`, so every backend draws the same mask.
    fn dropout_forward(
        &self,
        x: &Tensor<Self>,
        rate: f32,
        seed: u64,
    ) -> Result<(Tensor<Self>, Tensor<Self>)>;

    // ---- pooling -------------------------------------------------------------------------
    fn maxpool2d_forward(&self, x: &Tensor<Self>, p: Pool2dParams) -> Result<Tensor<Self>>;
    /// Routes dy to the first maximum of each window (row-major order), recomputed from x.
    fn maxpool2d_backward(
        &self,
        x: &Tensor<Self>,
        dy: &Tensor<Self>,
        p: Pool2dParams,
    ) -> Result<Tensor<Self>>;
    /// Mean over H and W: [N, C, H, W] -> [N, C, 1, 1].
    fn global_avgpool_forward(&self, x: &Tensor<Self>) -> Result<Tensor<Self>>;
    fn global_avgpool_backward(&self, dy: &Tensor<Self>, input: &Shape) -> Result<Tensor<Self>>;

    // ---- join ----------------------------------------------------------------------------
    /// Mean of the inputs: summed in the order given (ascending column), divided by the count.
    fn join_forward(&self, inputs: &[&Tensor<Self>]) -> Result<Tensor<Self>>;

    // ---- classifier ----------------------------------------------------------------------
    /// y[N, K] = x[N, F] w[K, F]^T + b[K].
    fn linear_forward(
        &self,
        x: &Tensor<Self>,
        w: &Tensor<Self>,
        b: &Tensor<Self>,
    ) -> Result<Tensor<Self>>;
    /// Returns (dx, dw, db).
    fn linear_backward(
        &self,
        x: &Tensor<Self>,
        w: &Tensor<Self>,
        dy: &Tensor<Self>,
    ) -> Result<(Tensor<Self>, Tensor<Self>, Tensor<Self>)>;
    /// Softmax cross-entropy, mean over the batch. `labels` holds class indices as f32 [N].
    /// Returns (loss [1], dlogits [N, K]).
    fn softmax_xent(
        &self,
        logits: &Tensor<Self>,
        labels: &Tensor<Self>,
    ) -> Result<(Tensor<Self>, Tensor<Self>)>;
    /// Index of the largest logit per row (the first on ties), as f32 [N].
    fn argmax(&self, logits: &Tensor<Self>) -> Result<Tensor<Self>>;

    // ---- optimiser -----------------------------------------------------------------------
    /// SGD with momentum and weight decay (shared/SPEC.md):
    /// v <- momentum v + (g + wd w); w <- w - lr v.
    fn sgd_update(
        &self,
        w: &mut Tensor<Self>,
        g: &Tensor<Self>,
        v: &mut Tensor<Self>,
        lr: f32,
        momentum: f32,
        weight_decay: f32,
    ) -> Result<()>;
}
