//! An independent f64 implementation of the FractalNet forward pass, written from
//! shared/SPEC.md's recursive rule f_{C+1}(z) = join(f_C(f_C(z)), conv(z)) with collapsed
//! joins, without the engine's plan, ops or executor. It reads parameters by their SPEC names
//! (and docs/FORMAT.md's for the stem, thin-column projections and multi-stage units).
//! Training-mode BatchNorm (batch statistics), dropout masks from the documented stream.
//! Beyond SPEC (docs/FORMAT.md): FractalNet-34's stem (conv7x7/2 pad 3, BN, ReLU, max-pool
//! 3x3/2 pad 1 with -inf padding), no pooling after its last block, global average pooling;
//! thin columns with a 1x1 conv-BN-ReLU projection before each join they enter; 1x1, mixed
//! and bottleneck units.

use fractalnet::plan::{Arch, FractalConfig, KeepMask, UnitKind};
use fractalnet::rng::{mix64, philox_uniform};
use std::collections::HashMap;

/// [N, C, H, W] in f64.
#[derive(Clone)]
pub struct T64 {
    pub d: [usize; 4],
    pub v: Vec<f64>,
}

pub struct Reference<'a> {
    pub cfg: &'a FractalConfig,
    pub params: &'a HashMap<String, Vec<f64>>,
    pub mask: &'a KeepMask,
    pub dropout_seed: u64,
}

/// Cross-correlation with a k x k kernel, stride, zero padding, no bias.
fn conv(x: &T64, w: &[f64], cout: usize, k: usize, stride: usize, pad: usize) -> T64 {
    let [n, cin, h, wd] = x.d;
    assert_eq!(w.len(), cout * cin * k * k, "weight size");
    let (ho, wo) = (
        (h + 2 * pad - k) / stride + 1,
        (wd + 2 * pad - k) / stride + 1,
    );
    let mut y = vec![0.0; n * cout * ho * wo];
    for b in 0..n {
        for o in 0..cout {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut s = 0.0;
                    for c in 0..cin {
                        for ky in 0..k {
                            for kx in 0..k {
                                let (iy, ix) = (
                                    (oy * stride + ky) as isize - pad as isize,
                                    (ox * stride + kx) as isize - pad as isize,
                                );
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                                    s += x.v[((b * cin + c) * h + iy as usize) * wd + ix as usize]
                                        * w[((o * cin + c) * k + ky) * k + kx];
                                }
                            }
                        }
                    }
                    y[((b * cout + o) * ho + oy) * wo + ox] = s;
                }
            }
        }
    }
    T64 {
        d: [n, cout, ho, wo],
        v: y,
    }
}

fn bn_relu_train(x: &T64, gamma: &[f64], beta: &[f64]) -> T64 {
    let [n, c, h, w] = x.d;
    let mut y = x.clone();
    for ch in 0..c {
        let idx: Vec<usize> = (0..n)
            .flat_map(|b| (0..h * w).map(move |k| (b * c + ch) * h * w + k))
            .collect();
        let m = idx.iter().map(|&i| x.v[i]).sum::<f64>() / idx.len() as f64;
        let var = idx.iter().map(|&i| (x.v[i] - m).powi(2)).sum::<f64>() / idx.len() as f64;
        for &i in &idx {
            y.v[i] = (gamma[ch] * (x.v[i] - m) / (var + 1e-5).sqrt() + beta[ch]).max(0.0);
        }
    }
    y
}

/// Max-pool, window k, stride, `pad` pixels each side that never win (-inf).
fn maxpool(x: &T64, k: usize, stride: usize, pad: usize) -> T64 {
    let [n, c, h, w] = x.d;
    let (ho, wo) = (
        (h + 2 * pad - k) / stride + 1,
        (w + 2 * pad - k) / stride + 1,
    );
    let mut y = vec![0.0; n * c * ho * wo];
    for p in 0..n * c {
        for oy in 0..ho {
            for ox in 0..wo {
                let mut m = f64::NEG_INFINITY;
                for ky in 0..k {
                    for kx in 0..k {
                        let (iy, ix) = (
                            (oy * stride + ky) as isize - pad as isize,
                            (ox * stride + kx) as isize - pad as isize,
                        );
                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                            m = m.max(x.v[p * h * w + iy as usize * w + ix as usize]);
                        }
                    }
                }
                y[p * ho * wo + oy * wo + ox] = m;
            }
        }
    }
    T64 {
        d: [n, c, ho, wo],
        v: y,
    }
}

fn pool2(x: &T64) -> T64 {
    maxpool(x, 2, 2, 0)
}

fn global_avgpool(x: &T64) -> T64 {
    let [n, c, h, w] = x.d;
    T64 {
        d: [n, c, 1, 1],
        v: x.v
            .chunks(h * w)
            .map(|p| p.iter().sum::<f64>() / (h * w) as f64)
            .collect(),
    }
}

/// Mean of the kept inputs. A join with none kept is dead: its value is NaN, so that if it
/// ever reached the output the comparison would fail.
fn mean(xs: &[&T64], like: &T64) -> T64 {
    if xs.is_empty() {
        return T64 {
            d: like.d,
            v: vec![f64::NAN; like.v.len()],
        };
    }
    let mut y = xs[0].clone();
    for x in &xs[1..] {
        for (a, b) in y.v.iter_mut().zip(&x.v) {
            *a += b;
        }
    }
    for a in &mut y.v {
        *a /= xs.len() as f64;
    }
    y
}

impl Reference<'_> {
    /// conv (k, stride, pad) -> dropout (rate, stream seed) -> BN -> ReLU with the tensors
    /// `{prefix}.conv{tag}.weight`, `{prefix}.bn{tag}.*`.
    #[allow(clippy::too_many_arguments)]
    fn stage(
        &self,
        prefix: &str,
        tag: &str,
        x: &T64,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        drop: Option<(f32, u64)>,
    ) -> T64 {
        let p = |s: &str| &self.params[&format!("{prefix}.{s}")];
        let mut z = conv(x, p(&format!("conv{tag}.weight")), cout, k, stride, pad);
        if let Some((rate, seed)) = drop.filter(|d| d.0 > 0.0) {
            for (i, v) in z.v.iter_mut().enumerate() {
                *v = if philox_uniform(seed, i as u64) >= rate {
                    *v * (1.0f32 / (1.0 - rate)) as f64
                } else {
                    0.0
                };
            }
        }
        bn_relu_train(
            &z,
            p(&format!("bn{tag}.gamma")),
            p(&format!("bn{tag}.beta")),
        )
    }

    /// Width of column c in block b: thin columns double each block except the last.
    fn width(&self, b: usize, c: usize) -> usize {
        match &self.cfg.column_widths {
            Some(w) => w[c] * (1 << b.min(self.cfg.blocks.saturating_sub(2))),
            None => self.cfg.channels[b],
        }
    }

    fn layer(&self, b: usize, c: usize, l: usize, x: &T64) -> T64 {
        let prefix = format!("block{b}.col{c}.layer{l}");
        let cout = self.width(b, c);
        let seed = mix64(
            self.dropout_seed,
            ((b as u64) << 40) | ((c as u64) << 20) | l as u64,
        );
        let drop = Some((self.cfg.dropout[b], seed));
        match self.cfg.unit {
            UnitKind::ConvBnRelu => self.stage(&prefix, "", x, cout, 3, 1, 1, drop),
            UnitKind::Conv1x1 => self.stage(&prefix, "", x, cout, 1, 1, 0, drop),
            UnitKind::Mixed if l % 2 == 1 => self.stage(&prefix, "", x, cout, 1, 1, 0, drop),
            UnitKind::Mixed => self.stage(&prefix, "", x, cout, 3, 1, 1, drop),
            UnitKind::Bottleneck => {
                let m = (cout / 4).max(1);
                let h = self.stage(&prefix, "1", x, m, 1, 1, 0, None);
                let h = self.stage(&prefix, "2", &h, m, 3, 1, 1, None);
                self.stage(&prefix, "3", &h, cout, 1, 1, 0, drop)
            }
            UnitKind::ConvBiasRelu => {
                panic!("the reference trains; a folded network is inference only")
            }
        }
    }

    /// Input c of join j of block b, at the join's width (a thin column projected 1x1).
    fn to_join(&self, b: usize, j: usize, c: usize, t: T64) -> T64 {
        if self.width(b, c) == self.cfg.channels[b] {
            return t;
        }
        self.stage(
            &format!("block{b}.col{c}.proj{j}"),
            "",
            &t,
            self.cfg.channels[b],
            1,
            1,
            0,
            None,
        )
    }

    fn pools_after(&self, b: usize) -> bool {
        self.cfg.arch == Arch::Cifar || b + 1 < self.cfg.blocks
    }

    /// The pending (not yet joined) outputs of a sub-fractal of `k` columns whose shallowest
    /// column is `c0`, starting at deepest-column row `p0` of block `b`.
    fn fractal(&self, b: usize, k: usize, c0: usize, p0: usize, z: &T64) -> Vec<(usize, T64)> {
        let span = 1usize << (k - 1);
        let own = (c0, self.layer(b, c0, (p0 + span) / span - 1, z));
        if k == 1 {
            return vec![own];
        }
        let first = self.fractal(b, k - 1, c0 + 1, p0, z);
        let mid = p0 + span / 2;
        let z1 = self.join(b, mid, first);
        let mut out = self.fractal(b, k - 1, c0 + 1, mid, &z1);
        out.push(own);
        out
    }

    /// The join at row p (or the lone value at an odd row).
    fn join(&self, b: usize, p: usize, mut ins: Vec<(usize, T64)>) -> T64 {
        if ins.len() == 1 {
            return ins.pop().map(|x| x.1).unwrap_or_else(|| unreachable!());
        }
        ins.sort_by_key(|x| x.0);
        let j = p / 2 - 1;
        let ins: Vec<(usize, T64)> = ins
            .into_iter()
            .map(|(c, t)| (c, self.to_join(b, j, c, t)))
            .collect();
        let kept: Vec<&T64> = ins
            .iter()
            .filter(|(c, _)| self.mask.keep(b, j, *c))
            .map(|x| &x.1)
            .collect();
        mean(&kept, &ins[0].1)
    }

    pub fn logits(&self, x: &T64) -> Vec<f64> {
        let cfg = self.cfg;
        let mut z = x.clone();
        if cfg.arch == Arch::Fractalnet34 {
            let sc = cfg.stem_channels.expect("stem channels");
            z = maxpool(&self.stage("stem", "", &z, sc, 7, 2, 3, None), 3, 2, 1);
        }
        for b in 0..cfg.blocks {
            let mut outs = self.fractal(b, cfg.columns, 0, 0, &z);
            outs.sort_by_key(|x| x.0);
            let d = 1usize << (cfg.columns - 1);
            let pooled: Vec<(usize, T64)> = outs
                .into_iter()
                .map(|(c, t)| (c, if self.pools_after(b) { pool2(&t) } else { t }))
                .collect();
            z = if pooled.len() == 1 {
                pooled
                    .into_iter()
                    .next()
                    .map(|x| x.1)
                    .unwrap_or_else(|| unreachable!())
            } else {
                let pooled: Vec<(usize, T64)> = pooled
                    .into_iter()
                    .map(|(c, t)| (c, self.to_join(b, d / 2 - 1, c, t)))
                    .collect();
                let kept: Vec<&T64> = pooled
                    .iter()
                    .filter(|(c, _)| self.mask.keep(b, d / 2 - 1, *c))
                    .map(|x| &x.1)
                    .collect();
                mean(&kept, &pooled[0].1)
            };
        }
        if cfg.arch == Arch::Fractalnet34 {
            z = global_avgpool(&z);
        }
        let [n, c, h, w] = z.d;
        let f = c * h * w;
        let (fw, fb) = (&self.params["fc.weight"], &self.params["fc.bias"]);
        let k = cfg.classes;
        let mut out = vec![0.0; n * k];
        for i in 0..n {
            for j in 0..k {
                out[i * k + j] =
                    fb[j] + (0..f).map(|q| z.v[i * f + q] * fw[j * f + q]).sum::<f64>();
            }
        }
        out
    }

    pub fn loss(&self, x: &T64, labels: &[usize]) -> f64 {
        let k = self.cfg.classes;
        let z = self.logits(x);
        let mut total = 0.0;
        for (row, &y) in z.chunks(k).zip(labels) {
            let m = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
            let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            total += lse - row[y];
        }
        total / labels.len() as f64
    }
}
