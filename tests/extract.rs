//! Deployment: an extracted column computes exactly what the full network computes as that
//! column (also with BatchNorm folded), `extract-column` rejects bad input in one line, and
//! `anytime` / `plot` report numbers that agree with `eval` and write valid PNG/SVG files.

mod shared_data;
use fractalnet::backend::{Backend, Cpu};
use fractalnet::checkpoint;
use fractalnet::data::Images;
use fractalnet::model::extract::{extract_column, fold_bn, used_params};
use fractalnet::model::io::{ModelMeta, load_model, save_model, save_tensors};
use fractalnet::model::{Network, Sgd, StatsSel};
use fractalnet::plan::{DropPath, FractalConfig, KeepMask};
use fractalnet::rng::SeededRng;
use fractalnet::train::{self, make_batch};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fractalnet-extract-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Random 8x8 one-channel images with 4 classes.
fn random_images(n: usize, seed: u64) -> Images {
    let mut rng = SeededRng::new(seed);
    Images {
        channels: 1,
        height: 8,
        width: 8,
        pixels: (0..n * 64).map(|_| (rng.next_u64() % 256) as u8).collect(),
        labels: (0..n).map(|i| (i % 4) as u32).collect(),
        classes: 4,
    }
}

/// A small network trained for a few drop-path steps (so that BN statistics are not the
/// initial ones) and calibrated (so that each column has statistics of its own).
fn trained(b: &Cpu, columns: usize, images: &Images) -> (Network<Cpu>, ModelMeta) {
    trained_with(b, columns, vec![4, 6], images)
}

fn trained_with(
    b: &Cpu,
    columns: usize,
    channels: Vec<usize>,
    images: &Images,
) -> (Network<Cpu>, ModelMeta) {
    let mut cfg = FractalConfig::new(columns, channels, 1, 4);
    cfg.input_hw = [8, 8];
    let mut net = Network::new(b, &cfg, 3).unwrap();
    let (mean, std) = images.channel_stats();
    let mut sgd = Sgd::new(b, &net.params, 0.05, 0.9, 0.0).unwrap();
    let mut rng = SeededRng::new(11);
    let idx: Vec<usize> = (0..images.len()).collect();
    for chunk in idx.chunks(16).cycle().take(8) {
        let (x, y) = make_batch(b, images, chunk, &mean, &std, None).unwrap();
        let mask = DropPath::PAPER.sample(&cfg, &mut rng).0;
        net.train_step(b, &x, &y, &mask, rng.next_u64(), &mut sgd)
            .unwrap();
    }
    train::calibrate(b, &mut net, images, &mean, &std, images.len(), 16, 5).unwrap();
    (net, ModelMeta::new(cfg, mean, std))
}

/// max |a - b| / max |a|.
fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(0f64, |m, v| m.max(v.abs() as f64)).max(1e-30);
    a.iter()
        .zip(b)
        .fold(0f64, |m, (x, y)| m.max((*x as f64 - *y as f64).abs()))
        / scale
}

fn logits(
    b: &Cpu,
    net: &mut Network<Cpu>,
    x: &fractalnet::Tensor<Cpu>,
    column: usize,
    stats: Option<StatsSel>,
) -> Vec<f32> {
    // None: what evaluating the column uses (its own statistics when the file has them)
    let stats = stats.unwrap_or(net.stats_for(Some(column)));
    let mask = KeepMask::column(net.config(), column).unwrap();
    b.to_host(&net.predict(b, x, &mask, stats).unwrap())
        .unwrap()
}

#[test]
fn extracted_columns_compute_the_columns_logits() {
    let b = Cpu::with_threads(2);
    let tmp = tmpdir("lib");
    let images = random_images(64, 1);
    for columns in 1..=4 {
        let (net, meta) = trained(&b, columns, &images);
        let full_path = tmp.join(format!("c{columns}.safetensors"));
        save_model(&full_path, &b, &net, &meta).unwrap();
        let (mut full, _) = load_model(&full_path, &b).unwrap();
        let full_raw = checkpoint::read(&full_path).unwrap();
        let idx: Vec<usize> = (0..20).collect();
        let (x, _) =
            make_batch(&b, &images, &idx, &meta.input_mean, &meta.input_std, None).unwrap();
        let mut stats_matter = false;
        for c in 0..columns {
            let want = logits(&b, &mut full, &x, c, None);
            assert_eq!(full.stats_for(Some(c)), StatsSel::Column);

            // plain extraction: bit for bit the same arithmetic
            let e = extract_column(&full, &meta, c).unwrap();
            assert_eq!(e.params.trainable_count(), used_params(&full.plan, Some(c)));
            let path = tmp.join(format!("c{columns}-col{c}.safetensors"));
            save_tensors(&path, &b, &e.params, &e.meta, &BTreeMap::new(), |_| true).unwrap();
            let raw = checkpoint::read(&path).unwrap();
            let names: BTreeSet<&str> = raw.tensors.keys().map(String::as_str).collect();
            let expect: BTreeSet<String> = full_raw
                .tensors
                .keys()
                .filter(|n| {
                    (n.starts_with("fc.") || n.contains(&format!(".col{c}.")))
                        && !n.contains(".bn.column_")
                })
                .cloned()
                .collect();
            assert_eq!(
                names,
                expect.iter().map(String::as_str).collect(),
                "C={columns} column {c}"
            );
            for n in names.iter().filter(|n| n.contains(".bn.running_")) {
                let twin = n.replace(".bn.running_", ".bn.column_");
                assert_eq!(
                    raw.tensors[*n].1, full_raw.tensors[&twin].1,
                    "{n} must hold the column's statistics"
                );
            }
            let (mut ext, ext_meta) = load_model(&path, &b).unwrap();
            assert_eq!(ext_meta.column, Some(c));
            let got = logits(&b, &mut ext, &x, c, None);
            let err = rel_err(&want, &got);
            assert!(err <= 1e-5, "C={columns} column {c}: relative error {err}");

            // the test has power: the full network's statistics give other logits
            let running = logits(&b, &mut full, &x, c, Some(StatsSel::Running));
            stats_matter |= rel_err(&want, &running) > 1e-3;

            // BatchNorm folded into the convolutions
            let f = fold_bn(&b, &e.params, &e.meta).unwrap();
            let fpath = tmp.join(format!("c{columns}-col{c}-folded.safetensors"));
            save_tensors(&fpath, &b, &f.params, &f.meta, &BTreeMap::new(), |_| true).unwrap();
            let fraw = checkpoint::read(&fpath).unwrap();
            assert!(fraw.tensors.keys().all(|n| n.starts_with("fc.")
                || n.ends_with(".conv.weight")
                || n.ends_with(".conv.bias")));
            assert_eq!(
                fraw.tensors
                    .keys()
                    .filter(|n| n.ends_with(".conv.bias"))
                    .count(),
                2 << c
            );
            let (mut folded, fmeta) = load_model(&fpath, &b).unwrap();
            assert!(fmeta.folded_bn && fmeta.column == Some(c));
            let got = logits(&b, &mut folded, &x, c, None);
            let err = rel_err(&want, &got);
            assert!(
                err <= 1e-4,
                "C={columns} column {c} folded: relative error {err}"
            );
            // inference only
            let y = b
                .from_host(fractalnet::Shape::new([20]), &[0.0; 20])
                .unwrap();
            let mask = KeepMask::column(folded.config(), c).unwrap();
            let msg = folded
                .loss_and_grads(&b, &x, &y, &mask, 0, false)
                .err()
                .expect("training a folded net must fail")
                .to_string();
            assert!(msg.contains("inference only"), "{msg}");
        }
        if columns > 1 {
            assert!(
                stats_matter,
                "C={columns}: column statistics equal the full network's; the test cannot tell them apart"
            );
        }
        // neither a column of a column, nor an out-of-range column
        let e = extract_column(&full, &meta, 0).unwrap();
        assert!(extract_column(&full, &e.meta, 0).is_err());
        let err = extract_column(&full, &meta, columns)
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("out of range")));
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn a_loaded_folded_column_runs_winograd_with_the_same_logits() {
    // the CPU prepares Winograd weights for the folded layers when the file is loaded, and
    // the layers where it pays run it (here every 3x3 layer with 32 channels or more)
    let b = Cpu::with_threads(2);
    let tmp = tmpdir("winograd");
    let images = random_images(40, 2);
    let (net, meta) = trained_with(&b, 2, vec![32, 64], &images);
    let idx: Vec<usize> = (0..40).collect();
    let (x, _) = make_batch(&b, &images, &idx, &meta.input_mean, &meta.input_std, None).unwrap();
    let e = extract_column(&net, &meta, 1).unwrap();
    let f = fold_bn(&b, &e.params, &e.meta).unwrap();
    let path = tmp.join("col1-folded.safetensors");
    save_tensors(&path, &b, &f.params, &f.meta, &BTreeMap::new(), |_| true).unwrap();
    let (mut folded, _) = load_model(&path, &b).unwrap();
    let prepared: Vec<usize> = folded
        .params
        .specs
        .iter()
        .zip(&folded.params.tensors)
        .filter(|(s, _)| s.name.ends_with("const.prepared"))
        .map(|(_, t)| t.shape.numel())
        .collect();
    // the plan of C = 2 has three layers per block; the file holds column 1's two, and
    // only those are prepared
    assert_eq!(prepared.len(), 6);
    assert_eq!(
        prepared.iter().filter(|&&n| n > 0).count(),
        4,
        "{prepared:?}"
    );
    let wino = logits(&b, &mut folded, &x, 1, None);
    // the same network with the prepared tensors emptied runs the direct kernels
    let (mut direct, _) = load_model(&path, &b).unwrap();
    for (s, t) in direct
        .params
        .specs
        .iter()
        .zip(direct.params.tensors.iter_mut())
    {
        if s.name.ends_with("const.prepared") {
            *t = b.from_host(fractalnet::Shape::new([0]), &[]).unwrap();
        }
    }
    let plain = logits(&b, &mut direct, &x, 1, None);
    assert_ne!(
        wino, plain,
        "Winograd rounds differently, so it did not run"
    );
    let err = rel_err(&plain, &wino);
    assert!(err <= 1e-5, "relative error {err}");
    let _ = std::fs::remove_dir_all(&tmp);
}

// ---- the binaries ----------------------------------------------------------------------

/// A data dir with the 500-image Fashion-MNIST slice as both the train and the test split.
fn fashion_dir(tmp: &Path) -> PathBuf {
    let src = shared_data::shared_data().join("fashion-mnist-sample");
    let dir = tmp.join("fmnist");
    std::fs::create_dir_all(&dir).unwrap();
    for (from, to) in [
        ("t10k-images-idx3-ubyte.gz", "train-images-idx3-ubyte.gz"),
        ("t10k-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        ("t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"),
        ("t10k-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    ] {
        std::fs::copy(src.join(from), dir.join(to)).unwrap();
    }
    dir
}

fn fractalnet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fractalnet"))
}

fn extract() -> Command {
    Command::new(env!("CARGO_BIN_EXE_extract-column"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn fails_in_one_line(cmd: &mut Command, needle: &str) {
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{cmd:?}: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{cmd:?}: not one line: {err}"
    );
    assert!(err.contains(needle), "{cmd:?}: {err} lacks {needle}");
}

/// A PNG signature and an IHDR chunk with a sane size.
fn assert_png(path: &Path) {
    let b = std::fs::read(path).unwrap();
    assert!(b.len() > 1000, "{}: {} bytes", path.display(), b.len());
    assert_eq!(
        &b[..8],
        b"\x89PNG\r\n\x1a\n",
        "{}: not a PNG",
        path.display()
    );
    assert_eq!(&b[12..16], b"IHDR");
    let (w, h) = (
        u32::from_be_bytes(b[16..20].try_into().unwrap()),
        u32::from_be_bytes(b[20..24].try_into().unwrap()),
    );
    assert!(w >= 320 && h >= 240, "{w}x{h}");
    assert_eq!(&b[b.len() - 8..b.len() - 4], b"IEND");
}

fn assert_svg(path: &Path) {
    let s = std::fs::read_to_string(path).unwrap();
    assert!(
        s.trim_start().starts_with("<svg") && s.trim_end().ends_with("</svg>"),
        "{}: not an SVG document",
        path.display()
    );
    assert!(
        s.contains("<polyline") || s.contains("<path") || s.contains("<line"),
        "{}: draws nothing",
        path.display()
    );
}

#[test]
fn extract_anytime_and_plot_agree_with_eval() {
    let tmp = tmpdir("cli");
    let data = fashion_dir(&tmp);
    let run = tmp.join("run");
    run_ok(
        fractalnet()
            .args([
                "train",
                "--dataset",
                "fashion-mnist",
                "--columns",
                "3",
                "--channels",
                "8,16",
                "--batch-size",
                "50",
                "--val",
                "100",
                "--bn-calib",
                "200",
                "--epochs",
                "2",
                "--dropout",
                "0,0",
                "--threads",
                "2",
                "--device",
                "cpu",
            ])
            .arg("--data-dir")
            .arg(&data)
            .arg("--out")
            .arg(&run),
    );
    let model = run.join("model.safetensors");
    let eval = |file: &Path, column: Option<usize>| -> serde_json::Value {
        let mut c = fractalnet();
        c.args([
            "eval",
            "--dataset",
            "fashion-mnist",
            "--device",
            "cpu",
            "--json",
        ])
        .arg("--data-dir")
        .arg(&data)
        .arg("--checkpoint")
        .arg(file);
        if let Some(col) = column {
            c.args(["--column", &col.to_string()]);
        }
        json(&run_ok(&mut c))
    };
    let full = eval(&model, None);
    let mut col_eval = Vec::new();
    for c in 0..3 {
        let want = eval(&model, Some(c));
        for fold in [false, true] {
            let out = tmp.join(format!(
                "col{c}{}.safetensors",
                if fold { "-folded" } else { "" }
            ));
            let mut cmd = extract();
            cmd.arg("--checkpoint")
                .arg(&model)
                .args(["--column", &c.to_string()])
                .arg("--out")
                .arg(&out);
            if fold {
                cmd.arg("--fold-bn");
            }
            let report = run_ok(&mut cmd);
            assert!(
                report.contains("parameters") && report.contains("file bytes"),
                "{report}"
            );
            assert!(
                std::fs::metadata(&out).unwrap().len() < std::fs::metadata(&model).unwrap().len()
            );
            let got = eval(&out, None);
            assert_eq!(got["evaluated"], format!("column {c}"));
            if fold {
                // rounding may flip a near-tie: at most one image of 500
                let d =
                    (got["accuracy"].as_f64().unwrap() - want["accuracy"].as_f64().unwrap()).abs();
                assert!(d <= 0.002 + 1e-12, "column {c} folded: {got} vs {want}");
            } else {
                assert_eq!(got["accuracy"], want["accuracy"], "column {c}");
            }
            let (lw, lg) = (
                want["loss"].as_f64().unwrap(),
                got["loss"].as_f64().unwrap(),
            );
            assert!(
                (lw - lg).abs() <= 1e-4 * lw.abs().max(1.0),
                "column {c} folded={fold}: loss {lw} vs {lg}"
            );
        }
        col_eval.push(want);
    }

    // anytime: one row per column plus the full network, the same accuracies as eval
    let png = tmp.join("anytime.png");
    let out = run_ok(
        fractalnet()
            .args([
                "anytime",
                "--dataset",
                "fashion-mnist",
                "--device",
                "cpu",
                "--threads",
                "2",
                "--runs",
                "3",
                "--json",
                "--deadline-ms",
                "1e9",
            ])
            .arg("--data-dir")
            .arg(&data)
            .arg("--checkpoint")
            .arg(&model)
            .arg("--plot")
            .arg(&png),
    );
    let v = json(&out);
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "{v}");
    let (blocks, plan) = (
        2,
        fractalnet::plan::Plan::new(&load_model(&model, &Cpu::with_threads(2)).unwrap().1.config)
            .unwrap(),
    );
    for (c, r) in rows.iter().take(3).enumerate() {
        assert_eq!(r["column"], c);
        assert_eq!(r["accuracy"], col_eval[c]["accuracy"], "{r}");
        assert_eq!(r["depth"], blocks << c);
        assert_eq!(r["params"], used_params(&plan, Some(c)));
        assert!(
            r["ms_per_image_batch1"].as_f64().unwrap() > 0.0
                && r["ms_per_image_big_batch"].as_f64().unwrap() > 0.0
        );
        assert_eq!(r["big_batch"], 100);
    }
    assert_eq!(rows[3]["what"], "full network");
    assert_eq!(rows[3]["accuracy"], full["accuracy"]);
    assert_eq!(rows[3]["depth"], blocks * 4);
    assert_eq!(rows[3]["params"], used_params(&plan, None));
    // an unlimited deadline picks the most accurate row
    let best = rows
        .iter()
        .map(|r| r["accuracy"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert_eq!(v["choice"]["accuracy"].as_f64().unwrap(), best);
    assert_png(&png);

    // an impossible deadline: nothing fits, said in words; SVG output
    let svg = tmp.join("anytime.svg");
    let out = run_ok(
        fractalnet()
            .args([
                "anytime",
                "--dataset",
                "fashion-mnist",
                "--device",
                "cpu",
                "--threads",
                "2",
                "--runs",
                "1",
                "--deadline-ms",
                "1e-9",
            ])
            .arg("--data-dir")
            .arg(&data)
            .arg("--checkpoint")
            .arg(&model)
            .arg("--plot")
            .arg(&svg),
    );
    assert!(out.contains("nothing fits"), "{out}");
    assert!(
        out.contains("column 2") && out.contains("full network"),
        "{out}"
    );
    assert_svg(&svg);

    // an extracted column: one row
    let out = run_ok(
        fractalnet()
            .args([
                "anytime",
                "--dataset",
                "fashion-mnist",
                "--device",
                "cpu",
                "--runs",
                "1",
                "--json",
            ])
            .arg("--data-dir")
            .arg(&data)
            .arg("--checkpoint")
            .arg(tmp.join("col1-folded.safetensors")),
    );
    let v = json(&out);
    assert_eq!(v["rows"].as_array().unwrap().len(), 1);
    let d = v["rows"][0]["accuracy"].as_f64().unwrap() - col_eval[1]["accuracy"].as_f64().unwrap();
    assert!(d.abs() <= 0.002 + 1e-12, "{v}");

    // plot: the learning curves, PNG by default into the run, SVG on request, and without a font
    let out = run_ok(fractalnet().arg("plot").arg(&run));
    assert!(out.contains("2 epochs, 3 columns"), "{out}");
    assert_png(&run.join("curves.png"));
    run_ok(
        fractalnet()
            .arg("plot")
            .arg(&run)
            .arg("--out")
            .arg(tmp.join("curves.svg")),
    );
    assert_svg(&tmp.join("curves.svg"));
    run_ok(
        fractalnet()
            .env("FRACTALNET_FONT", "none")
            .arg("plot")
            .arg(&run)
            .arg("--out")
            .arg(tmp.join("plain.png")),
    );
    assert_png(&tmp.join("plain.png"));
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let tmp = tmpdir("bad");
    let b = Cpu::with_threads(2);
    let images = random_images(32, 2);
    let (net, meta) = trained(&b, 2, &images);
    let model = tmp.join("m.safetensors");
    save_model(&model, &b, &net, &meta).unwrap();
    let col = tmp.join("col0.safetensors");
    run_ok(
        extract()
            .arg("--checkpoint")
            .arg(&model)
            .args(["--column", "0"])
            .arg("--out")
            .arg(&col),
    );
    let folded = tmp.join("folded.safetensors");
    let f = fold_bn(&b, &net.params, &meta).unwrap();
    save_tensors(&folded, &b, &f.params, &f.meta, &BTreeMap::new(), |_| true).unwrap();
    let bare = tmp.join("bare.safetensors");
    checkpoint::write_atomic(
        &bare,
        &BTreeMap::new(),
        &[("w".into(), fractalnet::Shape::new([2]), &[1.0f32, 2.0][..])],
    )
    .unwrap();
    let junk = tmp.join("junk.bin");
    std::fs::write(&junk, b"not a safetensors file at all").unwrap();
    let out = tmp.join("out.safetensors");

    let ex = |file: &Path, column: &str| {
        let mut c = extract();
        c.arg("--checkpoint")
            .arg(file)
            .args(["--column", column])
            .arg("--out")
            .arg(&out);
        c
    };
    fails_in_one_line(&mut ex(&model, "2"), "--column 2 is out of range");
    fails_in_one_line(&mut ex(&model, "-1"), "-1");
    fails_in_one_line(&mut ex(&col, "0"), "already holds only column 0");
    fails_in_one_line(&mut ex(&folded, "0"), "folded");
    fails_in_one_line(&mut ex(&bare, "0"), "not a FractalNet model file");
    fails_in_one_line(&mut ex(&junk, "0"), "junk.bin");
    fails_in_one_line(
        &mut ex(&tmp.join("missing.safetensors"), "0"),
        "missing.safetensors",
    );
    fails_in_one_line(
        extract()
            .arg("--checkpoint")
            .arg(&model)
            .arg("--out")
            .arg(&out),
        "--column",
    );
    fails_in_one_line(
        extract()
            .arg("--checkpoint")
            .arg(&model)
            .args(["--column", "0"])
            .arg("--out")
            .arg(&model),
        "is the --checkpoint file",
    );
    assert!(!out.exists(), "a failed extraction must not write --out");

    let data = fashion_dir(&tmp);
    // anytime and plot: bad flags, a model that does not fit the data, bad run directories
    fails_in_one_line(
        fractalnet()
            .args([
                "anytime",
                "--dataset",
                "fashion-mnist",
                "--data-dir",
                "/nonexistent",
                "--plot",
                "x.txt",
            ])
            .arg("--checkpoint")
            .arg(&model),
        ".png or .svg",
    );
    fails_in_one_line(
        fractalnet()
            .args([
                "anytime",
                "--dataset",
                "fashion-mnist",
                "--data-dir",
                "/nonexistent",
                "--deadline-ms",
                "0",
            ])
            .arg("--checkpoint")
            .arg(&model),
        "--deadline-ms",
    );
    fails_in_one_line(
        fractalnet()
            .args(["anytime", "--dataset", "fashion-mnist", "--device", "cpu"])
            .arg("--data-dir")
            .arg(&data)
            .arg("--checkpoint")
            .arg(&model),
        "channels",
    );
    fails_in_one_line(
        fractalnet().args(["plot", "/nonexistent-run"]),
        "metrics.jsonl",
    );
    std::fs::create_dir_all(tmp.join("badrun")).unwrap();
    std::fs::write(tmp.join("badrun/metrics.jsonl"), "{\"epoch\": 1}\n").unwrap();
    fails_in_one_line(fractalnet().arg("plot").arg(tmp.join("badrun")), "line 1");
    fails_in_one_line(
        fractalnet()
            .arg("plot")
            .arg(tmp.join("badrun"))
            .args(["--out", "curves.jpg"]),
        ".png or .svg",
    );
    let _ = std::fs::remove_dir_all(&tmp);
}

/// The same files on Vulkan: the folded unit's bias add (an identity BatchNorm with eps 0)
/// and the column's statistics give the CPU's logits within the conv GEMM's rounding.
/// FAILS without a Vulkan device (lavapipe counts) unless FRACTALNET_SKIP_VULKAN=1;
/// FRACTALNET_VK_DEVICE=<index> picks one.
#[test]
fn extracted_and_folded_columns_on_vulkan_match_the_cpu() {
    use fractalnet::backend::vulkan::{Vulkan, VulkanOptions};
    let device = std::env::var("FRACTALNET_VK_DEVICE").ok().map(|v| {
        v.parse::<usize>()
            .expect("FRACTALNET_VK_DEVICE is an index")
    });
    let vk = match Vulkan::with_options(VulkanOptions {
        device,
        validation: false,
    }) {
        Ok(v) => v,
        Err(e) if std::env::var("FRACTALNET_SKIP_VULKAN").is_ok_and(|v| v == "1") => {
            println!("SKIPPED (FRACTALNET_SKIP_VULKAN=1): {e}");
            return;
        }
        Err(e) => panic!(
            "no usable Vulkan device ({e}); set FRACTALNET_SKIP_VULKAN=1 to skip on a machine without Vulkan"
        ),
    };
    println!("on {}", vk.name());
    let b = Cpu::with_threads(2);
    let tmp = tmpdir("vk");
    let images = random_images(64, 3);
    let (net, meta) = trained(&b, 3, &images);
    let full_path = tmp.join("full.safetensors");
    save_model(&full_path, &b, &net, &meta).unwrap();
    let (mut full, _) = load_model(&full_path, &b).unwrap();
    let idx: Vec<usize> = (0..20).collect();
    let (x, _) = make_batch(&b, &images, &idx, &meta.input_mean, &meta.input_std, None).unwrap();
    let (xv, _) = make_batch(&vk, &images, &idx, &meta.input_mean, &meta.input_std, None).unwrap();
    for c in 0..3 {
        let want = logits(&b, &mut full, &x, c, None);
        let e = extract_column(&full, &meta, c).unwrap();
        let f = fold_bn(&b, &e.params, &e.meta).unwrap();
        for (name, params, m) in [
            ("extracted", &e.params, &e.meta),
            ("folded", &f.params, &f.meta),
        ] {
            let path = tmp.join(format!("col{c}-{name}.safetensors"));
            save_tensors(&path, &b, params, m, &BTreeMap::new(), |_| true).unwrap();
            let (mut on_vk, _) = load_model(&path, &vk).unwrap();
            let mask = KeepMask::column(on_vk.config(), c).unwrap();
            let stats = on_vk.stats_for(Some(c));
            let got = vk
                .to_host(&on_vk.predict(&vk, &xv, &mask, stats).unwrap())
                .unwrap();
            let err = rel_err(&want, &got);
            assert!(
                err <= 1e-4,
                "column {c} {name} on {}: relative error {err}",
                vk.name()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
