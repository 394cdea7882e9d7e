//! Exact resume: a run SIGKILLed at random moments (and once interrupted with Ctrl-C) and
//! resumed each time ends with a checkpoint whose tensors are bit-identical to an
//! uninterrupted run's, and the same metrics; no checkpoint on disk is ever unreadable.

mod shared_data;
use fractalnet::checkpoint;
use fractalnet::rng::SeededRng;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn data_dir(tmp: &Path) -> PathBuf {
    let src = shared_data::shared_data().join("fashion-mnist-sample");
    let dir = tmp.join("fmnist");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        src.join("t10k-images-idx3-ubyte.gz"),
        dir.join("train-images-idx3-ubyte.gz"),
    )
    .unwrap();
    std::fs::copy(
        src.join("t10k-labels-idx1-ubyte.gz"),
        dir.join("train-labels-idx1-ubyte.gz"),
    )
    .unwrap();
    dir
}

const EPOCHS: usize = 12;

fn train_cmd(data: &Path, out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fractalnet"));
    c.args([
        "train",
        "--dataset",
        "fashion-mnist",
        "--columns",
        "3",
        "--channels",
        "4,8",
        "--epochs",
        &EPOCHS.to_string(),
        "--batch-size",
        "20",
        "--val",
        "60",
        "--bn-calib",
        "60",
        "--seed",
        "3",
        "--dropout",
        "0,0.2",
        "--augment",
        "reflect",
        "--threads",
        "2",
    ]);
    c.arg("--data-dir").arg(data).arg("--out").arg(out);
    c.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    c
}

fn resume_cmd(out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fractalnet"));
    c.args(["train", "--resume"]).arg(out);
    c.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    c
}

/// Every checkpoint-like file in the run dir must open and validate at any moment.
fn check_readable(out: &Path) {
    for name in [
        "checkpoint.safetensors",
        "model.safetensors",
        "best.safetensors",
    ] {
        let p = out.join(name);
        if p.exists() {
            checkpoint::read(&p).unwrap_or_else(|e| panic!("{name} unreadable after a kill: {e}"));
        }
    }
}

fn kill_after(mut child: Child, after: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < after {
        if child.try_wait().unwrap().is_some() {
            return false; // finished first
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    true
}

fn metrics(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove("seconds");
            o.remove("images_per_s");
            v
        })
        .collect()
}

#[test]
fn killed_and_resumed_runs_end_bit_identical() {
    let tmp = std::env::temp_dir().join(format!("fractalnet-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let data = data_dir(&tmp);

    let reference = tmp.join("reference");
    // Time the reference run's start-up (up to its first checkpoint, less an epoch) apart
    // from its epochs: on a fast machine the start-up is most of a 12-epoch run, and kills
    // timed from the whole run's length all landed before the first checkpoint.
    let t0 = Instant::now();
    let mut child = train_cmd(&data, &reference).spawn().unwrap();
    let mut first_ckpt = None;
    let status = loop {
        if first_ckpt.is_none() && reference.join("checkpoint.safetensors").exists() {
            first_ckpt = Some(t0.elapsed());
        }
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    assert!(status.success());
    let full = t0.elapsed();
    let first = first_ckpt.unwrap_or(full);
    let epoch = full.saturating_sub(first) / (EPOCHS as u32 - 1);
    let startup = first.saturating_sub(epoch);
    // a moment `epochs` epochs into a (re)started run
    let into = |epochs: f64| startup + epoch.mul_f64(epochs);

    let run = tmp.join("killed");
    let mut rng = SeededRng::new(2024);
    let mut kills = 0;
    let mut first_run = true;
    let mut attempts = 0;
    let mut from_checkpoint = 0;
    // a start-up slower than the reference's moves the kills later (start-up varies with
    // the host's load more than an epoch does)
    let mut slack = Duration::ZERO;
    let mut scale = 1.0f64;
    while (kills < 5 || from_checkpoint < 2) && attempts < 50 {
        attempts += 1;
        let resuming = !first_run && run.join("config.json").exists();
        if run.join("checkpoint.safetensors").exists() {
            from_checkpoint += 1;
        }
        let cmd = if resuming {
            resume_cmd(&run)
        } else {
            train_cmd(&data, &run)
        };
        first_run = false;
        // within about two epochs' time of the (re)start: mid-epoch, in calibration or
        // validation, or while a checkpoint is being written
        let at = (into(0.2 + 1.6 * rng.uniform_f64()) + slack).mul_f64(scale);
        if kill_after(
            {
                let mut c = cmd;
                c.spawn().unwrap()
            },
            at,
        ) {
            kills += 1;
            if !run.join("checkpoint.safetensors").exists() {
                slack += epoch.max(Duration::from_millis(20));
            }
        } else {
            // the run finished first: the host got faster than during the reference run;
            // start over with earlier kills
            let _ = std::fs::remove_dir_all(&run);
            (first_run, kills, from_checkpoint, slack) = (true, 0, 0, Duration::ZERO);
            scale *= 0.5;
        }
        check_readable(&run);
    }
    assert!(
        kills >= 5,
        "the run kept finishing before the kill ({kills} kills)"
    );
    assert!(
        from_checkpoint >= 2,
        "only {from_checkpoint} kills landed after a checkpoint existed"
    );
    // Ctrl-C: the run saves a checkpoint in the middle of an epoch and exits with 130
    let mut mid_epoch = false;
    let ckpt = run.join("checkpoint.safetensors");
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    for _ in 0..8 {
        // signal a moment after the resumed run has written its next end-of-epoch
        // checkpoint: inside the following epoch, whatever the start-up took
        let before = mtime(&ckpt);
        let mut child = resume_cmd(&run).spawn().unwrap();
        while mtime(&ckpt) == before && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(epoch.mul_f64(0.2 + 0.5 * rng.uniform_f64()));
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let st = child.wait().unwrap();
        check_readable(&run);
        if st.code() == Some(130) {
            let raw = checkpoint::read(&run.join("checkpoint.safetensors")).unwrap();
            let state = checkpoint::metadata_json(&raw, "fractalnet_train").unwrap();
            if state["state"]["step_in_epoch"].as_u64().unwrap() > 0 {
                mid_epoch = true;
                break;
            }
        } else {
            assert!(st.success(), "Ctrl-C exit {st:?}");
        }
    }
    assert!(mid_epoch, "no Ctrl-C landed in the middle of an epoch");
    // finish
    assert!(resume_cmd(&run).status().unwrap().success());

    let a = checkpoint::read(&reference.join("checkpoint.safetensors")).unwrap();
    let b = checkpoint::read(&run.join("checkpoint.safetensors")).unwrap();
    assert_eq!(a.tensors.len(), b.tensors.len());
    for (name, (shape, va)) in &a.tensors {
        let (sb, vb) = &b.tensors[name];
        assert_eq!(shape, sb, "{name}");
        let bits_a: Vec<u32> = va.iter().map(|v| v.to_bits()).collect();
        let bits_b: Vec<u32> = vb.iter().map(|v| v.to_bits()).collect();
        assert!(bits_a == bits_b, "{name} differs after kill/resume");
    }
    assert_eq!(metrics(&reference), metrics(&run));
    let ma = checkpoint::read(&reference.join("model.safetensors")).unwrap();
    let mb = checkpoint::read(&run.join("model.safetensors")).unwrap();
    assert_eq!(ma.tensors, mb.tensors);
    let _ = std::fs::remove_dir_all(&tmp);
}
