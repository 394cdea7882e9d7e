"""Times this engine against PyTorch and ONNX Runtime on the same configurations, in one run,
alternating the engines round by round (the shared machine's speed drifts), and prints a table
of ratios. Run it through tools/compare-pytorch/run, which prepares the venv; see `run --help`.

Progress goes to stderr; the table (or with --json the results object) to stdout; the results
are also written to target/compare-pytorch/results.json.
"""

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
SMALL = "16,32,64,128,128"
WIDE = "64,128,256,512,512"
CLASSES = 10
SECTIONS = {"train": ["1", "2", "3", "4"], "infer": ["5", "6"], "gemm": ["7"], "memory": ["8"]}

# Training configurations (input 3x32x32, 10 classes, B = 5). target: this engine's img/s over
# PyTorch's at least this much (None: report only).
TRAIN = [
    {"id": "1", "columns": 3, "channels": SMALL, "batch": 50, "drop": "mix", "target": 1.5},
    {"id": "2", "columns": 4, "channels": SMALL, "batch": 50, "drop": "mix", "target": 1.5},
    {"id": "3", "columns": 3, "channels": SMALL, "batch": 50, "drop": "none", "target": None,
     "layouts": ["nchw", "channels_last"]},
    {"id": "4", "columns": 3, "channels": WIDE, "batch": 100, "drop": "none", "target": 1.2,
     "wide": True},
]
# Memory (configs 1 and 4, every path: the largest sub-network the mix samples).
MEMORY = [
    {"id": "8a", "columns": 3, "channels": SMALL, "batch": 50, "of": "1"},
    {"id": "8b", "columns": 3, "channels": WIDE, "batch": 100, "of": "4"},
]

PROFILES = {
    #          rounds, train steps/warm-up (small), (wide), batch-1 runs, batch-100 runs, mm reps
    "full": {"rounds": 3, "steps": 20, "warmup": 2, "wide_steps": 3, "wide_warmup": 1,
             "b1_runs": 300, "b1_warmup": 30, "b100_runs": 20, "b100_warmup": 3, "mm_reps": 20},
    "quick": {"rounds": 2, "steps": 3, "warmup": 1, "wide_steps": 1, "wide_warmup": 1,
              "b1_runs": 40, "b1_warmup": 10, "b100_runs": 3, "b100_warmup": 1, "mm_reps": 5},
}


class ToolError(Exception):
    """A failure with a one-line explanation."""


T0 = time.time()


def log(msg):
    print(f"[compare-pytorch {time.time() - T0:5.0f}s] {msg}", file=sys.stderr, flush=True)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def mib(b):
    return b / (1 << 20)


def last_line(text):
    lines = [l for l in text.strip().splitlines() if l.strip()]
    return lines[-1] if lines else ""


# ---------------------------------------------------------------------------------------------
# This engine


class Engine:
    def __init__(self, root, threads):
        self.root = root
        self.threads = threads
        self.bin = root / "target" / "release" / "fractalnet"
        self.extract_bin = root / "target" / "release" / "extract-column"
        for b in (self.bin, self.extract_bin):
            if not os.access(b, os.X_OK):
                raise ToolError(f"{b} is missing: run `cargo build --release` (or pass --build)")

    def run(self, argv, what):
        p = subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=self.root)
        if p.returncode != 0:
            raise ToolError(f"{what} failed (exit {p.returncode}): "
                            f"{last_line(p.stderr) or last_line(p.stdout)}")
        return p.stdout

    def bench(self, mode, batch, steps, warmup, columns=3, channels=SMALL, drop="none",
              checkpoint=None, column=None):
        argv = [self.bin, "bench", "--json", "--device", "cpu", "--threads", self.threads,
                "--mode", mode, "--batch-size", batch, "--steps", steps, "--warmup", warmup]
        if checkpoint is not None:
            argv += ["--checkpoint", checkpoint]
        else:
            argv += ["--columns", columns, "--channels", channels, "--classes", CLASSES]
        if mode == "train":
            argv += ["--drop-path", drop]
        if column is not None:
            argv += ["--column", column]
        out = self.run(argv, "fractalnet bench")
        try:
            return json.loads(last_line(out))
        except json.JSONDecodeError as e:
            raise ToolError(f"fractalnet bench --json printed no JSON ({e})") from None

    def params(self, columns, channels):
        out = self.run([self.bin, "info", "--columns", columns, "--channels", channels,
                        "--classes", CLASSES, "--json"], "fractalnet info")
        return json.loads(last_line(out))["params"]

    def extract(self, checkpoint, column, out):
        return self.run([self.extract_bin, "--checkpoint", checkpoint, "--column", column,
                         "--out", out, "--fold-bn"], "extract-column")

    def eval_logits(self, checkpoint, data_dir, out, n):
        self.run([self.bin, "eval", "--checkpoint", checkpoint, "--dataset", "cifar10",
                  "--data-dir", data_dir, "--logits", out, "--device", "cpu",
                  "--threads", self.threads, "--batch-size", n, "--json"], "fractalnet eval")
        import numpy as np

        return np.load(out)

    def stale(self):
        """Sources newer than the release binary (a warning, not an error)."""
        built = self.bin.stat().st_mtime
        newer = [p for d in ("src", "tools/extract-column") for p in (self.root / d).rglob("*.rs")
                 if p.stat().st_mtime > built]
        return sorted(str(p.relative_to(self.root)) for p in newer)

    def cargo_bench(self, name, filt, env_extra):
        env = dict(os.environ, **env_extra)
        argv = ["cargo", "bench", "--bench", name] + (["--", filt] if filt else [])
        p = subprocess.run(argv, capture_output=True, text=True, cwd=self.root, env=env)
        if p.returncode != 0:
            err = [l for l in p.stderr.splitlines() if l.startswith("error")]
            raise ToolError(f"`{' '.join(argv)}` failed (exit {p.returncode}): "
                            f"{err[0] if err else last_line(p.stderr)}")
        return p.stdout


# ---------------------------------------------------------------------------------------------
# PyTorch training


class TorchTrainer:
    """One training configuration in PyTorch: model, SGD(momentum 0.9) with its momentum buffers
    up front, a fixed random input and labels i % classes (as `fractalnet bench`)."""

    def __init__(self, columns, channels, batch, layout, seed=0):
        import torch
        from fractalnet_torch import FractalNet

        torch.manual_seed(seed)
        self.fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        self.model = FractalNet(columns, [int(c) for c in channels.split(",")], 3, CLASSES)
        self.model = self.model.to(memory_format=self.fmt).train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9,
                                   weight_decay=0.0)
        for p in self.model.parameters():
            self.opt.state[p]["momentum_buffer"] = torch.zeros_like(p)
        self.x = torch.randn(batch, 3, 32, 32).to(memory_format=self.fmt)
        self.y = torch.arange(batch) % CLASSES
        self.batch = batch

    def step(self, keep):
        import torch.nn.functional as F

        self.opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model(self.x, keep), self.y)
        loss.backward()
        self.opt.step()
        return loss.item()

    def run(self, masks):
        """Times one step per mask; returns (images/s over the whole run, per-step ms)."""
        times = []
        start = time.perf_counter()
        for keep in masks:
            t = time.perf_counter()
            self.step(keep)
            times.append((time.perf_counter() - t) * 1e3)
        secs = time.perf_counter() - start
        return len(masks) * self.batch / secs, times


# ---------------------------------------------------------------------------------------------
# Results


class Results:
    def __init__(self):
        self.rows, self.checks, self.errors, self.notes, self.raw = [], [], [], [], {}

    def row(self, id, name, ours, ref, unit, ref_name, higher_better=True, target=None,
            paired=None, note=None):
        ratio = ours / ref if ours and ref else None
        met = None
        if target is not None and ratio is not None:
            met = ratio >= target if higher_better else ratio <= target
        self.rows.append({
            "id": id, "configuration": name, "ours": ours, "reference": ref, "unit": unit,
            "reference_engine": ref_name, "ratio": ratio,
            "target": None if target is None else (">=" if higher_better else "<=") + f" {target}",
            "met": met, "paired_ratios": paired, "note": note,
        })

    def error(self, id, what, e):
        log(f"{what}: {e}")
        self.errors.append({"id": id, "what": what, "error": str(e)})

    def check(self, name, ok, detail):
        log(f"check {name}: {'ok' if ok else 'FAILED'} ({detail})")
        self.checks.append({"check": name, "ok": ok, "detail": detail})


def fmt_value(v, unit):
    if v is None:
        return "-"
    if unit == "ms":
        return f"{v:.3f} ms"
    if unit == "MiB":
        return f"{v:.1f} MiB"
    return f"{v:.1f} {unit}"


def print_table(res, header, footer):
    cols = ["#", "configuration", "this engine", "reference", "ratio", "target", "met?",
            "rounds (paired ratios)"]
    lines = []
    for r in res.rows:
        paired = r["paired_ratios"]
        lines.append([
            r["id"], r["configuration"],
            r["note"] if r["ours"] is None and r["note"] else fmt_value(r["ours"], r["unit"]),
            "-" if r["reference"] is None else
            f"{fmt_value(r['reference'], r['unit'])} {r['reference_engine']}",
            "-" if r["ratio"] is None else f"{r['ratio']:.2f}x",
            "-" if r["target"] is None else r["target"] + "x",
            {True: "yes", False: "NO", None: "-"}[r["met"]],
            "-" if not paired else f"{min(paired):.2f}..{max(paired):.2f} ({len(paired)})",
        ])
    widths = [max(len(str(x)) for x in col) for col in zip(cols, *lines)]
    out = list(header) + [""]
    out.append("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    out.append("  ".join("-" * w for w in widths))
    for l in lines:
        out.append("  ".join(str(c).ljust(w) for c, w in zip(l, widths)))
    if res.checks:
        out.append("")
        for c in res.checks:
            out.append(f"check  {'ok    ' if c['ok'] else 'FAILED'} {c['check']}: {c['detail']}")
    for e in res.errors:
        out.append(f"error  {e['id']} {e['what']}: {e['error']}")
    out += [""] + list(footer)
    print("\n".join(l.rstrip() for l in out))


# ---------------------------------------------------------------------------------------------
# Sections


def section_train(a, prof, eng, res, ids):
    from fractalnet_torch import FractalNet, parse_mask, python_masks

    checked = set()
    for cfg in TRAIN:
        if cfg["id"] not in ids:
            continue
        wide = cfg.get("wide", False)
        steps = prof["wide_steps"] if wide else prof["steps"]
        warmup = prof["wide_warmup"] if wide else prof["warmup"]
        layouts = cfg.get("layouts", [a.torch_layout])
        name = (f"train C={cfg['columns']} ch {cfg['channels']} b{cfg['batch']} "
                f"{'drop-path mix' if cfg['drop'] == 'mix' else 'all paths'}")
        log(f"config {cfg['id']}: {name}, {prof['rounds']} rounds of {steps} steps")
        try:
            arch = (cfg["columns"], cfg["channels"])
            if arch not in checked:
                checked.add(arch)
                tp = FractalNet(cfg["columns"], [int(c) for c in cfg["channels"].split(",")], 3,
                                CLASSES).param_count()
                ep = eng.params(cfg["columns"], cfg["channels"])
                res.check(f"parameters C={cfg['columns']} ch {cfg['channels']}", tp == ep,
                          f"PyTorch {tp:,}, engine (fractalnet info) {ep:,}")
            ours, theirs, trainers, note = [], {l: [] for l in layouts}, {}, None
            raw = {"ours": [], "torch": {l: [] for l in layouts}}
            for r in range(prof["rounds"]):
                o = eng.bench("train", cfg["batch"], steps, warmup, cfg["columns"],
                              cfg["channels"], cfg["drop"])
                ours.append(o["images_per_s"])
                raw["ours"].append({k: o.get(k) for k in
                                    ("images_per_s", "ms_per_step", "gflops", "step_ms")})
                if cfg["drop"] == "mix":
                    if "masks" in o:  # replay exactly the engine's sub-networks
                        masks = [parse_mask(s, o["mask_shape"]) for s in o["masks"]]
                    else:  # an older engine: the same mix, but other samples
                        masks = python_masks(len(cfg["channels"].split(",")), cfg["columns"],
                                             steps, seed=r)
                        note = "PyTorch sampled its own masks (the engine printed none)"
                else:
                    masks = [None] * steps
                for layout in layouts:
                    if layout not in trainers:
                        t = trainers[layout] = TorchTrainer(cfg["columns"], cfg["channels"],
                                                            cfg["batch"], layout)
                        t.run([None] + masks[:max(warmup - 1, 0)])  # warm-up, untimed
                    ips, times = trainers[layout].run(masks)
                    theirs[layout].append(ips)
                    raw["torch"][layout].append({"images_per_s": ips, "step_ms": times})
                log(f"  round {r + 1}: ours {ours[-1]:.1f} img/s, " + ", ".join(
                    f"PyTorch {l} {theirs[l][-1]:.1f}" for l in layouts))
            del trainers
            res.raw[f"train{cfg['id']}"] = raw
            best = max(layouts, key=lambda l: median(theirs[l]))
            for l in layouts:
                is_ref = l == best
                sub = "" if len(layouts) == 1 else ("a" if l == "nchw" else "b")
                res.row(cfg["id"] + sub, name + ("" if len(layouts) == 1 else
                                                 f" vs {l}{' (the reference)' if is_ref else ''}"),
                        median(ours), median(theirs[l]), "img/s", f"(PyTorch {l})",
                        target=cfg["target"],
                        paired=[o / t for o, t in zip(ours, theirs[l])],
                        note=("reference: the faster layout" if is_ref and len(layouts) > 1
                              else note))
        except ToolError as e:
            res.error(cfg["id"], name, e)


def write_cifar10(path, pixels_u8, labels):
    """A CIFAR-10 binary file: per record 1 label byte + 3072 pixel bytes (CHW)."""
    import numpy as np

    n = pixels_u8.shape[0]
    rec = np.concatenate([labels.astype(np.uint8).reshape(n, 1),
                          pixels_u8.reshape(n, 3072)], axis=1)
    path.write_bytes(rec.tobytes())


def export_onnx(module, path, example):
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kwargs = {"dynamo": False}
        try:
            torch.onnx.export(module, (example,), str(path), opset_version=17,
                              input_names=["x"], output_names=["logits"],
                              dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, **kwargs)
        except TypeError:  # a torch without the `dynamo` argument
            torch.onnx.export(module, (example,), str(path), opset_version=17,
                              input_names=["x"], output_names=["logits"],
                              dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    import onnx

    onnx.checker.check_model(onnx.load(str(path)))


def ort_session(path, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_time(sess, x, runs, warmup):
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(warmup):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t) * 1e3)
    return times


def compare_logits(res, name, ours, ref):
    import numpy as np

    ok_shape = ours.shape == ref.shape
    if not ok_shape:
        res.check(name, False, f"shapes {ours.shape} vs {ref.shape}")
        return
    diff = float(np.abs(ours - ref).max())
    scale = float(np.abs(ref).max())
    rel = diff / max(scale, 1e-6)
    same_argmax = int((ours.argmax(1) == ref.argmax(1)).sum())
    res.check(name, rel < 1e-3 and scale > 1e-3,
              f"max |diff| {diff:.2e} (relative {rel:.1e} of max |logit| {scale:.2f}), "
              f"argmax agrees on {same_argmax}/{len(ref)}")


def section_infer(a, prof, eng, res, ids, work):
    import numpy as np
    import torch
    from fractalnet_torch import FractalNet, folded_column

    threads = int(a.threads)
    name_col = "eval deepest column C=3 ch 16..128, BN folded"
    try:
        torch.manual_seed(1)
        model = FractalNet(3, [int(c) for c in SMALL.split(",")], 3, CLASSES)
        model.randomise_bn(batches=4, batch_size=50)
        model.eval()
        full_st, col_st = work / "full.safetensors", work / "column2-folded.safetensors"
        model.save_spec(full_st)
        log(f"wrote {full_st.relative_to(a.root)} (random weights, SPEC names and metadata)")
        out = eng.extract(full_st, 2, col_st)
        res.check("extract-column --fold-bn accepted the PyTorch-written file", True,
                  out.strip().splitlines()[0] if out.strip() else "ok")
        seq = folded_column(model)
        full_onnx, col_onnx = work / "full.onnx", work / "column2-folded.onnx"
        export_onnx(seq, col_onnx, torch.zeros(1, 3, 32, 32))
        export_onnx(model, full_onnx, torch.zeros(1, 3, 32, 32))
        col_sess, full_sess = ort_session(col_onnx, threads), ort_session(full_onnx, threads)

        # Logits: the engine (eval on a CIFAR-10-format file, mean 0 / std 1 preprocessing)
        # against PyTorch and ONNX Runtime on the same pixels / 255.
        n = 16
        rng = np.random.default_rng(0)
        pix = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        data = work / "cifar10-check"
        data.mkdir(exist_ok=True)
        write_cifar10(data / "test_batch.bin", pix, rng.integers(0, 10, size=n))
        x = (pix.astype(np.float32) / np.float32(255.0))
        with torch.no_grad():
            torch_full = model(torch.from_numpy(x)).numpy()
        ort_col = col_sess.run(None, {"x": x})[0]
        ort_full = full_sess.run(None, {"x": x})[0]
        compare_logits(res, "logits, full network: engine vs PyTorch",
                       eng.eval_logits(full_st, data, work / "full-logits.npy", n), torch_full)
        compare_logits(res, "logits, folded column 2: engine vs ONNX Runtime",
                       eng.eval_logits(col_st, data, work / "column-logits.npy", n), ort_col)
        compare_logits(res, "logits, full network: ONNX Runtime vs PyTorch", ort_full, torch_full)
    except ToolError as e:
        res.error("5-6", "inference set-up", e)
        return

    cases = []
    if "5" in ids:
        cases.append(("5", f"{name_col}, batch 1 latency", col_st, col_sess, 1, True))
    if "6" in ids:
        cases.append(("6", f"{name_col}, batch 100", col_st, col_sess, 100, False))
        cases.append(("6b", "eval full network C=3 ch 16..128, batch 100 (reference)",
                      full_st, full_sess, 100, False))
    for id, name, st, sess, batch, latency in cases:
        runs, warm = ((prof["b1_runs"], prof["b1_warmup"]) if latency
                      else (prof["b100_runs"], prof["b100_warmup"]))
        log(f"config {id}: {name}, {prof['rounds']} rounds of {runs} runs")
        try:
            ours, theirs, raw = [], [], {"ours": [], "ort": []}
            xb = np.random.default_rng(2).random((batch, 3, 32, 32), dtype=np.float32)
            for r in range(prof["rounds"]):
                o = eng.bench("eval", batch, runs, warm, checkpoint=st,
                              column=2 if st == col_st else None)
                t = ort_time(sess, xb, runs, warm)
                if latency:
                    ours.append(median(o["step_ms"]))
                    theirs.append(median(t))
                else:
                    ours.append(o["images_per_s"])
                    theirs.append(runs * batch / (sum(t) / 1e3))
                raw["ours"].append(o["step_ms"])
                raw["ort"].append(t)
                log(f"  round {r + 1}: ours {ours[-1]:.3f}, ONNX Runtime {theirs[-1]:.3f} "
                    f"{'ms (median)' if latency else 'img/s'}")
            res.raw[f"infer{id}"] = raw
            res.row(id, name, median(ours), median(theirs), "ms" if latency else "img/s",
                    "(ONNX Runtime)", higher_better=not latency,
                    target=(0.8 if latency else 1.2) if id != "6b" else None,
                    paired=[o / t for o, t in zip(ours, theirs)])
        except ToolError as e:
            res.error(id, name, e)


def read_peak(text, kernel, threads):
    """The practical peak printed by `cargo bench --bench peak` for `kernel` on `threads`."""
    found = {(m.group(1), int(m.group(2))): float(m.group(3)) for m in
             re.finditer(r"peak/(\S+)/(\d+)t:\s+([\d.]+) GFLOP/s", text)}
    if not found:
        raise ToolError("`cargo bench --bench peak` printed no peak/... lines")
    mine = {t: g for (k, t), g in found.items() if k == kernel}
    if not mine:
        raise ToolError(f"`cargo bench --bench peak` has no {kernel} line (this CPU lacks it?)")
    t = threads if threads in mine else max(mine)
    return mine[t], t, found


def section_gemm(a, prof, eng, res, work):
    import torch

    name = "SGEMM 1024^3 (sgemm_par)"
    threads = int(a.threads)
    flops = 2 * 1024 ** 3
    try:
        # The engine's GEMM kernel ISA decides which practical peak it is read against.
        gemm_src = " ".join(p.read_text() for p in (a.root / "src/ops/gemm").rglob("*.rs"))
        kernel = "fma16_avx512" if re.search(r'target_feature\(enable\s*=\s*"[^"]*avx512f',
                                             gemm_src) else "fma8_avx2"
        log("measuring the practical peak: cargo bench --bench peak (builds it on first use)")
        peak_out = eng.cargo_bench("peak", None, {})
        peak, peak_t, all_peaks = read_peak(peak_out, kernel, threads)
        res.raw["peak"] = {f"{k}/{t}t": g for (k, t), g in all_peaks.items()}
        crit_home = work / "criterion"  # private: leaves target/criterion (baselines) alone
        # criterion turns the group name cpu/sgemm_par into the directory cpu_sgemm_par
        est = crit_home / "cpu_sgemm_par" / "1024" / "new" / "estimates.json"
        a_ = torch.randn(1024, 1024)
        b_ = torch.randn(1024, 1024)
        c_ = torch.empty(1024, 1024)
        ours, ours_best, theirs = [], [], []
        for r in range(prof["rounds"]):
            start = time.time()
            eng.cargo_bench("ops", "cpu/sgemm_par/1024$",
                            {"RAYON_NUM_THREADS": str(threads), "CRITERION_HOME": str(crit_home)})
            if not est.exists() or est.stat().st_mtime < start - 1:
                raise ToolError(f"criterion wrote no fresh {est}")
            ns = json.loads(est.read_text())["mean"]["point_estimate"]
            ours.append(flops / ns)
            # The fastest sample, to read against the peak (itself a best-of figure).
            smp = json.loads((est.parent / "sample.json").read_text())
            ours_best.append(max(flops * i / t for i, t in zip(smp["iters"], smp["times"])))
            for _ in range(3):
                torch.mm(a_, b_, out=c_)
            times = []
            for _ in range(prof["mm_reps"]):
                t = time.perf_counter()
                torch.mm(a_, b_, out=c_)
                times.append(time.perf_counter() - t)
            theirs.append(flops / median(times) / 1e9)
            log(f"  round {r + 1}: ours {ours[-1]:.1f} GFLOP/s, torch.mm {theirs[-1]:.1f} GFLOP/s")
        res.raw["gemm"] = {"ours_gflops": ours, "ours_best_sample_gflops": ours_best,
                           "torch_mm_gflops": theirs}
        res.row("7a", f"{name} vs practical peak", median(ours), peak, "GFLOP/s",
                f"(peak {kernel}/{peak_t}t)", target=0.85)
        res.row("7a'", "  same, criterion's fastest sample (the peak is a best-of too)",
                max(ours_best), peak, "GFLOP/s", f"(peak {kernel}/{peak_t}t)", target=0.85)
        res.row("7b", f"{name} vs torch.mm", median(ours), median(theirs), "GFLOP/s",
                "(torch.mm)", paired=[o / t for o, t in zip(ours, theirs)])
        res.notes.append("peaks (cargo bench --bench peak): " + ", ".join(
            f"{k}/{t}t {g:.1f}" for (k, t), g in sorted(all_peaks.items())) + " GFLOP/s")
    except ToolError as e:
        res.error("7", name, e)


def section_memory(a, prof, eng, res):
    for m in MEMORY:
        name = f"memory, train step C={m['columns']} ch {m['channels']} b{m['batch']} all paths"
        log(f"config {m['id']}: {name}")
        try:
            argv = [sys.executable, str(HERE / "torch_memory.py"), "--columns", str(m["columns"]),
                    "--channels", m["channels"], "--batch-size", str(m["batch"]),
                    "--threads", a.threads]
            if a.torch_layout == "channels_last":
                argv.append("--channels-last")
            raw = {"ours_first_step": [], "ours_later_step": [], "torch": []}
            ours, theirs = [], []
            for r in range(prof["rounds"]):  # a fresh process each time, for both
                first = eng.bench("train", m["batch"], 1, 0, m["columns"], m["channels"], "none")
                if "peak_rss_bytes" not in first:
                    raise ToolError("fractalnet bench --json has no peak_rss_bytes (not Linux, "
                                    "or an engine without it: rebuild)")
                p = subprocess.run(argv, capture_output=True, text=True)
                if p.returncode != 0:
                    raise ToolError(f"torch_memory.py failed: {last_line(p.stderr)}")
                t = json.loads(last_line(p.stdout))
                ours.append(first["peak_rss_bytes"] - first["rss_before_steps_bytes"])
                theirs.append(t["peak_step_rss_bytes"])
                raw["ours_first_step"].append(first)
                raw["torch"].append(t)
                log(f"  round {r + 1}: ours {mib(ours[-1]):.1f} MiB, PyTorch "
                    f"{mib(theirs[-1]):.1f} MiB")
            later = eng.bench("train", m["batch"], 1, 1, m["columns"], m["channels"], "none")
            raw["ours_later_step"].append(later)
            res.raw[f"memory{m['id']}"] = raw
            res.row(m["id"], name + " (RSS, 1 step)", mib(median(ours)), mib(median(theirs)),
                    "MiB", f"(PyTorch {a.torch_layout})", higher_better=False, target=1.0,
                    paired=[o / t for o, t in zip(ours, theirs)])
            firsts = [f["peak_step_bytes"] for f in raw["ours_first_step"]]
            res.row(m["id"] + "'", "  same, engine's counting allocator: first / later step",
                    None, None, "MiB", "", note=f"{mib(median(firsts)):.1f} / "
                    f"{mib(later['peak_step_bytes']):.1f} MiB")
            files = median([t["rss_file_growth_bytes"] for t in raw["torch"]])
            res.notes.append(f"{m['id']}: PyTorch's RSS figure includes {mib(files):.1f} MiB of "
                             "file-backed pages (library code) first touched by the step.")
        except ToolError as e:
            res.error(m["id"], name, e)


# ---------------------------------------------------------------------------------------------


def machine():
    info = {"cpu": "unknown", "flags": {}, "logical_cpus": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        info["cpu"] = m.group(1).strip() if m else "unknown"
        flags = set((re.search(r"^flags\s*:\s*(.+)$", text, re.M) or [None, ""])[1].split())
        info["flags"] = {f: f in flags for f in ("avx2", "fma", "avx512f")}
    except OSError:
        pass
    try:
        info["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        pass
    return info


def git_rev(root):
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=root).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, cwd=root).stdout.strip()
        return rev + (" + uncommitted changes" if dirty else "")
    except OSError:
        return "unknown"


def parse_args():
    ap = argparse.ArgumentParser(
        prog="tools/compare-pytorch/run",
        description="Time this engine against PyTorch / ONNX Runtime on the same FractalNet "
                    "configurations (alternating, in one run) and print a table of ratios.")
    ap.add_argument("--quick", action="store_true", help="few steps and rounds (a smoke test)")
    ap.add_argument("--only", default="train,infer,gemm,memory",
                    help="comma list of sections (train, infer, gemm, memory) and/or "
                         "configuration numbers 1-8 (default: everything)")
    ap.add_argument("--rounds", type=int, help="alternating rounds (default 3; --quick 2)")
    ap.add_argument("--steps", type=int, help="timed training steps per round for the "
                                              "16..128 configurations (default 20; --quick 3)")
    ap.add_argument("--threads", default="2", help="threads for every engine (default 2)")
    ap.add_argument("--torch-layout", choices=["nchw", "channels_last"], default="nchw",
                    help="PyTorch memory format for configurations 1, 2, 4 and memory "
                         "(configuration 3 always times both)")
    ap.add_argument("--omp-wait-policy", choices=["passive", "active", "default"],
                    default="passive",
                    help="OMP_WAIT_POLICY for PyTorch (default passive: on a busy machine "
                         "OpenMP's spinning threads wait on preempted ones and a 2-thread "
                         "training step can take 10x longer; `default` leaves it unset)")
    ap.add_argument("--json", action="store_true",
                    help="print the results as JSON instead of the table")
    ap.add_argument("--out", help="results file (default target/compare-pytorch/results.json)")
    ap.add_argument("--root", default=str(HERE.parent.parent), help=argparse.SUPPRESS)
    ap.add_argument("--install", action="store_true",
                    help="(re)install torch, onnxruntime, onnx, numpy, safetensors into .venv "
                         "first (handled by the run script)")
    ap.add_argument("--build", action="store_true",
                    help="cargo build --release first (handled by the run script)")
    a = ap.parse_args()
    a.root = Path(a.root).resolve()
    return a


def main():
    a = parse_args()
    ids = set()
    for part in (p.strip() for p in a.only.split(",") if p.strip()):
        if part in SECTIONS:
            ids.update(SECTIONS[part])
        elif part in {i for v in SECTIONS.values() for i in v}:
            ids.add(part)
        else:
            print(f"compare-pytorch: --only {part}: expected train, infer, gemm, memory or 1-8",
                  file=sys.stderr)
            return 2
    prof = dict(PROFILES["quick" if a.quick else "full"])
    if a.rounds:
        prof["rounds"] = a.rounds
    if a.steps:
        prof["steps"] = a.steps
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[k] = a.threads
    if a.omp_wait_policy != "default":  # before torch is imported (and for torch_memory.py)
        os.environ["OMP_WAIT_POLICY"] = a.omp_wait_policy.upper()
    sys.path.insert(0, str(HERE))
    try:
        import numpy  # noqa: F401
        import onnx  # noqa: F401
        import onnxruntime
        import safetensors  # noqa: F401
        import torch
    except ImportError as e:
        print(f"compare-pytorch: {e.name} is not installed in {sys.prefix} "
              f"(run tools/compare-pytorch/run --install)", file=sys.stderr)
        return 2
    torch.set_num_threads(int(a.threads))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    try:
        eng = Engine(a.root, a.threads)
    except ToolError as e:
        print(f"compare-pytorch: {e}", file=sys.stderr)
        return 2
    work = a.root / "target" / "compare-pytorch"
    work.mkdir(parents=True, exist_ok=True)

    mach = machine()
    stale = eng.stale()
    built = datetime.datetime.fromtimestamp(eng.bin.stat().st_mtime).isoformat(timespec="seconds")
    fl = mach["flags"]
    header = [
        f"compare-pytorch  {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}"
        f"  ({'quick' if a.quick else 'full'}: {prof['rounds']} alternating rounds)",
        f"machine: {mach['cpu']}, {mach['logical_cpus']} logical CPUs, "
        + ", ".join(f"{f} {'yes' if fl.get(f) else 'no'}" for f in ("avx2", "fma", "avx512f"))
        + (f"; load average at start {' '.join(mach.get('loadavg', []))}" if "loadavg" in mach
           else ""),
        f"engine: target/release/fractalnet built {built}, git {git_rev(a.root)}"
        + (f"  (WARNING: {len(stale)} source files are newer, e.g. {stale[0]})" if stale else ""),
        f"reference: torch {torch.__version__}, onnxruntime {onnxruntime.__version__}; "
        f"{a.threads} threads everywhere (torch.set_num_threads, ORT intra_op_num_threads, "
        f"--threads / RAYON_NUM_THREADS); OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', '(unset)')}",
    ]
    load = float(mach.get("loadavg", ["0"])[0])
    if load > 0.5 * (mach["logical_cpus"] or 1):
        header.append(f"WARNING: the machine is busy (load {load:.2f} on {mach['logical_cpus']} "
                      f"CPUs): absolute figures and the ratios are distorted")
    for h in header:
        log(h)

    res = Results()
    t0 = time.time()
    if ids & set(SECTIONS["train"]):
        section_train(a, prof, eng, res, ids)
    if ids & set(SECTIONS["infer"]):
        section_infer(a, prof, eng, res, ids, work)
    if "7" in ids:
        section_gemm(a, prof, eng, res, work)
    if "8" in ids:
        section_memory(a, prof, eng, res)
    elapsed = time.time() - t0

    footer = [
        "ratio = this engine / reference; throughput (img/s, GFLOP/s) higher is better, latency "
        "(ms) and memory (MiB) lower is better. Each engine's figure is the median over the "
        "rounds; the last column is the range of the per-round ratios (engines alternate "
        "within each round).",
        "training: forward + backward + SGD(momentum 0.9, no weight decay, no dropout), random "
        "input, labels i % 10; drop-path mix: PyTorch replays exactly the engine's sampled masks "
        "(bench --json `masks`), computing only live layers. Steps per round: "
        f"{prof['steps']} (64..512: {prof['wide_steps']}), after warm-up.",
        "inference: PyTorch-written SPEC checkpoint -> extract-column --column 2 --fold-bn; ONNX "
        "Runtime runs torch.onnx.export of the same folded column (opset 17, ORT_ENABLE_ALL). "
        "Batch 1: median latency of "
        f"{prof['b1_runs']} runs per round.",
        "SGEMM: the engine's criterion bench cpu/sgemm_par/1024 (mean; 7a': its fastest sample; "
        "CRITERION_HOME=target/compare-pytorch/criterion) against torch.mm (median); peak: cargo "
        "bench --bench peak (best of 300 runs), for the kernel ISA found in src/ops/gemm.",
        "memory: fresh process; model, SGD momentum buffers and input allocated; VmHWM reset "
        "(/proc/self/clear_refs), VmRSS read; exactly one training step (all paths); "
        "peak = VmHWM - VmRSS-before. Same for both (fractalnet bench --warmup 0 --steps 1; "
        "tools/compare-pytorch/torch_memory.py). The allocator row: live heap bytes above those "
        "before the step (engine only).",
        "PyTorch runs with OMP_WAIT_POLICY=PASSIVE unless --omp-wait-policy says otherwise: on a "
        "busy machine spinning OpenMP threads wait on preempted ones (a 2-thread training step "
        "measured 10-20x slower); on a quiet one compare with --omp-wait-policy default.",
    ] + res.notes + [f"total time {elapsed:.0f} s; load average at the end "
                     f"{' '.join(machine().get('loadavg', []))}"]

    results = {"header": header, "machine": mach, "profile": prof, "threads": a.threads,
               "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
               "rows": res.rows, "checks": res.checks, "errors": res.errors, "notes": res.notes,
               "raw": res.raw, "elapsed_s": elapsed}
    out = Path(a.out) if a.out else work / "results.json"
    out.write_text(json.dumps(results, indent=1))
    log(f"results written to {out}")
    if a.json:
        print(json.dumps(results, indent=1))
    else:
        print_table(res, header, footer)
    failed = res.errors or any(not c["ok"] for c in res.checks)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
