//! Dataset loaders, the validation split, input normalisation and augmentation.
//!
//! Every loader reads the bytes itself and returns [`Images`]: NCHW `u8`, always 32x32
//! (28x28 MNIST-style data is zero-padded by 2 pixels on each side, as shared/SPEC.md
//! "The network" says), with `u32` labels in `0..classes`.
//!
//! | kind | train files | test files | format |
//! |---|---|---|---|
//! | `cifar10` | `data_batch_1.bin` .. `data_batch_5.bin` (all five) | `test_batch.bin` | records of 1 label byte + 3072 pixels (1024 R, 1024 G, 1024 B, rows top to bottom) |
//! | `cifar100` | `train.bin` | `test.bin` | records of coarse label, fine label, 3072 pixels |
//! | `svhn` / `svhn-extra` | `train_32x32.mat` (+ `extra_32x32.mat`) | `test_32x32.mat` | MATLAB level-5 MAT, see [`mat`] |
//! | `mnist`, `fashion-mnist` | `train-images-idx3-ubyte`, `train-labels-idx1-ubyte` | `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte` | IDX, raw or gzip (`.gz`), see [`idx`] |
//!
//! Errors are one line, `<file>: <what is wrong>`:
//! - missing file: `<file>: missing (the <dataset> <split> split needs <files>)`;
//! - truncated / wrong size: `<file>: size N is not a positive multiple of the R-byte record`,
//!   `<file>: truncated: ...`, `<file>: size N does not match the header (expected M)`;
//! - wrong magic: `<file>: wrong magic ...`;
//! - label out of range: `<file>: record i: label L out of range (classes K)`;
//! - counts that disagree: `<file>: N labels but <other> has M images`.
//!
//! Loaders never panic on file contents and never allocate from a count in a file before
//! checking it against the file's length.

mod augment;
mod cifar;
pub mod idx;
pub mod mat;

use std::path::Path;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::rng::SeededRng;

pub use augment::{Augment, augment_batch};

/// Side of every image the loaders return.
pub const SIDE: usize = 32;

/// Which part of a data set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    pub fn name(&self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// The label set of CIFAR-100: 100 fine classes (default) or 20 coarse superclasses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelKind {
    Fine,
    Coarse,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatasetKind {
    Cifar10,
    Cifar100(LabelKind),
    /// SVHN cropped digits; `extra: true` appends `extra_32x32.mat` to the training split.
    Svhn {
        extra: bool,
    },
    Mnist,
    FashionMnist,
}

const DATASET_NAMES: &str =
    "cifar10, cifar100, cifar100-fine, cifar100-coarse, svhn, svhn-extra, mnist, fashion-mnist";

impl DatasetKind {
    /// Parses a `--dataset` value and the optional `--label` value.
    ///
    /// Names: `cifar10`, `cifar100`, `svhn`, `svhn-extra`, `mnist`, `fashion-mnist`, and the
    /// aliases `cifar100-fine` / `cifar100-coarse` (what [`DatasetKind::name`] returns, so that
    /// `parse(kind.name(), None)` gives `kind` back). `label` is `fine` or `coarse` and applies
    /// to CIFAR-100 only (default fine); given for another data set it is an error.
    pub fn parse(name: &str, label: Option<&str>) -> Result<Self> {
        let parse_label = |l: &str| match l {
            "fine" => Ok(LabelKind::Fine),
            "coarse" => Ok(LabelKind::Coarse),
            other => Err(Error::config(format!(
                "unknown label set '{other}' (accepted: fine, coarse)"
            ))),
        };
        let kind = match name {
            "cifar10" => DatasetKind::Cifar10,
            "cifar100" => DatasetKind::Cifar100(match label {
                Some(l) => parse_label(l)?,
                None => LabelKind::Fine,
            }),
            "cifar100-fine" | "cifar100-coarse" => {
                let own = if name == "cifar100-fine" {
                    LabelKind::Fine
                } else {
                    LabelKind::Coarse
                };
                if let Some(l) = label
                    && parse_label(l)? != own
                {
                    return Err(Error::config(format!(
                        "dataset '{name}' contradicts label '{l}'"
                    )));
                }
                DatasetKind::Cifar100(own)
            }
            "svhn" => DatasetKind::Svhn { extra: false },
            "svhn-extra" => DatasetKind::Svhn { extra: true },
            "mnist" => DatasetKind::Mnist,
            "fashion-mnist" => DatasetKind::FashionMnist,
            other => {
                return Err(Error::config(format!(
                    "unknown dataset '{other}' (accepted: {DATASET_NAMES})"
                )));
            }
        };
        if let Some(l) = label
            && !matches!(kind, DatasetKind::Cifar100(_))
        {
            return Err(Error::config(format!(
                "label set '{l}' applies to cifar100 only, not to {name}"
            )));
        }
        Ok(kind)
    }

    /// A name that [`DatasetKind::parse`] accepts and maps back to this kind.
    pub fn name(&self) -> &'static str {
        match self {
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Cifar100(LabelKind::Fine) => "cifar100-fine",
            DatasetKind::Cifar100(LabelKind::Coarse) => "cifar100-coarse",
            DatasetKind::Svhn { extra: false } => "svhn",
            DatasetKind::Svhn { extra: true } => "svhn-extra",
            DatasetKind::Mnist => "mnist",
            DatasetKind::FashionMnist => "fashion-mnist",
        }
    }

    pub fn classes(&self) -> usize {
        match self {
            DatasetKind::Cifar100(LabelKind::Fine) => 100,
            DatasetKind::Cifar100(LabelKind::Coarse) => 20,
            _ => 10,
        }
    }

    pub fn channels(&self) -> usize {
        match self {
            DatasetKind::Mnist | DatasetKind::FashionMnist => 1,
            _ => 3,
        }
    }

    /// The file names the split reads, in order. IDX files are listed by their raw name; the
    /// loader takes `<name>` or else `<name>.gz`.
    pub fn files(&self, split: Split) -> Vec<&'static str> {
        match (self, split) {
            (DatasetKind::Cifar10, Split::Train) => vec![
                "data_batch_1.bin",
                "data_batch_2.bin",
                "data_batch_3.bin",
                "data_batch_4.bin",
                "data_batch_5.bin",
            ],
            (DatasetKind::Cifar10, Split::Test) => vec!["test_batch.bin"],
            (DatasetKind::Cifar100(_), Split::Train) => vec!["train.bin"],
            (DatasetKind::Cifar100(_), Split::Test) => vec!["test.bin"],
            (DatasetKind::Svhn { extra }, Split::Train) => {
                if *extra {
                    vec!["train_32x32.mat", "extra_32x32.mat"]
                } else {
                    vec!["train_32x32.mat"]
                }
            }
            (DatasetKind::Svhn { .. }, Split::Test) => vec!["test_32x32.mat"],
            (DatasetKind::Mnist | DatasetKind::FashionMnist, Split::Train) => {
                vec!["train-images-idx3-ubyte", "train-labels-idx1-ubyte"]
            }
            (DatasetKind::Mnist | DatasetKind::FashionMnist, Split::Test) => {
                vec!["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
            }
        }
    }
}

/// Decoded images, NCHW u8, always 32x32 (28x28 MNIST-style data zero-padded 2 px each side).
#[derive(Clone, Debug)]
pub struct Images {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// `len() * channels * height * width` bytes, image after image, each channel-major.
    pub pixels: Vec<u8>,
    /// One label per image, each `< classes`.
    pub labels: Vec<u32>,
    pub classes: usize,
}

impl Images {
    /// An empty set of the given geometry.
    pub fn empty(channels: usize, height: usize, width: usize, classes: usize) -> Self {
        Images {
            channels,
            height,
            width,
            pixels: Vec::new(),
            labels: Vec::new(),
            classes,
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per image: channels * height * width.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The pixels of image `i` (CHW). Panics if `i >= len()`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// The images `idx[..]`, in that order (indices may repeat). Panics on an index out of
    /// range.
    pub fn subset(&self, idx: &[usize]) -> Images {
        let n = self.image_len();
        let mut pixels = Vec::with_capacity(idx.len() * n);
        let mut labels = Vec::with_capacity(idx.len());
        for &i in idx {
            pixels.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Images {
            channels: self.channels,
            height: self.height,
            width: self.width,
            pixels,
            labels,
            classes: self.classes,
        }
    }

    /// Appends `other` (same geometry and classes, else a shape error).
    pub fn append(&mut self, other: Images) -> Result<()> {
        if (other.channels, other.height, other.width, other.classes)
            != (self.channels, self.height, self.width, self.classes)
        {
            return Err(Error::shape(
                "Images::append",
                format!(
                    "{}x{}x{} ({} classes) vs {}x{}x{} ({} classes)",
                    self.channels,
                    self.height,
                    self.width,
                    self.classes,
                    other.channels,
                    other.height,
                    other.width,
                    other.classes
                ),
            ));
        }
        if self.is_empty() {
            *self = other;
        } else {
            self.pixels.extend_from_slice(&other.pixels);
            self.labels.extend_from_slice(&other.labels);
        }
        Ok(())
    }

    /// Per-channel mean and population std of pixel/255 over all images and all pixels (pad
    /// pixels count as 0). The sums are exact (integers) and the quotients are computed in
    /// f64, then rounded to f32. An empty set gives mean 0 and std 0 for every channel. A
    /// channel that is constant has std 0; normalising with it divides by zero, so the caller
    /// must reject it.
    pub fn channel_stats(&self) -> (Vec<f32>, Vec<f32>) {
        let c = self.channels;
        let hw = self.height * self.width;
        let n = self.len();
        if n == 0 || hw == 0 {
            return (vec![0.0; c], vec![0.0; c]);
        }
        // Per channel: (sum of p, sum of p^2), exact in u64 (p^2 <= 65025, < 2^44 pixels).
        let sums = self
            .pixels
            .par_chunks(self.image_len())
            .fold(
                || vec![(0u64, 0u64); c],
                |mut acc, img| {
                    for (ch, plane) in img.chunks_exact(hw).enumerate() {
                        let (mut s, mut q) = (0u64, 0u64);
                        for &p in plane {
                            let p = p as u64;
                            s += p;
                            q += p * p;
                        }
                        acc[ch].0 += s;
                        acc[ch].1 += q;
                    }
                    acc
                },
            )
            .reduce(
                || vec![(0u64, 0u64); c],
                |mut a, b| {
                    for (x, y) in a.iter_mut().zip(b) {
                        x.0 += y.0;
                        x.1 += y.1;
                    }
                    a
                },
            );
        let count = (n * hw) as f64;
        let mut mean = Vec::with_capacity(c);
        let mut std = Vec::with_capacity(c);
        for (s, q) in sums {
            let m = s as f64 / 255.0 / count;
            let ex2 = q as f64 / (255.0 * 255.0) / count;
            let var = (ex2 - m * m).max(0.0);
            mean.push(m as f32);
            std.push(var.sqrt() as f32);
        }
        (mean, std)
    }
}

/// Reads the files of one split of `kind` from `dir` (only that split's files).
pub fn load(kind: DatasetKind, dir: &Path, split: Split) -> Result<Images> {
    let files = kind.files(split);
    let missing = |name: &str| -> Error {
        Error::format(
            dir.join(name),
            format!(
                "missing (the {} {} split needs {}{} in {})",
                kind.name(),
                split.name(),
                files.join(", "),
                if matches!(kind, DatasetKind::Mnist | DatasetKind::FashionMnist) {
                    ", each raw or .gz,"
                } else {
                    ""
                },
                dir.display()
            ),
        )
    };
    match kind {
        DatasetKind::Cifar10 => {
            let mut out = Images::empty(3, SIDE, SIDE, 10);
            for name in &files {
                let path = dir.join(name);
                let bytes = read_file(&path, || missing(name))?;
                out.append(cifar::parse_cifar10(&path, &bytes)?)?;
            }
            Ok(out)
        }
        DatasetKind::Cifar100(label) => {
            let path = dir.join(files[0]);
            let bytes = read_file(&path, || missing(files[0]))?;
            cifar::parse_cifar100(&path, &bytes, label)
        }
        DatasetKind::Svhn { .. } => {
            let mut out = Images::empty(3, SIDE, SIDE, 10);
            for name in &files {
                let path = dir.join(name);
                if !path.exists() {
                    return Err(missing(name));
                }
                out.append(mat::load_svhn(&path)?)?;
            }
            Ok(out)
        }
        DatasetKind::Mnist | DatasetKind::FashionMnist => {
            let images_path = idx::find(dir, files[0]).ok_or_else(|| missing(files[0]))?;
            let labels_path = idx::find(dir, files[1]).ok_or_else(|| missing(files[1]))?;
            idx::load_pair(&images_path, &labels_path, kind.classes())
        }
    }
}

/// Reads a whole file; a file that does not exist gives `missing()`.
pub(crate) fn read_file(path: &Path, missing: impl FnOnce() -> Error) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            missing()
        } else {
            Error::io(path, e)
        }
    })
}

/// The RNG stream that [`split_validation`] derives from its seed.
pub const VALIDATION_STREAM: u64 = 0x7661_6c69_6461_7465; // "validate"

/// Holds out `n_val` images of `train` as a validation split; returns `(train_rest, val)`.
///
/// The permutation is `SeededRng::derived(seed, VALIDATION_STREAM).shuffle` of `0..len`; its
/// first `n_val` entries are the validation images. Both parts keep the original file order
/// (indices ascending). `n_val == 0` gives an empty validation set; `n_val >= len` is an error.
pub fn split_validation(train: Images, n_val: usize, seed: u64) -> Result<(Images, Images)> {
    let n = train.len();
    if n_val >= n {
        return Err(Error::config(format!(
            "validation split of {n_val} images needs more than the {n} training images"
        )));
    }
    let mut perm: Vec<usize> = (0..n).collect();
    SeededRng::derived(seed, VALIDATION_STREAM).shuffle(&mut perm);
    let mut val_idx = perm[..n_val].to_vec();
    let mut rest_idx = perm[n_val..].to_vec();
    val_idx.sort_unstable();
    rest_idx.sort_unstable();
    Ok((train.subset(&rest_idx), train.subset(&val_idx)))
}

/// Writes images `idx[..]` normalised as `x = (pixel as f32 / 255 - mean[c]) / std[c]` (f32
/// arithmetic, in that order) into `out` (NCHW f32). Panics unless
/// `out.len() == idx.len() * C * H * W` and `mean`, `std` have one entry per channel.
pub fn normalise_into(images: &Images, idx: &[usize], mean: &[f32], std: &[f32], out: &mut [f32]) {
    let c = images.channels;
    let hw = images.height * images.width;
    let per = images.image_len();
    assert_eq!(
        mean.len(),
        c,
        "normalise_into: mean has {} entries for {c} channels",
        mean.len()
    );
    assert_eq!(
        std.len(),
        c,
        "normalise_into: std has {} entries for {c} channels",
        std.len()
    );
    assert_eq!(
        out.len(),
        idx.len() * per,
        "normalise_into: out has {} floats for {} images of {per}",
        out.len(),
        idx.len()
    );
    // One table per channel: every pixel value maps to the same f32 as the formula.
    let lut: Vec<[f32; 256]> = (0..c)
        .map(|ch| {
            let mut t = [0f32; 256];
            for (p, v) in t.iter_mut().enumerate() {
                *v = (p as f32 / 255.0 - mean[ch]) / std[ch];
            }
            t
        })
        .collect();
    if per == 0 {
        return;
    }
    out.par_chunks_mut(per)
        .zip(idx.par_iter())
        .for_each(|(dst, &i)| {
            let src = images.image(i);
            for ch in 0..c {
                let t = &lut[ch];
                let (d, s) = (
                    &mut dst[ch * hw..(ch + 1) * hw],
                    &src[ch * hw..(ch + 1) * hw],
                );
                for (o, &p) in d.iter_mut().zip(s) {
                    *o = t[p as usize];
                }
            }
        });
}
