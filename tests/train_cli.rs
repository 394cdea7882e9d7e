//! The `fractalnet` binary end to end on real pixels: the Fashion-MNIST slice in
//! shared/data (500 images), renamed as a training split. Training is reproducible line for
//! line, the model file evaluates, and bad input is one line with exit code 2.

mod shared_data;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A data dir with the 500-image slice as both the train and the test split.
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

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fractalnet-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fractalnet"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn train(data: &Path, out: &Path, extra: &[&str]) -> String {
    let mut c = bin();
    c.args([
        "train",
        "--dataset",
        "fashion-mnist",
        "--columns",
        "2",
        "--channels",
        "8,16",
        "--batch-size",
        "50",
        "--val",
        "100",
        "--bn-calib",
        "200",
        "--seed",
        "7",
        "--threads",
        "2",
        "--augment",
        "translate-flip",
        "--dropout",
        "0,0",
    ]);
    if !extra.contains(&"--epochs") {
        c.args(["--epochs", "4"]);
    }
    c.arg("--data-dir")
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(extra);
    run_ok(&mut c)
}

fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn training_is_reproducible_and_the_model_evaluates() {
    let tmp = tmpdir("train");
    let data = fashion_dir(&tmp);
    train(&data, &tmp.join("a"), &[]);
    train(&data, &tmp.join("b"), &[]);
    let (ma, mb) = (metrics(&tmp.join("a")), metrics(&tmp.join("b")));
    assert_eq!(ma.len(), 4);
    for (x, y) in ma.iter().zip(&mb) {
        for k in [
            "epoch",
            "lr",
            "train_loss",
            "train_acc",
            "val_loss",
            "val_acc",
            "val_acc_columns",
        ] {
            assert_eq!(x[k], y[k], "{k} differs between identical runs");
        }
        assert!(x["images_per_s"].as_f64().unwrap() > 0.0 && x["seconds"].as_f64().unwrap() > 0.0);
        assert_eq!(x["val_acc_columns"].as_array().unwrap().len(), 2);
    }
    // it learns: training loss falls, and the network beats chance (10%) on held-out images
    let l0 = ma[0]["train_loss"].as_f64().unwrap();
    let l3 = ma[3]["train_loss"].as_f64().unwrap();
    assert!(l3 < l0, "train loss {l0} -> {l3}");
    assert!(ma[3]["val_acc"].as_f64().unwrap() > 0.3, "{:?}", ma[3]);
    // the schedule: lr divided by 10 each time the remaining epochs halve (after 2 and 3 of 4)
    let lrs: Vec<f32> = ma
        .iter()
        .map(|m| m["lr"].as_f64().unwrap() as f32)
        .collect();
    for (a, b) in lrs.iter().zip([0.02f32, 0.02, 0.002, 0.0002]) {
        assert!((a - b).abs() <= 1e-6 * b, "{lrs:?}");
    }
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.join("a/config.json")).unwrap()).unwrap();
    assert_eq!(cfg["recipe"]["momentum"].as_f64().unwrap() as f32, 0.9);

    // eval: the validation split rebuilt from the file's run metadata gives the same accuracy
    let model = tmp.join("a/model.safetensors");
    let out = run_ok(
        bin()
            .args([
                "eval",
                "--dataset",
                "fashion-mnist",
                "--split",
                "val",
                "--all-columns",
                "--json",
            ])
            .arg("--data-dir")
            .arg(&data)
            .arg("--checkpoint")
            .arg(&model),
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["n"], 100);
    assert_eq!(v["accuracy"], ma[3]["val_acc"]);
    let cols: Vec<f64> = v["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["accuracy"].as_f64().unwrap())
        .collect();
    let want: Vec<f64> = ma[3]["val_acc_columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_f64().unwrap())
        .collect();
    assert_eq!(cols, want);
    // logits: a float32 .npy of [N, K] whose argmax agrees with the reported accuracy
    let npy = tmp.join("logits.npy");
    let out = run_ok(
        bin()
            .args([
                "eval",
                "--dataset",
                "fashion-mnist",
                "--column",
                "1",
                "--json",
            ])
            .arg("--data-dir")
            .arg(&data)
            .arg("--checkpoint")
            .arg(&model)
            .arg("--logits")
            .arg(&npy),
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let bytes = std::fs::read(&npy).unwrap();
    let hl = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert!(
        std::str::from_utf8(&bytes[10..10 + hl])
            .unwrap()
            .contains("'shape': (500, 10)")
    );
    let vals: Vec<f32> = bytes[10 + hl..]
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(vals.len(), 5000);
    let labels = fractalnet::data::load(
        fractalnet::data::DatasetKind::FashionMnist,
        &data,
        fractalnet::data::Split::Test,
    )
    .unwrap()
    .labels;
    let correct = vals
        .chunks(10)
        .zip(&labels)
        .filter(|(row, l)| {
            let best = (0..10).fold(0, |b, j| if row[j] > row[b] { j } else { b });
            best as u32 == **l
        })
        .count();
    assert_eq!(correct as f64 / 500.0, v["accuracy"].as_f64().unwrap());

    // calibrate rewrites the file; evaluating it again still works
    run_ok(
        bin()
            .args(["calibrate", "--dataset", "fashion-mnist", "--n", "100"])
            .arg("--data-dir")
            .arg(&data)
            .arg("--checkpoint")
            .arg(&model),
    );
    run_ok(
        bin()
            .args(["eval", "--dataset", "fashion-mnist"])
            .arg("--data-dir")
            .arg(&data)
            .arg("--checkpoint")
            .arg(&model),
    );
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn plain_baseline_trains_one_column() {
    let tmp = tmpdir("plain");
    let data = fashion_dir(&tmp);
    let out = train(&data, &tmp.join("p"), &["--plain", "--epochs", "1"]);
    assert!(out.contains("plain network"), "{out}");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.join("p/config.json")).unwrap()).unwrap();
    assert_eq!(cfg["network"]["columns"], 1);
    assert_eq!(cfg["network"]["plain_layers"], 2);
    assert_eq!(cfg["recipe"]["global_ratio"], 0.0);
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let tmp = tmpdir("bad");
    let data = fashion_dir(&tmp);
    std::fs::create_dir_all(tmp.join("taken")).unwrap();
    std::fs::write(tmp.join("taken/metrics.jsonl"), "{}\n").unwrap();
    let d = data.to_str().unwrap();
    let t = tmp.join("x");
    let t = t.to_str().unwrap();
    let taken = tmp.join("taken");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "train",
                "--dataset",
                "imagenet",
                "--data-dir",
                d,
                "--out",
                t,
            ],
            "imagenet",
        ),
        (
            vec![
                "train",
                "--dataset",
                "fashion-mnist",
                "--data-dir",
                "/nonexistent",
                "--out",
                t,
            ],
            "missing",
        ),
        (
            vec![
                "train",
                "--dataset",
                "fashion-mnist",
                "--data-dir",
                d,
                "--columns",
                "0",
                "--out",
                t,
            ],
            "--columns 0",
        ),
        (
            vec![
                "train",
                "--dataset",
                "fashion-mnist",
                "--data-dir",
                d,
                "--channels",
                "8,16",
                "--dropout",
                "0.1",
                "--out",
                t,
            ],
            "--dropout has 1",
        ),
        (
            vec![
                "train",
                "--dataset",
                "fashion-mnist",
                "--data-dir",
                d,
                "--channels",
                "8,8,8,8,8,8",
                "--out",
                t,
            ],
            "too small",
        ),
        (
            vec![
                "train",
                "--dataset",
                "fashion-mnist",
                "--data-dir",
                d,
                "--augment",
                "rotate",
                "--out",
                t,
            ],
            "rotate",
        ),
        (
            vec![
                "train",
                "--dataset",
                "fashion-mnist",
                "--data-dir",
                d,
                "--val",
                "500",
                "--out",
                t,
            ],
            "validation split of 500",
        ),
        (
            vec![
                "train",
                "--dataset",
                "fashion-mnist",
                "--data-dir",
                d,
                "--lr=-1",
                "--out",
                t,
            ],
            "--lr",
        ),
        (
            vec![
                "train",
                "--dataset",
                "fashion-mnist",
                "--data-dir",
                d,
                "--lr",
                "-1",
                "--out",
                t,
            ],
            "'-1'",
        ),
        (
            vec![
                "train",
                "--dataset",
                "fashion-mnist",
                "--data-dir",
                d,
                "--epochs",
                "many",
                "--out",
                t,
            ],
            "many",
        ),
        (
            vec![
                "train",
                "--dataset",
                "fashion-mnist",
                "--data-dir",
                d,
                "--out",
                taken.to_str().unwrap(),
            ],
            "already holds a run",
        ),
        (
            vec![
                "train",
                "--dataset",
                "fashion-mnist",
                "--data-dir",
                d,
                "--label",
                "coarse",
                "--out",
                t,
            ],
            "label",
        ),
        (
            vec![
                "eval",
                "--dataset",
                "fashion-mnist",
                "--data-dir",
                d,
                "--checkpoint",
                "/nonexistent.safetensors",
            ],
            "nonexistent",
        ),
        (
            vec![
                "eval",
                "--dataset",
                "fashion-mnist",
                "--data-dir",
                d,
                "--checkpoint",
                shared_slice(),
            ],
            "test_batch_first20",
        ),
        (
            vec![
                "info",
                "--columns",
                "3",
                "--channels",
                "16,x",
                "--classes",
                "10",
            ],
            "'x'",
        ),
    ];
    for (args, needle) in cases {
        let out = bin().args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        // `--device auto` says which device it chose on a line of its own before any work
        let err: String = stderr
            .lines()
            .filter(|l| !l.starts_with("device: "))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: not one line: {stderr}"
        );
        assert!(err.starts_with("error: "), "{args:?}: {stderr}");
        assert!(err.contains(needle), "{args:?}: {err} lacks {needle}");
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

fn shared_slice() -> &'static str {
    let p = shared_data::shared_data().join("cifar10-sample/test_batch_first20.bin");
    Box::leak(p.to_string_lossy().into_owned().into_boxed_str())
}
