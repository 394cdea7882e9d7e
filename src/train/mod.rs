//! Training and evaluation on image data sets: the paper's recipe, drop-path per
//! mini-batch, precise BN calibration, per-column evaluation, metrics.

pub mod checkpoint;
pub mod npy;

use crate::backend::Backend;
use crate::data::{Augment, Images, augment_batch, normalise_into};
use crate::error::{Error, Result};
use crate::model::{Mode, Network, Sgd, StatsSel};
use crate::plan::{DropPath, KeepMask};
use crate::rng::{RngState, SeededRng, streams};
use crate::tensor::{Shape, Tensor};
use serde::{Deserialize, Serialize};

/// Optimisation and regularisation settings of a run (the network's own settings, such as
/// dropout rates, live in its `FractalConfig`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub global_ratio: f64,
    pub local_p: f64,
    pub augment: String,
    /// Training images used to calibrate BN statistics (precise BN); 0 = moving averages.
    pub bn_calib: usize,
    pub seed: u64,
    /// How the learning rate falls over the run (files written before it existed: `Step`).
    #[serde(default)]
    pub schedule: Schedule,
}

/// The learning-rate schedule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// The paper's: divided by 10 each time the remaining epochs halve (per epoch).
    #[default]
    Step,
    /// lr * (1 + cos(pi t / T)) / 2 over the run's T steps, updated every step: for short
    /// runs, where the step schedule spends its last quarter at 1/100 of the rate or less.
    Cosine,
}

impl Recipe {
    pub fn drop_path(&self) -> DropPath {
        DropPath {
            global_ratio: self.global_ratio,
            local_p: self.local_p,
        }
    }

    /// The learning rate of `epoch` (0-based): divided by 10 each time the number of
    /// remaining epochs halves, i.e. at 1/2, 3/4, 7/8, ... of the run.
    pub fn lr_at(&self, epoch: usize) -> f32 {
        let remaining = self.epochs.saturating_sub(epoch).max(1);
        let mut k = 0;
        while remaining << (k + 1) <= self.epochs {
            k += 1;
        }
        (self.lr as f64 * 0.1f64.powi(k)) as f32
    }

    /// The learning rate of step `step` (0-based, within the epoch) of `epoch`, for
    /// `steps_per_epoch` steps per epoch.
    pub fn lr_at_step(&self, epoch: usize, step: usize, steps_per_epoch: usize) -> f32 {
        match self.schedule {
            Schedule::Step => self.lr_at(epoch),
            Schedule::Cosine => {
                let total = (self.epochs * steps_per_epoch).max(1) as f64;
                let t = (epoch * steps_per_epoch + step) as f64;
                let f = 0.5 * (1.0 + (std::f64::consts::PI * t / total).cos());
                (self.lr as f64 * f) as f32
            }
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::config("--epochs must be at least 1"));
        }
        if self.batch_size < 2 {
            return Err(Error::config(format!(
                "--batch-size {} must be at least 2 (BatchNorm needs two samples)",
                self.batch_size
            )));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(Error::config(format!("--lr {} must be positive", self.lr)));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(Error::config(format!(
                "--momentum {} is outside [0, 1)",
                self.momentum
            )));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(Error::config(format!(
                "--weight-decay {} must be >= 0",
                self.weight_decay
            )));
        }
        if !(0.0..=1.0).contains(&self.global_ratio) {
            return Err(Error::config(format!(
                "--global-ratio {} is outside [0, 1]",
                self.global_ratio
            )));
        }
        if !(0.0..1.0).contains(&self.local_p) {
            return Err(Error::config(format!(
                "--local-p {} is outside [0, 1)",
                self.local_p
            )));
        }
        Augment::parse(&self.augment)?;
        Ok(())
    }
}

/// The normalised data a run trains on.
pub struct DataSplits {
    pub train: Images,
    pub val: Option<Images>,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// Builds an input batch: normalised images `idx` (augmented when `aug` is given) and labels.
pub fn make_batch<B: Backend>(
    b: &B,
    images: &Images,
    idx: &[usize],
    mean: &[f32],
    std: &[f32],
    aug: Option<(Augment, &mut SeededRng)>,
) -> Result<(Tensor<B>, Tensor<B>)> {
    let (c, h, w) = (images.channels, images.height, images.width);
    let mut x = vec![0.0f32; idx.len() * c * h * w];
    normalise_into(images, idx, mean, std, &mut x);
    if let Some((a, rng)) = aug {
        augment_batch(&mut x, idx.len(), c, h, w, a, rng);
    }
    let labels: Vec<f32> = idx.iter().map(|&i| images.labels[i] as f32).collect();
    Ok((
        b.from_host(Shape::new([idx.len(), c, h, w]), &x)?,
        b.from_host(Shape::new([idx.len()]), &labels)?,
    ))
}

/// Accuracy and mean loss of one network/mask over a set of images.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Evaluation {
    pub accuracy: f64,
    pub loss: f64,
    pub n: usize,
    pub ms_per_image: f64,
}

/// Evaluates `mask` with `stats` over every image of `images` in batches; optionally
/// collects the logits ([N, K] row-major).
#[allow(clippy::too_many_arguments)]
pub fn evaluate<B: Backend>(
    b: &B,
    net: &mut Network<B>,
    images: &Images,
    mean: &[f32],
    std: &[f32],
    mask: &KeepMask,
    stats: StatsSel,
    batch_size: usize,
    mut logits_out: Option<&mut Vec<f32>>,
) -> Result<Evaluation> {
    let n = images.len();
    if n == 0 {
        return Err(Error::config("evaluation set is empty"));
    }
    let start = std::time::Instant::now();
    let (mut correct, mut loss_sum) = (0usize, 0.0f64);
    let idx: Vec<usize> = (0..n).collect();
    for chunk in idx.chunks(batch_size.max(1)) {
        let (x, y) = make_batch(b, images, chunk, mean, std, None)?;
        let logits = net.predict(b, &x, mask, stats)?;
        let (loss, _) = b.softmax_xent(&logits, &y)?;
        let pred = b.argmax(&logits)?;
        let mut back = b.to_host_many(&[&loss, &pred, &logits])?.into_iter();
        let (loss, pred, host_logits) = (
            back.next().unwrap_or_default(),
            back.next().unwrap_or_default(),
            back.next().unwrap_or_default(),
        );
        loss_sum += loss.first().copied().unwrap_or(f32::NAN) as f64 * chunk.len() as f64;
        correct += pred
            .iter()
            .zip(chunk)
            .filter(|(p, i)| **p as u32 == images.labels[**i])
            .count();
        if let Some(out) = logits_out.as_deref_mut() {
            out.extend(host_logits);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Evaluation {
        accuracy: correct as f64 / n as f64,
        loss: loss_sum / n as f64,
        n,
        ms_per_image: secs * 1e3 / n as f64,
    })
}

/// Precise BN (shared/SPEC.md): re-estimates the full network's BN statistics and every
/// column's own statistics over `n` training images (a seeded choice), with frozen weights,
/// no dropout and no augmentation. Afterwards the network has column statistics.
#[allow(clippy::too_many_arguments)]
pub fn calibrate<B: Backend>(
    b: &B,
    net: &mut Network<B>,
    images: &Images,
    mean: &[f32],
    std: &[f32],
    n: usize,
    batch_size: usize,
    seed: u64,
) -> Result<()> {
    if n == 0 || images.is_empty() {
        return Ok(());
    }
    let mut order: Vec<usize> = (0..images.len()).collect();
    SeededRng::derived(seed, streams::CALIBRATION).shuffle(&mut order);
    order.truncate(n.min(images.len()));
    // BatchNorm needs two samples per batch: fold a lone last image into the batch before.
    let mut batches: Vec<&[usize]> = order.chunks(batch_size.max(2)).collect();
    if batches.len() > 1 && batches.last().is_some_and(|c| c.len() < 2) {
        batches.pop();
    }
    let cfg = net.config().clone();
    let mut masks = vec![(KeepMask::all(&cfg), StatsSel::Running)];
    for g in 0..cfg.columns {
        masks.push((KeepMask::column(&cfg, g)?, StatsSel::Column));
    }
    for (mask, stats) in &masks {
        for (k, chunk) in batches.iter().enumerate() {
            let (x, _) = make_batch(b, images, chunk, mean, std, None)?;
            net.forward(
                b,
                &x,
                mask,
                Mode::Calibrate {
                    stats: *stats,
                    batch_index: k,
                },
            )?;
        }
    }
    net.params.has_column_stats = true;
    Ok(())
}

/// Everything besides the weights that a resumed run needs to continue bit for bit: the
/// position (epoch, step within it), every random stream, and the epoch's running totals.
/// The epoch's data order is not stored: it is re-drawn from `order_rng`, which is saved as
/// it was before the epoch's shuffle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Epochs completed.
    pub epoch: usize,
    /// Optimiser steps taken in the whole run.
    pub step: u64,
    /// Steps already taken in the current (unfinished) epoch; 0 at an epoch boundary.
    pub step_in_epoch: usize,
    pub order_rng: RngState,
    pub augment_rng: RngState,
    pub droppath_rng: RngState,
    pub dropout_rng: RngState,
    pub loss_sum: f64,
    pub correct: usize,
    pub seen: usize,
    /// Seconds spent training in the current epoch before an interruption.
    pub epoch_seconds: f64,
    /// Best validation accuracy so far (chooses best.safetensors).
    pub best_val_acc: Option<f64>,
}

impl TrainState {
    pub fn new(seed: u64) -> Self {
        TrainState {
            epoch: 0,
            step: 0,
            step_in_epoch: 0,
            order_rng: SeededRng::derived(seed, streams::DATA_ORDER).state(),
            augment_rng: SeededRng::derived(seed, streams::AUGMENT).state(),
            droppath_rng: SeededRng::derived(seed, streams::DROP_PATH).state(),
            dropout_rng: SeededRng::derived(seed, streams::DROPOUT).state(),
            loss_sum: 0.0,
            correct: 0,
            seen: 0,
            epoch_seconds: 0.0,
            best_val_acc: None,
        }
    }
}

fn rng(s: &RngState) -> Result<SeededRng> {
    SeededRng::from_state(s)
        .ok_or_else(|| Error::config(format!("corrupt random-stream state {s:?}")))
}

/// How an epoch ended.
#[derive(Clone, Debug, PartialEq)]
pub enum EpochEnd {
    Finished(EpochTotals),
    /// `stop` was raised: the state points at the next step of this epoch.
    Interrupted,
}

/// Running sums of one epoch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EpochTotals {
    pub loss_sum: f64,
    pub correct: usize,
    pub seen: usize,
}

/// Trains one epoch (or the rest of it, after a resume). `on_step(images_done, mean loss,
/// accuracy)` after every step. When `stop` becomes true the epoch ends early at a step
/// boundary with the state ready to be saved and resumed.
#[allow(clippy::too_many_arguments)]
pub fn train_epoch<B: Backend>(
    b: &B,
    net: &mut Network<B>,
    sgd: &mut Sgd<B>,
    recipe: &Recipe,
    data: &DataSplits,
    state: &mut TrainState,
    stop: &std::sync::atomic::AtomicBool,
    mut on_step: impl FnMut(usize, f64, f64),
) -> Result<EpochEnd> {
    let aug = Augment::parse(&recipe.augment)?;
    let dp = recipe.drop_path();
    let cfg = net.config().clone();
    let mut order_rng = rng(&state.order_rng)?;
    let mut order: Vec<usize> = (0..data.train.len()).collect();
    order_rng.shuffle(&mut order);
    let mut batches: Vec<&[usize]> = order.chunks(recipe.batch_size).collect();
    batches.truncate(steps_per_epoch(order.len(), recipe.batch_size));
    let (mut aug_rng, mut dp_rng, mut do_rng) = (
        rng(&state.augment_rng)?,
        rng(&state.droppath_rng)?,
        rng(&state.dropout_rng)?,
    );
    for chunk in batches.iter().skip(state.step_in_epoch) {
        sgd.lr = recipe.lr_at_step(state.epoch, state.step_in_epoch, batches.len());
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            state.augment_rng = aug_rng.state();
            state.droppath_rng = dp_rng.state();
            state.dropout_rng = do_rng.state();
            return Ok(EpochEnd::Interrupted);
        }
        let (x, y) = make_batch(
            b,
            &data.train,
            chunk,
            &data.mean,
            &data.std,
            Some((aug, &mut aug_rng)),
        )?;
        let (mask, _) = dp.sample(&cfg, &mut dp_rng);
        let seed = do_rng.next_u64();
        let (loss, logits) = net.train_step(b, &x, &y, &mask, seed, sgd)?;
        // the step's one read-back: its loss and predictions together
        let mut back = b.to_host_many(&[&loss, &b.argmax(&logits)?])?.into_iter();
        let (loss, pred) = (
            back.next().unwrap_or_default(),
            back.next().unwrap_or_default(),
        );
        let loss = loss.first().copied().unwrap_or(f32::NAN);
        if !loss.is_finite() {
            return Err(Error::Diverged {
                what: format!(
                    "loss {loss} at epoch {} step {}",
                    state.epoch + 1,
                    state.step + 1
                ),
            });
        }
        state.correct += pred
            .iter()
            .zip(chunk.iter())
            .filter(|(p, i)| **p as u32 == data.train.labels[**i])
            .count();
        state.loss_sum += loss as f64 * chunk.len() as f64;
        state.seen += chunk.len();
        state.step += 1;
        state.step_in_epoch += 1;
        on_step(
            state.seen,
            state.loss_sum / state.seen as f64,
            state.correct as f64 / state.seen as f64,
        );
    }
    let totals = EpochTotals {
        loss_sum: state.loss_sum,
        correct: state.correct,
        seen: state.seen,
    };
    state.epoch += 1;
    state.step_in_epoch = 0;
    state.order_rng = order_rng.state();
    state.augment_rng = aug_rng.state();
    state.droppath_rng = dp_rng.state();
    state.dropout_rng = do_rng.state();
    state.loss_sum = 0.0;
    state.correct = 0;
    state.seen = 0;
    state.epoch_seconds = 0.0;
    Ok(EpochEnd::Finished(totals))
}

/// Mini-batches per epoch over `n` images: a last batch of one image is dropped
/// (BatchNorm needs two samples).
pub fn steps_per_epoch(n: usize, batch_size: usize) -> usize {
    let chunks = n.div_ceil(batch_size.max(1));
    if chunks > 1 && n % batch_size.max(1) == 1 {
        chunks - 1
    } else {
        chunks
    }
}

/// One line of RUN_DIR/metrics.jsonl.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub lr: f32,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_loss: Option<f64>,
    pub val_acc: Option<f64>,
    pub val_acc_columns: Option<Vec<f64>>,
    pub val_loss_columns: Option<Vec<f64>>,
    pub seconds: f64,
    pub images_per_s: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(epochs: usize, schedule: Schedule) -> Recipe {
        Recipe {
            epochs,
            batch_size: 100,
            lr: 0.02,
            momentum: 0.9,
            weight_decay: 0.0,
            global_ratio: 0.5,
            local_p: 0.15,
            augment: "none".into(),
            bn_calib: 0,
            seed: 0,
            schedule,
        }
    }

    #[test]
    fn step_schedule_divides_by_ten_as_the_remaining_epochs_halve() {
        let r = recipe(8, Schedule::Step);
        // remaining 8..5 -> lr; 4, 3 -> lr/10; 2 -> lr/100; 1 -> lr/1000 (SPEC: at 1/2, 3/4, 7/8)
        let want = [0.02, 0.02, 0.02, 0.02, 0.002, 0.002, 0.0002, 0.00002];
        for (e, w) in want.iter().enumerate() {
            let got = r.lr_at(e);
            assert!((got - w).abs() <= 1e-9, "epoch {e}: {got} vs {w}");
            // per step it is constant within the epoch
            assert_eq!(r.lr_at_step(e, 37, 550), got);
        }
    }

    #[test]
    fn cosine_schedule_runs_from_lr_to_zero() {
        let r = recipe(4, Schedule::Cosine);
        let spe = 10;
        assert_eq!(r.lr_at_step(0, 0, spe), 0.02);
        // half way: (1 + cos(pi/2)) / 2 = 1/2
        assert!((r.lr_at_step(2, 0, spe) - 0.01).abs() < 1e-9);
        // a quarter: (1 + cos(pi/4)) / 2
        let q = 0.02 * (1.0 + std::f64::consts::FRAC_1_SQRT_2) / 2.0;
        assert!((r.lr_at_step(1, 0, spe) as f64 - q).abs() < 1e-9);
        // the last step is just above zero, and the rate never rises
        let last = r.lr_at_step(3, 9, spe) as f64;
        let want = 0.02 * (1.0 + (std::f64::consts::PI * 39.0 / 40.0).cos()) / 2.0;
        assert!(last > 0.0 && (last - want).abs() < 1e-9, "{last} vs {want}");
        let all: Vec<f32> = (0..4)
            .flat_map(|e| (0..spe).map(move |s| (e, s)))
            .map(|(e, s)| r.lr_at_step(e, s, spe))
            .collect();
        assert!(all.windows(2).all(|w| w[1] <= w[0]));
    }

    #[test]
    fn a_last_batch_of_one_image_is_dropped() {
        assert_eq!(steps_per_epoch(55_000, 100), 550);
        assert_eq!(steps_per_epoch(501, 100), 5);
        assert_eq!(steps_per_epoch(502, 100), 6);
        assert_eq!(steps_per_epoch(1, 100), 1);
        assert_eq!(steps_per_epoch(0, 100), 0);
    }
}
