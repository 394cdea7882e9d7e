//! Tests of the dataset layer (src/data): the real CIFAR-10 and Fashion-MNIST slices in
//! shared/data, CIFAR-100 / SVHN / IDX files written here in the documented formats, every
//! documented corruption, the validation split, channel statistics, normalisation and
//! augmentation.

mod shared_data;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use fractalnet::data::{
    Augment, DatasetKind, Images, LabelKind, Split, augment_batch, load, normalise_into,
    split_validation,
};
use fractalnet::rng::SeededRng;

// ---------------------------------------------------------------------------------------------
// Helpers

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "fractalnet-data-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Asserts that `r` failed with a one-line message naming `file` and containing every
/// phrase of `want`; returns the message.
fn expect_err<T: std::fmt::Debug>(r: fractalnet::Result<T>, file: &str, want: &[&str]) -> String {
    let msg = r.expect_err("expected an error").to_string();
    assert!(!msg.contains('\n'), "not one line: {msg}");
    assert!(msg.contains(file), "message does not name {file}: {msg}");
    for w in want {
        assert!(msg.contains(w), "message lacks '{w}': {msg}");
    }
    msg
}

/// A deterministic pixel value for (image, channel, row, col).
fn pix(n: usize, ch: usize, row: usize, col: usize) -> u8 {
    ((n * 37 + ch * 101 + row * 7 + col * 13 + row * col) % 256) as u8
}

// ---------------------------------------------------------------------------------------------
// DatasetKind

#[test]
fn dataset_kind_parses_names_and_describes_itself() {
    let cases = [
        ("cifar10", None, DatasetKind::Cifar10, 10, 3),
        (
            "cifar100",
            None,
            DatasetKind::Cifar100(LabelKind::Fine),
            100,
            3,
        ),
        (
            "cifar100",
            Some("fine"),
            DatasetKind::Cifar100(LabelKind::Fine),
            100,
            3,
        ),
        (
            "cifar100",
            Some("coarse"),
            DatasetKind::Cifar100(LabelKind::Coarse),
            20,
            3,
        ),
        ("svhn", None, DatasetKind::Svhn { extra: false }, 10, 3),
        ("svhn-extra", None, DatasetKind::Svhn { extra: true }, 10, 3),
        ("mnist", None, DatasetKind::Mnist, 10, 1),
        ("fashion-mnist", None, DatasetKind::FashionMnist, 10, 1),
    ];
    for (name, label, kind, classes, channels) in cases {
        let k = DatasetKind::parse(name, label).unwrap();
        assert_eq!(k, kind, "{name} {label:?}");
        assert_eq!(k.classes(), classes, "{name}");
        assert_eq!(k.channels(), channels, "{name}");
        assert_eq!(
            DatasetKind::parse(k.name(), None).unwrap(),
            k,
            "round trip {name}"
        );
    }
    let e = DatasetKind::parse("imagenet", None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("'imagenet'") && e.contains("fashion-mnist"),
        "{e}"
    );
    let e = DatasetKind::parse("cifar100", Some("medium"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("'medium'") && e.contains("coarse"), "{e}");
    let e = DatasetKind::parse("mnist", Some("fine"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cifar100"), "{e}");

    assert_eq!(DatasetKind::Cifar10.files(Split::Train).len(), 5);
    assert_eq!(
        DatasetKind::Cifar10.files(Split::Test),
        vec!["test_batch.bin"]
    );
    assert_eq!(
        DatasetKind::Svhn { extra: true }.files(Split::Train),
        vec!["train_32x32.mat", "extra_32x32.mat"]
    );
    assert_eq!(
        DatasetKind::Svhn { extra: true }.files(Split::Test),
        vec!["test_32x32.mat"]
    );
    assert_eq!(
        DatasetKind::FashionMnist.files(Split::Test),
        vec!["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    );
}

// ---------------------------------------------------------------------------------------------
// CIFAR-10: the real slice

const CIFAR_SLICE_LABELS: [u32; 20] = [3, 8, 8, 0, 6, 6, 1, 6, 3, 1, 0, 9, 5, 7, 9, 8, 5, 7, 8, 6];

fn cifar_slice() -> Vec<u8> {
    std::fs::read(shared_data::shared_data().join("cifar10-sample/test_batch_first20.bin")).unwrap()
}

#[test]
fn cifar10_real_slice_loads_with_its_labels_and_pixels() {
    let raw = cifar_slice();
    let t = TempDir::new("c10");
    t.write("test_batch.bin", &raw);
    // Only the test file is there: the test split must not need the train files.
    let im = load(DatasetKind::Cifar10, t.path(), Split::Test).unwrap();
    assert_eq!(im.len(), 20);
    assert_eq!(
        (im.channels, im.height, im.width, im.classes),
        (3, 32, 32, 10)
    );
    assert_eq!(im.labels, CIFAR_SLICE_LABELS);
    // Values read off the file with another tool (Python), as (image, channel, row, col).
    let known = [
        ((0, 0, 0, 0), 158u8),
        ((0, 2, 31, 31), 110),
        ((7, 1, 16, 5), 160),
        ((19, 0, 10, 20), 240),
    ];
    for ((i, ch, r, c), v) in known {
        assert_eq!(im.image(i)[ch * 1024 + r * 32 + c], v, "{i} {ch} {r} {c}");
    }
    // And every pixel against the record layout: 1 label byte, then R, G, B planes.
    for i in 0..20 {
        for ch in 0..3 {
            for r in (0..32).step_by(5) {
                for c in (0..32).step_by(3) {
                    assert_eq!(
                        im.image(i)[ch * 1024 + r * 32 + c],
                        raw[i * 3073 + 1 + ch * 1024 + r * 32 + c]
                    );
                }
            }
        }
    }
}

#[test]
fn cifar10_train_reads_all_five_batches_in_order() {
    let raw = cifar_slice();
    let t = TempDir::new("c10train");
    for b in 1..=5 {
        // Batch b holds the slice's images b-1 .. b-1+4 (4 images each).
        t.write(
            &format!("data_batch_{b}.bin"),
            &raw[(b - 1) * 3073..(b + 3) * 3073],
        );
    }
    let im = load(DatasetKind::Cifar10, t.path(), Split::Train).unwrap();
    assert_eq!(im.len(), 20);
    for b in 0..5 {
        for k in 0..4 {
            assert_eq!(im.labels[b * 4 + k], CIFAR_SLICE_LABELS[b + k]);
            assert_eq!(
                im.image(b * 4 + k),
                &raw[(b + k) * 3073 + 1..(b + k + 1) * 3073]
            );
        }
    }
    // Without batch 4 the train split fails and names the file.
    std::fs::remove_file(t.path().join("data_batch_4.bin")).unwrap();
    expect_err(
        load(DatasetKind::Cifar10, t.path(), Split::Train),
        "data_batch_4.bin",
        &["missing"],
    );
}

// ---------------------------------------------------------------------------------------------
// CIFAR-100: files written here

fn cifar100_file(labels: &[(u8, u8)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, &(coarse, fine)) in labels.iter().enumerate() {
        out.push(coarse);
        out.push(fine);
        for ch in 0..3 {
            for r in 0..32 {
                for c in 0..32 {
                    out.push(pix(n, ch, r, c));
                }
            }
        }
    }
    out
}

#[test]
fn cifar100_fine_and_coarse_labels() {
    let labels = [(0u8, 99u8), (19, 0), (7, 42), (11, 58)];
    let t = TempDir::new("c100");
    t.write("train.bin", &cifar100_file(&labels));
    t.write("test.bin", &cifar100_file(&labels[1..3]));
    let fine = load(
        DatasetKind::Cifar100(LabelKind::Fine),
        t.path(),
        Split::Train,
    )
    .unwrap();
    let coarse = load(
        DatasetKind::Cifar100(LabelKind::Coarse),
        t.path(),
        Split::Train,
    )
    .unwrap();
    assert_eq!(fine.labels, vec![99, 0, 42, 58]);
    assert_eq!(fine.classes, 100);
    assert_eq!(coarse.labels, vec![0, 19, 7, 11]);
    assert_eq!(coarse.classes, 20);
    assert_eq!(fine.pixels, coarse.pixels);
    for n in 0..4 {
        assert_eq!(fine.image(n)[2 * 1024 + 5 * 32 + 9], pix(n, 2, 5, 9));
        assert_eq!(fine.image(n)[0], pix(n, 0, 0, 0));
    }
    let test = load(
        DatasetKind::Cifar100(LabelKind::Fine),
        t.path(),
        Split::Test,
    )
    .unwrap();
    assert_eq!(test.labels, vec![0, 42]);
}

// ---------------------------------------------------------------------------------------------
// A tiny MAT level-5 writer (little-endian)

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_DOUBLE: u32 = 9;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;
const MX_DOUBLE: u32 = 6;
const MX_UINT8: u32 = 9;

fn mat_header(endian: &[u8; 2]) -> Vec<u8> {
    let mut h = b"MATLAB 5.0 MAT-file, Platform: test, written by tests/data_loaders.rs".to_vec();
    h.resize(116, b' ');
    h.extend_from_slice(&[0u8; 8]); // subsystem data offset
    if endian == b"IM" {
        h.extend_from_slice(&0x0100u16.to_le_bytes());
    } else {
        h.extend_from_slice(&0x0100u16.to_be_bytes());
    }
    h.extend_from_slice(endian);
    assert_eq!(h.len(), 128);
    h
}

/// An element in the normal form, padded to 8 bytes.
fn mat_element(t: u32, data: &[u8]) -> Vec<u8> {
    let mut e = Vec::new();
    e.extend_from_slice(&t.to_le_bytes());
    e.extend_from_slice(&(data.len() as u32).to_le_bytes());
    e.extend_from_slice(data);
    while e.len() % 8 != 0 {
        e.push(0);
    }
    e
}

/// An element in the small form (at most 4 data bytes).
fn mat_small(t: u32, data: &[u8]) -> Vec<u8> {
    assert!(data.len() <= 4);
    let mut e = Vec::new();
    e.extend_from_slice(&(((data.len() as u32) << 16) | t).to_le_bytes());
    let mut d = data.to_vec();
    d.resize(4, 0);
    e.extend_from_slice(&d);
    e
}

/// A whole miMATRIX element.
fn mat_matrix(name: &str, class: u32, dims: &[u32], data_type: u32, data: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    let mut flags = class.to_le_bytes().to_vec();
    flags.extend_from_slice(&[0; 4]);
    body.extend(mat_element(MI_UINT32, &flags));
    let dims_b: Vec<u8> = dims
        .iter()
        .flat_map(|d| (*d as i32).to_le_bytes())
        .collect();
    body.extend(mat_element(MI_INT32, &dims_b));
    if name.len() <= 4 {
        body.extend(mat_small(MI_INT8, name.as_bytes()));
    } else {
        body.extend(mat_element(MI_INT8, name.as_bytes()));
    }
    body.extend(mat_element(data_type, data));
    mat_element(MI_MATRIX, &body)
}

/// An element wrapped in miCOMPRESSED (zlib, no padding).
fn mat_compressed(element: &[u8]) -> Vec<u8> {
    let z = zlib(element);
    let mut e = Vec::new();
    e.extend_from_slice(&MI_COMPRESSED.to_le_bytes());
    e.extend_from_slice(&(z.len() as u32).to_le_bytes());
    e.extend_from_slice(&z);
    e
}

/// X as MATLAB stores it: uint8 32x32x3xN, column-major, X(row, col, ch, n) = pix(n, ch, row, col).
fn svhn_x(n: usize) -> Vec<u8> {
    let mut x = vec![0u8; 3072 * n];
    for k in 0..n {
        for ch in 0..3 {
            for col in 0..32 {
                for row in 0..32 {
                    x[row + 32 * col + 1024 * ch + 3072 * k] = pix(k, ch, row, col);
                }
            }
        }
    }
    x
}

#[derive(Clone, Copy)]
enum YKind {
    /// class double stored as miDOUBLE (real SVHN files)
    Double,
    /// class uint8 stored as miUINT8
    Uint8,
    /// class double stored as miUINT8 (MATLAB's compact storage)
    DoubleAsUint8,
}

fn svhn_y(y: &[f64], kind: YKind) -> Vec<u8> {
    let dims = [y.len() as u32, 1];
    match kind {
        YKind::Double => {
            let d: Vec<u8> = y.iter().flat_map(|v| v.to_le_bytes()).collect();
            mat_matrix("y", MX_DOUBLE, &dims, MI_DOUBLE, &d)
        }
        YKind::Uint8 => {
            let d: Vec<u8> = y.iter().map(|&v| v as u8).collect();
            mat_matrix("y", MX_UINT8, &dims, MI_UINT8, &d)
        }
        YKind::DoubleAsUint8 => {
            let d: Vec<u8> = y.iter().map(|&v| v as u8).collect();
            mat_matrix("y", MX_DOUBLE, &dims, MI_UINT8, &d)
        }
    }
}

/// A SVHN-style file: an unrelated variable first, then X, then y.
fn svhn_file(n: usize, y: &[f64], ykind: YKind, compressed: bool) -> Vec<u8> {
    let other = mat_matrix(
        "unrelated",
        MX_DOUBLE,
        &[1, 2],
        MI_DOUBLE,
        &[1.5f64.to_le_bytes(), 2.5f64.to_le_bytes()].concat(),
    );
    let x = mat_matrix("X", MX_UINT8, &[32, 32, 3, n as u32], MI_UINT8, &svhn_x(n));
    let yy = svhn_y(y, ykind);
    let mut f = mat_header(b"IM");
    for e in [other, x, yy] {
        if compressed {
            f.extend(mat_compressed(&e));
        } else {
            f.extend(e);
        }
    }
    f
}

fn check_svhn(im: &Images, n: usize, labels: &[u32]) {
    assert_eq!(im.len(), n);
    assert_eq!(
        (im.channels, im.height, im.width, im.classes),
        (3, 32, 32, 10)
    );
    assert_eq!(im.labels, labels);
    for k in 0..n {
        for ch in 0..3 {
            for row in 0..32 {
                for col in 0..32 {
                    assert_eq!(
                        im.image(k)[ch * 1024 + row * 32 + col],
                        pix(k, ch, row, col),
                        "image {k} ch {ch} row {row} col {col}"
                    );
                }
            }
        }
    }
}

#[test]
fn svhn_mat_uncompressed_and_compressed_with_every_y_type() {
    let y = [10.0, 1.0, 5.0];
    let labels = [0u32, 1, 5];
    for compressed in [false, true] {
        for ykind in [YKind::Double, YKind::Uint8, YKind::DoubleAsUint8] {
            let t = TempDir::new("svhn");
            t.write("test_32x32.mat", &svhn_file(3, &y, ykind, compressed));
            let im = load(DatasetKind::Svhn { extra: false }, t.path(), Split::Test).unwrap();
            check_svhn(&im, 3, &labels);
        }
    }
}

#[test]
fn svhn_extra_is_appended_to_train() {
    let t = TempDir::new("svhnextra");
    t.write(
        "train_32x32.mat",
        &svhn_file(2, &[3.0, 10.0], YKind::Double, true),
    );
    t.write(
        "extra_32x32.mat",
        &svhn_file(1, &[7.0], YKind::Double, false),
    );
    let plain = load(DatasetKind::Svhn { extra: false }, t.path(), Split::Train).unwrap();
    assert_eq!(plain.labels, vec![3, 0]);
    let extra = load(DatasetKind::Svhn { extra: true }, t.path(), Split::Train).unwrap();
    assert_eq!(extra.labels, vec![3, 0, 7]);
    assert_eq!(extra.image(2)[1024 + 3 * 32 + 4], pix(0, 1, 3, 4));
    assert_eq!(&extra.pixels[..2 * 3072], &plain.pixels[..]);
    // The test split does not need train or extra.
    expect_err(
        load(DatasetKind::Svhn { extra: true }, t.path(), Split::Test),
        "test_32x32.mat",
        &["missing"],
    );
}

// ---------------------------------------------------------------------------------------------
// IDX (MNIST, Fashion-MNIST)

fn idx_images(n: usize) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [2051u32, n as u32, 28, 28] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    for k in 0..n {
        for r in 0..28 {
            for c in 0..28 {
                b.push(pix(k, 0, r, c) | 1); // never 0, so the pad border is told apart
            }
        }
    }
    b
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [2049u32, labels.len() as u32] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b.extend_from_slice(labels);
    b
}

#[test]
fn mnist_raw_and_gzip_give_the_same_images() {
    let labels = [5u8, 0, 4, 1, 9];
    let raw = TempDir::new("mnistraw");
    raw.write("train-images-idx3-ubyte", &idx_images(5));
    raw.write("train-labels-idx1-ubyte", &idx_labels(&labels));
    let gz = TempDir::new("mnistgz");
    gz.write("train-images-idx3-ubyte.gz", &gzip(&idx_images(5)));
    gz.write("train-labels-idx1-ubyte.gz", &gzip(&idx_labels(&labels)));
    let a = load(DatasetKind::Mnist, raw.path(), Split::Train).unwrap();
    let b = load(DatasetKind::Mnist, gz.path(), Split::Train).unwrap();
    assert_eq!(a.pixels, b.pixels);
    assert_eq!(a.labels, b.labels);
    assert_eq!(a.labels, vec![5, 0, 4, 1, 9]);
    assert_eq!((a.channels, a.height, a.width, a.classes), (1, 32, 32, 10));
    for k in 0..5 {
        let img = a.image(k);
        for y in 0..32 {
            for x in 0..32 {
                let inside = (2..30).contains(&y) && (2..30).contains(&x);
                let want = if inside {
                    pix(k, 0, y - 2, x - 2) | 1
                } else {
                    0
                };
                assert_eq!(img[y * 32 + x], want, "image {k} ({y},{x})");
            }
        }
    }
    // gzip is detected by its magic, not the name: a gzip stream under the raw name loads too.
    let odd = TempDir::new("mnistodd");
    odd.write("train-images-idx3-ubyte", &gzip(&idx_images(5)));
    odd.write("train-labels-idx1-ubyte", &idx_labels(&labels));
    let c = load(DatasetKind::Mnist, odd.path(), Split::Train).unwrap();
    assert_eq!(c.pixels, a.pixels);
}

fn fashion_slice_dir() -> PathBuf {
    shared_data::shared_data().join("fashion-mnist-sample")
}

#[test]
fn fashion_mnist_real_slice_loads_padded() {
    let im = load(DatasetKind::FashionMnist, &fashion_slice_dir(), Split::Test).unwrap();
    assert_eq!(im.len(), 500);
    assert_eq!(
        (im.channels, im.height, im.width, im.classes),
        (1, 32, 32, 10)
    );
    assert_eq!(
        &im.labels[..10],
        &[9, 2, 1, 1, 6, 1, 4, 6, 5, 7],
        "the first labels of the Fashion-MNIST test set"
    );
    let mut counts = [0usize; 10];
    for &l in &im.labels {
        counts[l as usize] += 1;
    }
    // Counted with Python from the same file.
    assert_eq!(counts, [55, 52, 65, 46, 57, 39, 47, 47, 44, 48]);
    for k in 0..im.len() {
        let img = im.image(k);
        for y in 0..32 {
            for x in 0..32 {
                if !((2..30).contains(&y) && (2..30).contains(&x)) {
                    assert_eq!(img[y * 32 + x], 0, "pad pixel ({y},{x}) of image {k}");
                }
            }
        }
    }
    // (image, row, col) of the 28x28 original, values read with Python.
    for ((k, r, c), v) in [((0, 14, 14), 110u8), ((1, 10, 3), 0), ((499, 20, 15), 231)] {
        assert_eq!(im.image(k)[(r + 2) * 32 + c + 2], v);
    }
    let total: u64 = im.pixels.iter().map(|&p| p as u64).sum();
    assert_eq!(total, 29_494_551);

    // The same files gunzipped load identically.
    let t = TempDir::new("fmraw");
    for name in ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"] {
        let gz = std::fs::read(fashion_slice_dir().join(format!("{name}.gz"))).unwrap();
        t.write(name, &gunzip(&gz));
    }
    let raw = load(DatasetKind::FashionMnist, t.path(), Split::Test).unwrap();
    assert_eq!(raw.pixels, im.pixels);
    assert_eq!(raw.labels, im.labels);
}

/// The full sets fetched by tools/fetch-data, when they are there (skipped otherwise).
#[test]
fn full_fetched_sets_when_present() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    for kind in [DatasetKind::Mnist, DatasetKind::FashionMnist] {
        let dir = data.join(kind.name());
        if !dir.is_dir() {
            eprintln!("skipping {}: run tools/fetch-data", dir.display());
            continue;
        }
        let train = load(kind, &dir, Split::Train).unwrap();
        let test = load(kind, &dir, Split::Test).unwrap();
        assert_eq!(
            (train.len(), test.len()),
            (60_000, 10_000),
            "{}",
            kind.name()
        );
        for set in [&train, &test] {
            let mut counts = [0usize; 10];
            for &l in &set.labels {
                counts[l as usize] += 1;
            }
            assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
        }
        let (mean, std) = train.channel_stats();
        eprintln!(
            "{}: train {} test {}, mean {mean:?} std {std:?}",
            kind.name(),
            train.len(),
            test.len()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Corrupt files: one-line errors, no panic

#[test]
fn cifar_corruptions_are_reported() {
    let raw = cifar_slice();
    let t = TempDir::new("c10bad");
    // Missing.
    expect_err(
        load(DatasetKind::Cifar10, t.path(), Split::Test),
        "test_batch.bin",
        &["missing", "cifar10 test split"],
    );
    // Empty.
    t.write("test_batch.bin", &[]);
    expect_err(
        load(DatasetKind::Cifar10, t.path(), Split::Test),
        "test_batch.bin",
        &["size 0", "3073-byte record"],
    );
    // Truncated in the middle of the third record.
    t.write("test_batch.bin", &raw[..2 * 3073 + 1000]);
    expect_err(
        load(DatasetKind::Cifar10, t.path(), Split::Test),
        "test_batch.bin",
        &[
            "size 7146",
            "not a positive multiple of the 3073-byte record",
        ],
    );
    // Label out of range in record 4.
    let mut bad = raw.clone();
    bad[4 * 3073] = 10;
    t.write("test_batch.bin", &bad);
    expect_err(
        load(DatasetKind::Cifar10, t.path(), Split::Test),
        "test_batch.bin",
        &["record 4", "label 10 out of range"],
    );
    // CIFAR-100: size not a multiple of 3074 (a CIFAR-10 file), labels out of range.
    t.write("test.bin", &raw);
    expect_err(
        load(
            DatasetKind::Cifar100(LabelKind::Fine),
            t.path(),
            Split::Test,
        ),
        "test.bin",
        &["3074-byte record"],
    );
    t.write("test.bin", &cifar100_file(&[(0, 0), (20, 5)]));
    expect_err(
        load(
            DatasetKind::Cifar100(LabelKind::Coarse),
            t.path(),
            Split::Test,
        ),
        "test.bin",
        &["record 1", "coarse label 20 out of range"],
    );
    t.write("test.bin", &cifar100_file(&[(3, 100)]));
    expect_err(
        load(
            DatasetKind::Cifar100(LabelKind::Fine),
            t.path(),
            Split::Test,
        ),
        "test.bin",
        &["record 0", "fine label 100 out of range"],
    );
}

#[test]
fn idx_corruptions_are_reported() {
    let t = TempDir::new("idxbad");
    let imgs = idx_images(3);
    let labels = idx_labels(&[1, 2, 3]);
    let load_test = || load(DatasetKind::Mnist, t.path(), Split::Test);
    // Missing image file (and the labels missing too).
    expect_err(
        load_test(),
        "t10k-images-idx3-ubyte",
        &["missing", "mnist test split"],
    );
    t.write("t10k-images-idx3-ubyte", &imgs);
    expect_err(load_test(), "t10k-labels-idx1-ubyte", &["missing"]);
    t.write("t10k-labels-idx1-ubyte", &labels);
    assert_eq!(load_test().unwrap().len(), 3);
    // Truncated image file.
    t.write("t10k-images-idx3-ubyte", &imgs[..imgs.len() - 1]);
    expect_err(
        load_test(),
        "t10k-images-idx3-ubyte",
        &["truncated", "3 images"],
    );
    // Truncated header.
    t.write("t10k-images-idx3-ubyte", &imgs[..10]);
    expect_err(
        load_test(),
        "t10k-images-idx3-ubyte",
        &["truncated", "16-byte"],
    );
    // A huge count in a small file: an error, not an allocation.
    let mut huge = imgs.clone();
    huge[4..8].copy_from_slice(&0x7fff_ffffu32.to_be_bytes());
    t.write("t10k-images-idx3-ubyte", &huge);
    expect_err(
        load_test(),
        "t10k-images-idx3-ubyte",
        &["truncated", "2147483647 images"],
    );
    // Trailing garbage.
    let mut long = imgs.clone();
    long.push(0);
    t.write("t10k-images-idx3-ubyte", &long);
    expect_err(
        load_test(),
        "t10k-images-idx3-ubyte",
        &["does not match the header"],
    );
    // Wrong magic: a label file where the images should be.
    t.write("t10k-images-idx3-ubyte", &labels);
    expect_err(
        load_test(),
        "t10k-images-idx3-ubyte",
        &["wrong magic 2049", "2051"],
    );
    t.write("t10k-images-idx3-ubyte", &imgs);
    // Wrong magic in the labels.
    t.write("t10k-labels-idx1-ubyte", &imgs);
    expect_err(
        load_test(),
        "t10k-labels-idx1-ubyte",
        &["wrong magic 2051", "2049"],
    );
    // Count mismatch.
    t.write("t10k-labels-idx1-ubyte", &idx_labels(&[1, 2, 3, 4]));
    expect_err(
        load_test(),
        "t10k-labels-idx1-ubyte",
        &["4 labels but", "t10k-images-idx3-ubyte has 3 images"],
    );
    // Label out of range.
    t.write("t10k-labels-idx1-ubyte", &idx_labels(&[1, 10, 3]));
    expect_err(
        load_test(),
        "t10k-labels-idx1-ubyte",
        &["record 1", "label 10 out of range"],
    );
    // Not 28x28.
    let mut wide = imgs.clone();
    wide[12..16].copy_from_slice(&27u32.to_be_bytes());
    t.write("t10k-labels-idx1-ubyte", &labels);
    t.write("t10k-images-idx3-ubyte", &wide);
    expect_err(
        load_test(),
        "t10k-images-idx3-ubyte",
        &["28x27", "expected 28x28"],
    );
    // A truncated gzip stream.
    let gz = gzip(&imgs);
    std::fs::remove_file(t.path().join("t10k-images-idx3-ubyte")).unwrap();
    t.write("t10k-images-idx3-ubyte.gz", &gz[..gz.len() / 2]);
    expect_err(load_test(), "t10k-images-idx3-ubyte.gz", &["gzip"]);
}

#[test]
fn mat_corruptions_are_reported() {
    let t = TempDir::new("matbad");
    let kind = DatasetKind::Svhn { extra: false };
    let load_test = || load(kind, t.path(), Split::Test);
    let f = "test_32x32.mat";
    expect_err(load_test(), f, &["missing", "svhn test split"]);
    let good = svhn_file(2, &[1.0, 2.0], YKind::Double, false);
    let good_z = svhn_file(2, &[1.0, 2.0], YKind::Double, true);
    // Header only partly there.
    t.write(f, &good[..100]);
    expect_err(load_test(), f, &["truncated", "128-byte MAT header"]);
    // Truncated inside X, uncompressed and compressed.
    t.write(f, &good[..good.len() - 3000]);
    expect_err(load_test(), f, &["truncated"]);
    t.write(f, &good_z[..good_z.len() - 40]);
    expect_err(load_test(), f, &["truncated"]);
    // Big-endian.
    let mut be = mat_header(b"MI");
    be.extend_from_slice(&good[128..]);
    t.write(f, &be);
    expect_err(load_test(), f, &["big-endian"]);
    // Not a MAT file at all.
    let mut junk = vec![b'x'; 4096];
    junk[..6].copy_from_slice(b"HELLO!");
    t.write(f, &junk);
    expect_err(load_test(), f, &["wrong magic"]);
    // v7.3 (HDF5).
    let mut v73 = good.clone();
    v73[124..126].copy_from_slice(&0x0200u16.to_le_bytes());
    t.write(f, &v73);
    expect_err(load_test(), f, &["v7.3"]);
    // Without X.
    let mut nox = mat_header(b"IM");
    nox.extend(svhn_y(&[1.0, 2.0], YKind::Double));
    t.write(f, &nox);
    expect_err(load_test(), f, &["no variable 'X'"]);
    // Without y.
    let mut noy = mat_header(b"IM");
    noy.extend(mat_matrix(
        "X",
        MX_UINT8,
        &[32, 32, 3, 1],
        MI_UINT8,
        &svhn_x(1),
    ));
    t.write(f, &noy);
    expect_err(load_test(), f, &["no variable 'y'"]);
    // Label out of range / not an integer.
    t.write(f, &svhn_file(2, &[1.0, 11.0], YKind::Double, true));
    expect_err(load_test(), f, &["record 1", "label 11 out of range"]);
    t.write(f, &svhn_file(2, &[2.5, 1.0], YKind::Double, false));
    expect_err(load_test(), f, &["record 0", "label 2.5 out of range"]);
    // Count mismatch between X and y.
    t.write(f, &svhn_file(2, &[1.0, 2.0, 3.0], YKind::Uint8, false));
    expect_err(load_test(), f, &["y has 3 labels but X has 2 images"]);
    // X of the wrong class or shape.
    let mut xd = mat_header(b"IM");
    xd.extend(mat_matrix(
        "X",
        MX_DOUBLE,
        &[32, 32, 3, 1],
        MI_UINT8,
        &svhn_x(1),
    ));
    xd.extend(svhn_y(&[1.0], YKind::Double));
    t.write(f, &xd);
    expect_err(load_test(), f, &["variable X is double", "expected uint8"]);
    let mut xs = mat_header(b"IM");
    xs.extend(mat_matrix(
        "X",
        MX_UINT8,
        &[32, 16, 6, 1],
        MI_UINT8,
        &svhn_x(1),
    ));
    xs.extend(svhn_y(&[1.0], YKind::Double));
    t.write(f, &xs);
    expect_err(load_test(), f, &["dims [32, 16, 6, 1]", "32x32x3xN"]);
    // Data size that disagrees with the dims.
    let mut xn = mat_header(b"IM");
    xn.extend(mat_matrix(
        "X",
        MX_UINT8,
        &[32, 32, 3, 2],
        MI_UINT8,
        &svhn_x(1),
    ));
    xn.extend(svhn_y(&[1.0, 2.0], YKind::Double));
    t.write(f, &xn);
    expect_err(load_test(), f, &["variable X", "3072 bytes", "6144"]);
    // An element announcing more bytes than the file has.
    let mut over = good.clone();
    let at = 128 + 4;
    over[at..at + 4].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
    t.write(f, &over);
    expect_err(load_test(), f, &["truncated", "runs past the end"]);
    // A compressed element whose inner matrix claims far more than it holds.
    let mut inner = mat_matrix("X", MX_UINT8, &[32, 32, 3, 1], MI_UINT8, &svhn_x(1));
    inner[4..8].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    let mut liar = mat_header(b"IM");
    liar.extend(mat_compressed(&inner));
    t.write(f, &liar);
    expect_err(
        load_test(),
        f,
        &[
            "compressed element at byte 128",
            "variable X",
            "announces 4294967280 bytes",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Validation split, statistics, normalisation

/// n images of 1x2x2 whose first two pixels encode the index.
fn indexed_images(n: usize) -> Images {
    let mut pixels = Vec::new();
    for i in 0..n {
        pixels.extend_from_slice(&[(i % 256) as u8, (i / 256) as u8, 7, 9]);
    }
    Images {
        channels: 1,
        height: 2,
        width: 2,
        pixels,
        labels: (0..n).map(|i| (i % 10) as u32).collect(),
        classes: 10,
    }
}

fn index_of(im: &Images, k: usize) -> usize {
    let p = im.image(k);
    p[0] as usize + 256 * p[1] as usize
}

#[test]
fn split_validation_is_seeded_disjoint_and_complete() {
    let all = indexed_images(1000);
    let (rest, val) = split_validation(all.clone(), 100, 42).unwrap();
    assert_eq!((rest.len(), val.len()), (900, 100));
    let ri: Vec<usize> = (0..rest.len()).map(|k| index_of(&rest, k)).collect();
    let vi: Vec<usize> = (0..val.len()).map(|k| index_of(&val, k)).collect();
    // Labels travel with their images.
    for (k, &i) in ri.iter().enumerate() {
        assert_eq!(rest.labels[k], (i % 10) as u32);
    }
    for (k, &i) in vi.iter().enumerate() {
        assert_eq!(val.labels[k], (i % 10) as u32);
    }
    let mut both: Vec<usize> = ri.iter().chain(&vi).copied().collect();
    both.sort_unstable();
    assert_eq!(both, (0..1000).collect::<Vec<_>>(), "disjoint and complete");
    assert!(ri.windows(2).all(|w| w[0] < w[1]), "file order kept");
    assert!(vi.windows(2).all(|w| w[0] < w[1]), "file order kept");
    // Not simply the first or last 100.
    assert!(vi.iter().any(|&i| i >= 100) && vi.iter().any(|&i| i < 900));
    // Deterministic for a seed, different for another.
    let (_, val2) = split_validation(all.clone(), 100, 42).unwrap();
    assert_eq!(val2.pixels, val.pixels);
    let (_, val3) = split_validation(all.clone(), 100, 43).unwrap();
    assert_ne!(val3.pixels, val.pixels);
    // Edge cases.
    let (r0, v0) = split_validation(all.clone(), 0, 1).unwrap();
    assert_eq!((r0.len(), v0.len()), (1000, 0));
    assert_eq!(r0.pixels, all.pixels);
    let (r1, v1) = split_validation(all.clone(), 999, 1).unwrap();
    assert_eq!((r1.len(), v1.len()), (1, 999));
    let e = split_validation(all.clone(), 1000, 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("1000") && !e.contains('\n'), "{e}");
    assert!(split_validation(all, 5000, 1).is_err());
}

#[test]
fn subset_picks_images_in_the_given_order() {
    let all = indexed_images(10);
    let s = all.subset(&[7, 2, 7]);
    assert_eq!(s.len(), 3);
    assert_eq!(
        (0..3).map(|k| index_of(&s, k)).collect::<Vec<_>>(),
        vec![7, 2, 7]
    );
    assert_eq!(s.labels, vec![7, 2, 7]);
    assert!(all.subset(&[]).is_empty());
}

#[test]
fn channel_stats_hand_worked() {
    // Two images of 2 channels x 1 x 2.
    // Channel 0: 0, 255 | 255, 0       -> values 0, 1, 1, 0: mean 0.5, std 0.5.
    // Channel 1: 51, 51 | 102, 102     -> 0.2, 0.2, 0.4, 0.4: mean 0.3, std 0.1.
    let im = Images {
        channels: 2,
        height: 1,
        width: 2,
        pixels: vec![0, 255, 51, 51, 255, 0, 102, 102],
        labels: vec![0, 1],
        classes: 2,
    };
    let (mean, std) = im.channel_stats();
    assert!(
        (mean[0] - 0.5).abs() < 1e-7 && (std[0] - 0.5).abs() < 1e-7,
        "{mean:?} {std:?}"
    );
    assert!(
        (mean[1] - 0.3).abs() < 1e-7 && (std[1] - 0.1).abs() < 1e-7,
        "{mean:?} {std:?}"
    );

    // Padding counts: a white 28x28 image padded to 32x32 has mean 784/1024 and std
    // sqrt(m (1 - m)) (a two-valued distribution).
    let t = TempDir::new("stats");
    let mut b = Vec::new();
    for v in [2051u32, 1, 28, 28] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b.extend(std::iter::repeat_n(255u8, 784));
    t.write("t10k-images-idx3-ubyte", &b);
    t.write("t10k-labels-idx1-ubyte", &idx_labels(&[3]));
    let white = load(DatasetKind::Mnist, t.path(), Split::Test).unwrap();
    let (m, s) = white.channel_stats();
    let want_m: f64 = 784.0 / 1024.0;
    let want_s: f64 = (want_m * (1.0 - want_m)).sqrt();
    assert!((m[0] as f64 - want_m).abs() < 1e-7, "{m:?}");
    assert!((s[0] as f64 - want_s).abs() < 1e-7, "{s:?}");
}

#[test]
fn normalise_into_applies_the_formula() {
    let im = Images {
        channels: 2,
        height: 1,
        width: 2,
        pixels: vec![0, 255, 51, 51, 255, 0, 102, 102],
        labels: vec![0, 1],
        classes: 2,
    };
    let mean = [0.5f32, 0.1];
    let std = [0.5f32, 0.5];
    let mut out = vec![f32::NAN; 8];
    normalise_into(&im, &[1, 0], &mean, &std, &mut out);
    // Image 1 first: ch0 255,0 -> 1, -1; ch1 102,102 -> (0.4-0.1)/0.5 = 0.6. Then image 0.
    let want = [1.0, -1.0, 0.6, 0.6, -1.0, 1.0, 0.2, 0.2];
    for (o, w) in out.iter().zip(want) {
        assert!((o - w).abs() < 1e-6, "{out:?}");
    }
    // Bit-exact against the formula in f32.
    for (k, &i) in [1usize, 0].iter().enumerate() {
        for ch in 0..2 {
            for p in 0..2 {
                let px = im.image(i)[ch * 2 + p];
                let f = (px as f32 / 255.0 - mean[ch]) / std[ch];
                assert_eq!(out[k * 4 + ch * 2 + p].to_bits(), f.to_bits());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Augmentation

/// The documented draws: flip = below(2) == 1, dy = below(9) - 4, dx = below(9) - 4.
fn draws(seed: u64, n: usize) -> Vec<(bool, isize, isize)> {
    let mut r = SeededRng::new(seed);
    (0..n)
        .map(|_| {
            let f = r.below(2) == 1;
            let dy = r.below(9) as isize - 4;
            let dx = r.below(9) as isize - 4;
            (f, dy, dx)
        })
        .collect()
}

fn seed_with(want: (bool, isize, isize)) -> u64 {
    (0..100_000u64)
        .find(|&s| draws(s, 1)[0] == want)
        .expect("a seed with these draws")
}

/// 4x5 image, v[y][x] = 10 y + x + 1.
fn image_4x5() -> Vec<f32> {
    (0..4)
        .flat_map(|y| (0..5).map(move |x| (10 * y + x + 1) as f32))
        .collect()
}

fn run_aug(
    seed: u64,
    aug: Augment,
    mut batch: Vec<f32>,
    n: usize,
    c: usize,
    h: usize,
    w: usize,
) -> Vec<f32> {
    let mut r = SeededRng::new(seed);
    augment_batch(&mut batch, n, c, h, w, aug, &mut r);
    batch
}

#[test]
fn augment_hand_checked_shifts() {
    // No flip, dy = 1, dx = -2: out[y][x] = in[y-1][x+2].
    let s = seed_with((false, 1, -2));
    let zero = run_aug(s, Augment::TranslateFlip, image_4x5(), 1, 1, 4, 5);
    #[rustfmt::skip]
    let want_zero = [
         0.,  0.,  0., 0., 0.,
         3.,  4.,  5., 0., 0.,
        13., 14., 15., 0., 0.,
        23., 24., 25., 0., 0.,
    ];
    assert_eq!(zero, want_zero);
    let refl = run_aug(s, Augment::Reflect, image_4x5(), 1, 1, 4, 5);
    #[rustfmt::skip]
    let want_refl = [
        13., 14., 15., 14., 13.,
         3.,  4.,  5.,  4.,  3.,
        13., 14., 15., 14., 13.,
        23., 24., 25., 24., 23.,
    ];
    assert_eq!(refl, want_refl);

    // Flip, dy = -1, dx = 1: out[y][x] = flipped[y+1][x-1], flipped[y][x] = in[y][4-x].
    let s = seed_with((true, -1, 1));
    let zero = run_aug(s, Augment::TranslateFlip, image_4x5(), 1, 1, 4, 5);
    #[rustfmt::skip]
    let want_zero = [
        0., 15., 14., 13., 12.,
        0., 25., 24., 23., 22.,
        0., 35., 34., 33., 32.,
        0.,  0.,  0.,  0.,  0.,
    ];
    assert_eq!(zero, want_zero);
    let refl = run_aug(s, Augment::Reflect, image_4x5(), 1, 1, 4, 5);
    #[rustfmt::skip]
    let want_refl = [
        14., 15., 14., 13., 12.,
        24., 25., 24., 23., 22.,
        34., 35., 34., 33., 32.,
        24., 25., 24., 23., 22.,
    ];
    assert_eq!(refl, want_refl);

    // No shift, no flip: unchanged; None: unchanged and no draws.
    let s = seed_with((false, 0, 0));
    assert_eq!(
        run_aug(s, Augment::Reflect, image_4x5(), 1, 1, 4, 5),
        image_4x5()
    );
    let mut r = SeededRng::new(9);
    let mut b = image_4x5();
    augment_batch(&mut b, 1, 1, 4, 5, Augment::None, &mut r);
    assert_eq!(b, image_4x5());
    assert_eq!(
        r.next_u64(),
        SeededRng::new(9).next_u64(),
        "None draws nothing"
    );
}

/// A naive reference of the documented semantics, per image.
fn reference(
    src: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    reflect: bool,
    d: &[(bool, isize, isize)],
) -> Vec<f32> {
    let refl = |i: isize, len: usize| -> usize {
        let l = len as isize;
        let mut i = i;
        while i < 0 || i >= l {
            if i < 0 {
                i = -i;
            }
            if i >= l {
                i = 2 * (l - 1) - i;
            }
        }
        i as usize
    };
    let mut out = vec![0f32; src.len()];
    for k in 0..n {
        let (flip, dy, dx) = d[k];
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let (sy, sx) = (y as isize - dy, x as isize - dx);
                    let inside = sy >= 0 && sy < h as isize && sx >= 0 && sx < w as isize;
                    let v = if inside || reflect {
                        let (sy, sx) = (refl(sy, h), refl(sx, w));
                        let sx = if flip { w - 1 - sx } else { sx };
                        src[((k * c + ch) * h + sy) * w + sx]
                    } else {
                        0.0
                    };
                    out[((k * c + ch) * h + y) * w + x] = v;
                }
            }
        }
    }
    out
}

#[test]
fn augment_is_deterministic_and_matches_the_reference() {
    let (n, c, h, w) = (16, 3, 32, 32);
    let mut r = SeededRng::new(5);
    let src: Vec<f32> = (0..n * c * h * w).map(|_| r.uniform_f32() + 0.5).collect();
    let d = draws(77, n);
    assert!(
        d.iter().any(|x| x.0) && d.iter().any(|x| !x.0),
        "both flips drawn"
    );
    for aug in [Augment::TranslateFlip, Augment::Reflect] {
        let a = run_aug(77, aug, src.clone(), n, c, h, w);
        let b = run_aug(77, aug, src.clone(), n, c, h, w);
        assert_eq!(a, b, "deterministic");
        let other = run_aug(78, aug, src.clone(), n, c, h, w);
        assert_ne!(a, other);
        assert_eq!(a, reference(&src, n, c, h, w, aug == Augment::Reflect, &d));
    }
    // Borders: zero padding leaves exact zeros in the |dy| rows and |dx| columns shifted in
    // (src has no zeros); reflection fills them with image values and agrees elsewhere.
    let zero = run_aug(77, Augment::TranslateFlip, src.clone(), n, c, h, w);
    let refl = run_aug(77, Augment::Reflect, src.clone(), n, c, h, w);
    let mut border_seen = 0;
    for (k, &(_, dy, dx)) in d.iter().enumerate() {
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let i = ((k * c + ch) * h + y) * w + x;
                    let (sy, sx) = (y as isize - dy, x as isize - dx);
                    let border = sy < 0 || sy >= h as isize || sx < 0 || sx >= w as isize;
                    if border {
                        border_seen += 1;
                        assert_eq!(zero[i], 0.0);
                        assert!(refl[i] >= 0.5, "reflect pads with image values");
                    } else {
                        assert_eq!(zero[i], refl[i]);
                        assert!(zero[i] >= 0.5);
                    }
                }
            }
        }
    }
    assert!(border_seen > 0);
}

#[test]
fn augment_shifts_every_channel_alike_and_draws_per_image() {
    // Two images of 2 channels; channel 1 = channel 0 + 100.
    let base = image_4x5();
    let mut batch = Vec::new();
    for k in 0..2 {
        for ch in 0..2 {
            batch.extend(base.iter().map(|v| v + (100 * ch + 1000 * k) as f32));
        }
    }
    let seed = 3;
    let d = draws(seed, 2);
    let out = run_aug(seed, Augment::Reflect, batch.clone(), 2, 2, 4, 5);
    assert_eq!(out, reference(&batch, 2, 2, 4, 5, true, &d));
    for k in 0..2 {
        let p = &out[k * 40..(k + 1) * 40];
        for i in 0..20 {
            assert_eq!(p[20 + i] - p[i], 100.0);
        }
    }
}
