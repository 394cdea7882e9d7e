//! A network = a plan + its parameters; one executor runs it forward and backward under any
//! keep-mask. Dead nodes (see `Plan::liveness`) are never computed, get no gradient, and
//! their BatchNorm statistics are left untouched.

pub mod extract;
pub mod io;
pub mod params;
pub mod stats;
pub mod unit;

pub use params::{ParamSpec, Params, Role};
pub use unit::{Mode, StatsSel};

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::plan::{FractalConfig, KeepMask, Liveness, Op, Plan};
use crate::rng::SeededRng;
use crate::tensor::{Shape, Tensor};
use unit::{UnitCache, UnitParamIdx};

pub struct Network<B: Backend> {
    pub plan: Plan,
    pub params: Params<B>,
    /// Per unit: indices of its tensors in `params`.
    unit_params: Vec<UnitParamIdx>,
    fc_weight: usize,
    fc_bias: usize,
}

/// Everything a training forward pass keeps for the backward pass.
pub struct ForwardPass<B: Backend> {
    pub logits: Tensor<B>,
    pub liveness: Liveness,
    values: Vec<Option<Tensor<B>>>,
    caches: Vec<Option<UnitCache<B>>>,
}

impl<B: Backend> std::fmt::Debug for ForwardPass<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ForwardPass(logits {})", self.logits.shape)
    }
}

/// Gradients of one backward pass: per parameter (None = not reached: dead, or a buffer),
/// and of the input when asked.
pub struct Grads<B: Backend> {
    pub params: Vec<Option<Tensor<B>>>,
    pub input: Option<Tensor<B>>,
}

/// Whether tensor `name` belongs to the network of column c alone: a tensor of no column
/// (`stem.*`, `fc.*`) belongs to every column.
pub fn in_column(name: &str, c: usize) -> bool {
    !name.starts_with("block") || name.contains(&format!(".col{c}."))
}

/// The tensor list of a network with this config, in `Params` order: units in plan order
/// (the stem first, projections just before the join they feed), then `fc.weight`, `fc.bias`.
pub fn param_specs(plan: &Plan) -> Vec<ParamSpec> {
    let mut specs: Vec<ParamSpec> = plan.units.iter().flat_map(unit::param_specs).collect();
    let (k, f) = (plan.config.classes, plan.features);
    specs.push(ParamSpec {
        name: "fc.weight".into(),
        shape: Shape::new([k, f]),
        role: Role::Weight {
            fan_in: f,
            fan_out: k,
        },
    });
    specs.push(ParamSpec {
        name: "fc.bias".into(),
        shape: Shape::new([k]),
        role: Role::Bias,
    });
    specs
}

impl<B: Backend> Network<B> {
    /// A freshly initialised network (Xavier weights from `seed`, BN gamma 1 and beta 0).
    pub fn new(backend: &B, config: &FractalConfig, seed: u64) -> Result<Self> {
        let plan = Plan::new(config)?;
        let mut rng = SeededRng::derived(seed, crate::rng::streams::INIT);
        let params = Params::init(backend, param_specs(&plan), &mut rng)?;
        Self::from_params(plan, params)
    }

    /// Wraps existing parameters (e.g. loaded from a checkpoint); they must match the plan.
    pub fn from_params(plan: Plan, params: Params<B>) -> Result<Self> {
        let specs = param_specs(&plan);
        if specs.len() != params.specs.len() {
            return Err(Error::config(format!(
                "{} tensors given, the plan needs {}",
                params.specs.len(),
                specs.len()
            )));
        }
        for (want, got) in specs.iter().zip(&params.specs) {
            if want.name != got.name || want.shape != got.shape {
                return Err(Error::config(format!(
                    "tensor {} {} does not fit the plan's {} {}",
                    got.name, got.shape, want.name, want.shape
                )));
            }
        }
        let mut unit_params = Vec::with_capacity(plan.units.len());
        let mut next = 0;
        for u in &plan.units {
            let n = unit::param_specs(u).len();
            unit_params.push(UnitParamIdx((next..next + n).collect()));
            next += n;
        }
        Ok(Network {
            plan,
            params,
            unit_params,
            fc_weight: next,
            fc_bias: next + 1,
        })
    }

    /// Rebuilds the backend-prepared tensors (`Role::Prepared`: a folded layer's weight
    /// arranged for the backend's fastest kernel) from the current weights, for the units of
    /// `column` (an extracted column's file holds no others) or of every column. Loading a
    /// file does it; until then, or where the backend has no such kernel, they stay empty
    /// and the plain kernels run.
    pub fn prepare(&mut self, b: &B, column: Option<usize>) -> Result<()> {
        for (u, idx) in self.plan.units.iter().zip(&self.unit_params) {
            if column.is_none_or(|c| u.in_column(c)) {
                unit::prepare(b, u, idx, &mut self.params)?;
            }
        }
        Ok(())
    }

    pub fn config(&self) -> &FractalConfig {
        &self.plan.config
    }

    /// Runs the plan on a batch `x` [N, C, H, W] under `mask`. In `Mode::Train` the returned
    /// pass holds what `backward` needs; otherwise values are freed as soon as they are used.
    pub fn forward(
        &mut self,
        b: &B,
        x: &Tensor<B>,
        mask: &KeepMask,
        mode: Mode,
    ) -> Result<ForwardPass<B>> {
        let cfg = &self.plan.config;
        let want = [cfg.in_channels, cfg.input_hw[0], cfg.input_hw[1]];
        let [n, c, h, w] = x.shape.nchw("network input")?;
        if [c, h, w] != want || n == 0 {
            return Err(Error::shape(
                "network input",
                format!(
                    "got {}, the network takes [N, {}, {}, {}]",
                    x.shape, want[0], want[1], want[2]
                ),
            ));
        }
        let liveness = self.plan.liveness(mask)?;
        let nodes = self.plan.nodes.len();
        let train = matches!(mode, Mode::Train { .. });
        // Last reader of each value, to free values early outside training.
        let mut last_use = vec![0usize; nodes];
        for i in 0..nodes {
            for &a in &liveness.active[i] {
                last_use[a] = i;
            }
        }
        let mut values: Vec<Option<Tensor<B>>> = (0..nodes).map(|_| None).collect();
        let mut caches: Vec<Option<UnitCache<B>>> = (0..nodes).map(|_| None).collect();
        for i in 0..nodes {
            if !liveness.live[i] {
                continue;
            }
            let node = &self.plan.nodes[i];
            let arg = |k: usize| -> Result<&Tensor<B>> {
                values[liveness.active[i][k]].as_ref().ok_or_else(|| {
                    Error::config(format!("internal: node {i} input {k} not computed"))
                })
            };
            let out = match &node.op {
                Op::Input => x.clone(),
                Op::Unit(u) => {
                    let unit = &self.plan.units[*u];
                    let (y, cache) = unit::forward(
                        b,
                        unit,
                        &self.unit_params[*u],
                        &mut self.params,
                        arg(0)?,
                        mode,
                    )?;
                    caches[i] = cache;
                    y
                }
                Op::Join { .. } => {
                    let ins: Vec<&Tensor<B>> = liveness.active[i]
                        .iter()
                        .map(|&a| values[a].as_ref())
                        .collect::<Option<_>>()
                        .ok_or_else(|| {
                            Error::config(format!("internal: join {i} input not computed"))
                        })?;
                    b.join_forward(&ins)?
                }
                Op::MaxPool(p) => b.maxpool2d_forward(arg(0)?, *p)?,
                Op::GlobalAvgPool => b.global_avgpool_forward(arg(0)?)?,
                Op::Classifier => {
                    let xin = arg(0)?.clone().reshape([n, self.plan.features])?;
                    b.linear_forward(
                        &xin,
                        &self.params.tensors[self.fc_weight],
                        &self.params.tensors[self.fc_bias],
                    )?
                }
            };
            values[i] = Some(out);
            if !train {
                for &a in &liveness.active[i] {
                    if last_use[a] == i {
                        values[a] = None;
                    }
                }
            }
        }
        let logits = values[self.plan.output]
            .take()
            .ok_or_else(|| Error::config("internal: no logits"))?;
        if train {
            values[self.plan.output] = Some(logits.clone());
        }
        Ok(ForwardPass {
            logits,
            liveness,
            values,
            caches,
        })
    }

    /// Backpropagates `dlogits` through a training pass. Parameters of dead units get `None`.
    pub fn backward(
        &self,
        b: &B,
        pass: ForwardPass<B>,
        dlogits: &Tensor<B>,
        input_grad: bool,
    ) -> Result<Grads<B>> {
        let ForwardPass {
            liveness,
            mut values,
            mut caches,
            ..
        } = pass;
        let nodes = self.plan.nodes.len();
        let mut grads: Vec<Option<Tensor<B>>> = (0..nodes).map(|_| None).collect();
        let mut pgrads: Vec<Option<Tensor<B>>> =
            (0..self.params.tensors.len()).map(|_| None).collect();
        grads[self.plan.output] = Some(dlogits.clone());
        let mut input_g = None;
        let add = |grads: &mut Vec<Option<Tensor<B>>>, at: usize, g: Tensor<B>| -> Result<()> {
            match &mut grads[at] {
                Some(acc) => b.add_assign(acc, &g),
                slot => {
                    *slot = Some(g);
                    Ok(())
                }
            }
        };
        for i in (0..nodes).rev() {
            if !liveness.live[i] {
                continue;
            }
            let Some(g) = grads[i].take() else {
                // Live but not reached: only possible for the input when nothing needs dx.
                continue;
            };
            let node = &self.plan.nodes[i];
            let ins = &liveness.active[i];
            let missing =
                || Error::config(format!("internal: value of node {i} missing in backward"));
            match &node.op {
                Op::Input => input_g = Some(g),
                Op::Classifier => {
                    let xin = values[ins[0]].as_ref().ok_or_else(missing)?;
                    let shape = xin.shape.clone();
                    let n = shape.dim(0);
                    let xf = xin.clone().reshape([n, self.plan.features])?;
                    let (dx, dw, db) =
                        b.linear_backward(&xf, &self.params.tensors[self.fc_weight], &g)?;
                    pgrads[self.fc_weight] = Some(dw);
                    pgrads[self.fc_bias] = Some(db);
                    add(&mut grads, ins[0], dx.reshape(shape)?)?;
                }
                Op::Join { .. } => {
                    // Inputs that already hold a gradient add the share in place; the empty
                    // ones take a copy each, the last of them the share itself (one copy
                    // fewer). Each input gets the same contribution as before: same bits.
                    let share = b.scale(&g, 1.0 / ins.len() as f32)?;
                    let mut empty = Vec::with_capacity(ins.len());
                    for &a in ins {
                        match &mut grads[a] {
                            Some(acc) => b.add_assign(acc, &share)?,
                            None => empty.push(a),
                        }
                    }
                    // (`add`: an input listed twice, which no plan builds, gets both shares)
                    if let Some((&last, rest)) = empty.split_last() {
                        for &a in rest {
                            add(&mut grads, a, share.clone())?;
                        }
                        add(&mut grads, last, share)?;
                    }
                }
                Op::MaxPool(p) => {
                    let xin = values[ins[0]].as_ref().ok_or_else(missing)?;
                    let dx = b.maxpool2d_backward(xin, &g, *p)?;
                    add(&mut grads, ins[0], dx)?;
                }
                Op::GlobalAvgPool => {
                    let shape = values[ins[0]].as_ref().ok_or_else(missing)?.shape.clone();
                    add(&mut grads, ins[0], b.global_avgpool_backward(&g, &shape)?)?;
                }
                Op::Unit(u) => {
                    let unit = &self.plan.units[*u];
                    let cache = caches[i].take().ok_or_else(missing)?;
                    let y = values[i].as_ref().ok_or_else(missing)?;
                    let xin = values[ins[0]].as_ref().ok_or_else(missing)?;
                    let need_dx = input_grad || !matches!(self.plan.nodes[ins[0]].op, Op::Input);
                    let dx = unit::backward(
                        b,
                        unit,
                        &self.unit_params[*u],
                        &self.params,
                        xin,
                        y,
                        cache,
                        &g,
                        need_dx,
                        &mut pgrads,
                    )?;
                    if let Some(dx) = dx {
                        add(&mut grads, ins[0], dx)?;
                    }
                }
            }
            values[i] = None;
        }
        Ok(Grads {
            params: pgrads,
            input: input_g,
        })
    }

    /// One SGD step on a batch under `mask`: forward (training mode), softmax cross-entropy,
    /// backward, update. Returns the loss [1] and the logits, still on the device.
    #[allow(clippy::too_many_arguments)]
    pub fn train_step(
        &mut self,
        b: &B,
        x: &Tensor<B>,
        labels: &Tensor<B>,
        mask: &KeepMask,
        dropout_seed: u64,
        sgd: &mut Sgd<B>,
    ) -> Result<(Tensor<B>, Tensor<B>)> {
        let (loss, logits, grads) = self.loss_and_grads(b, x, labels, mask, dropout_seed, false)?;
        sgd.step(b, &mut self.params, &grads)?;
        Ok((loss, logits))
    }

    /// Forward in training mode, loss, and backward: (loss [1], logits, gradients).
    pub fn loss_and_grads(
        &mut self,
        b: &B,
        x: &Tensor<B>,
        labels: &Tensor<B>,
        mask: &KeepMask,
        dropout_seed: u64,
        input_grad: bool,
    ) -> Result<(Tensor<B>, Tensor<B>, Grads<B>)> {
        let pass = self.forward(b, x, mask, Mode::Train { dropout_seed })?;
        let logits = pass.logits.clone();
        let (loss, dlogits) = b.softmax_xent(&logits, labels)?;
        let grads = self.backward(b, pass, &dlogits, input_grad)?;
        Ok((loss, logits, grads))
    }

    /// Logits of a batch in evaluation mode under `mask`.
    pub fn predict(
        &mut self,
        b: &B,
        x: &Tensor<B>,
        mask: &KeepMask,
        stats: StatsSel,
    ) -> Result<Tensor<B>> {
        Ok(self.forward(b, x, mask, Mode::Eval { stats })?.logits)
    }

    /// The statistics to evaluate `mask` with: a single column uses its own calibrated
    /// statistics when the network has them; anything else the full network's.
    pub fn stats_for(&self, column: Option<usize>) -> StatsSel {
        if column.is_some() && self.params.has_column_stats {
            StatsSel::Column
        } else {
            StatsSel::Running
        }
    }
}

/// SGD with momentum and weight decay over the trainable tensors of a network.
pub struct Sgd<B: Backend> {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    /// One velocity per tensor of `Params` (buffers keep an unused zero-size entry).
    pub velocity: Vec<Tensor<B>>,
}

impl<B: Backend> Sgd<B> {
    pub fn new(
        b: &B,
        params: &Params<B>,
        lr: f32,
        momentum: f32,
        weight_decay: f32,
    ) -> Result<Self> {
        let empty = Shape::new([0]);
        let velocity = params
            .specs
            .iter()
            .map(|s| b.zeros(if s.role.trainable() { &s.shape } else { &empty }))
            .collect::<Result<_>>()?;
        Ok(Sgd {
            lr,
            momentum,
            weight_decay,
            velocity,
        })
    }

    /// Updates every trainable tensor that received a gradient. A tensor with no gradient
    /// (its unit was dead under this step's mask) is skipped entirely: no momentum step and no
    /// weight decay, as PyTorch does for a parameter whose `.grad` is None.
    pub fn step(&mut self, b: &B, params: &mut Params<B>, grads: &Grads<B>) -> Result<()> {
        for (i, g) in grads.params.iter().enumerate() {
            if let (Some(g), true) = (g, params.specs[i].role.trainable()) {
                b.sgd_update(
                    &mut params.tensors[i],
                    g,
                    &mut self.velocity[i],
                    self.lr,
                    self.momentum,
                    self.weight_decay,
                )?;
            }
        }
        Ok(())
    }
}
