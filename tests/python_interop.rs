//! Files this engine writes open in the reference Python `safetensors` package (with numpy),
//! and their names, shapes, dtypes and metadata follow shared/SPEC.md's formulas, computed in
//! Python from the `fractalnet_config` metadata alone: a full model (the paper's C = 2 CIFAR-100
//! configuration, whose parameter count SPEC states), a calibrated one with column
//! statistics, an extracted column and a folded one.
//!
//! Needs python3 with venv (or pip). The packages come from PyPI into a venv cached under
//! the target directory (`target/tmp/python-interop-venv`), so only the first run downloads.
//! No Python is a test FAILURE, not a skip: CI installs it (tools/setup).

use fractalnet::backend::{Backend, Cpu};
use fractalnet::model::Network;
use fractalnet::model::extract::{extract_column, fold_bn};
use fractalnet::model::io::{ModelMeta, save_model, save_tensors};
use fractalnet::plan::FractalConfig;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const SCRIPT: &str = r#"
import json, sys
import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

def expected(cfg, folded):
    B, C, ch = cfg["blocks"], cfg["columns"], cfg["channels"]
    H, W = cfg["input_hw"]
    K, cin0 = cfg["classes"], cfg["in_channels"]
    col = cfg.get("column")
    out = {}
    for b in range(B):
        for c in range(C):
            if col is not None and c != col:
                continue
            for l in range(2 ** c):
                cout = ch[b]
                cin = (cin0 if b == 0 else ch[b - 1]) if l == 0 else ch[b]
                p = f"block{b}.col{c}.layer{l}."
                out[p + "conv.weight"] = (cout, cin, 3, 3)
                if folded:
                    out[p + "conv.bias"] = (cout,)
                else:
                    for n in ["bn.gamma", "bn.beta", "bn.running_mean", "bn.running_var"]:
                        out[p + n] = (cout,)
    F = ch[-1] * (H // 2 ** B) * (W // 2 ** B)
    out["fc.weight"] = (K, F)
    out["fc.bias"] = (K,)
    return out

def check(path, want_params, want_column_stats):
    with safe_open(path, framework="np") as f:
        meta = f.metadata()
        names = set(f.keys())
    cfg = json.loads(meta["fractalnet_config"])
    assert cfg["format_version"] == 1, cfg
    for k in ["blocks", "columns", "channels", "in_channels", "classes", "input_hw", "dropout", "input_mean", "input_std"]:
        assert k in cfg, (path, k)
    assert len(cfg["input_mean"]) == cfg["in_channels"] == len(cfg["input_std"])
    folded = cfg.get("folded_bn", False)
    t = load_file(path)
    assert set(t) == names
    want = expected(cfg, folded)
    stats = {n for n in names if ".bn.column_" in n}
    plain = names - stats
    assert plain == set(want), (path, sorted(plain ^ set(want))[:6])
    if want_column_stats:
        # both or neither, for every layer
        assert stats == {n.replace("running_", "column_") for n in want if ".bn.running_" in n}, path
    else:
        assert not stats, (path, sorted(stats)[:3])
    for n, shape in want.items():
        assert t[n].dtype == np.float32 and t[n].shape == shape, (path, n, t[n].dtype, t[n].shape, shape)
        assert np.isfinite(t[n]).all(), (path, n)
    trainable = sum(t[n].size for n in want if not n.endswith(("running_mean", "running_var")))
    assert trainable == want_params, (path, trainable, want_params)
    return cfg, t

# SPEC: C = 2, channels 16,32,64,128,128, K = 100, in_channels 3 -> 847,716 parameters
check(sys.argv[1], 847716, False)
full_cfg, full = check(sys.argv[2], int(sys.argv[5]), True)
cfg, col = check(sys.argv[3], int(sys.argv[6]), False)
assert cfg["column"] == 1 and cfg["columns"] == full_cfg["columns"]
# an extracted column stores its own statistics as its running statistics
for n in col:
    if ".bn.running_" in n:
        assert np.array_equal(col[n], full[n.replace("running_", "column_")]), n
    else:
        assert np.array_equal(col[n], full[n]), n
cfg, folded = check(sys.argv[4], int(sys.argv[7]), False)
assert cfg["folded_bn"] is True and cfg["unit"] == "conv_bias_relu" and cfg["column"] == 1
# the folding formula of src/model/extract.rs, in numpy (float64)
for n in folded:
    if n.endswith(".conv.bias"):
        p = n[: -len("conv.bias")]
        s = full[p + "bn.gamma"].astype(np.float64) / np.sqrt(full[p + "bn.column_var"].astype(np.float64) + 1e-5)
        w = full[p + "conv.weight"].astype(np.float64) * s[:, None, None, None]
        b = full[p + "bn.beta"] - full[p + "bn.column_mean"].astype(np.float64) * s
        assert np.allclose(folded[p + "conv.weight"], w, rtol=1e-6, atol=1e-7), p
        assert np.allclose(folded[n], b, rtol=1e-6, atol=1e-6), p
print("OK")
"#;

/// A Python with safetensors and numpy: the cached venv, made on first use.
fn python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("python-interop-venv");
    let py = venv.join("bin/python");
    let ready = |py: &Path| {
        Command::new(py)
            .args(["-c", "import safetensors.numpy, numpy"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ready(&py) {
        return py;
    }
    let made = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&venv)
        .output();
    match made {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "python3 -m venv {} failed (on Debian: apt-get install python3-venv; tools/setup does): {}",
            venv.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!("python3 is needed for this test (tools/setup installs it): {e}"),
    }
    let pip = Command::new(&py)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "safetensors",
            "numpy",
        ])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", py.display()));
    assert!(
        pip.status.success(),
        "pip install safetensors numpy failed (PyPI must be reachable): {}",
        String::from_utf8_lossy(&pip.stderr).trim()
    );
    assert!(
        ready(&py),
        "safetensors and numpy still do not import in {}",
        venv.display()
    );
    py
}

#[test]
fn python_safetensors_reads_our_files_as_spec_says() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("python-interop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let b = Cpu::with_threads(2);

    let paper = FractalConfig::new(2, vec![16, 32, 64, 128, 128], 3, 100);
    let net = Network::new(&b, &paper, 1).unwrap();
    let meta = ModelMeta::new(paper, vec![0.5; 3], vec![0.25; 3]);
    let p_paper = dir.join("paper-c2.safetensors");
    save_model(&p_paper, &b, &net, &meta).unwrap();

    // C = 3 with distinct, non-trivial statistics in every BN tensor
    let mut cfg = FractalConfig::new(3, vec![4, 8], 1, 10);
    cfg.input_hw = [8, 8];
    let mut net = Network::new(&b, &cfg, 2).unwrap();
    for (i, (s, t)) in net
        .params
        .specs
        .iter()
        .zip(net.params.tensors.iter_mut())
        .enumerate()
    {
        if s.name.contains(".bn.") {
            let v: Vec<f32> = (0..s.shape.numel())
                .map(|j| 0.5 + ((i * 7 + j * 3) % 11) as f32 / 10.0)
                .collect();
            *t = b.from_host(s.shape.clone(), &v).unwrap();
        }
    }
    net.params.has_column_stats = true;
    let meta = ModelMeta::new(cfg, vec![0.3], vec![0.2]);
    let p_full = dir.join("c3.safetensors");
    save_model(&p_full, &b, &net, &meta).unwrap();
    let col = extract_column(&net, &meta, 1).unwrap();
    let p_col = dir.join("c3-col1.safetensors");
    save_tensors(&p_col, &b, &col.params, &col.meta, &BTreeMap::new(), |_| {
        true
    })
    .unwrap();
    let folded = fold_bn(&b, &col.params, &col.meta).unwrap();
    let p_folded = dir.join("c3-col1-folded.safetensors");
    save_tensors(
        &p_folded,
        &b,
        &folded.params,
        &folded.meta,
        &BTreeMap::new(),
        |_| true,
    )
    .unwrap();

    let py = python();
    let out = Command::new(&py)
        .arg("-c")
        .arg(SCRIPT)
        .args([&p_paper, &p_full, &p_col, &p_folded])
        .arg(net.params.trainable_count().to_string())
        .arg(col.params.trainable_count().to_string())
        .arg(folded.params.trainable_count().to_string())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.trim() == "OK",
        "python check failed:\n{stdout}\n{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
