"""Peak resident memory of ONE PyTorch training step, in a fresh process (run by compare.py).

The same method as `fractalnet bench --warmup 0 --steps 1 --json` (src/cli/bench.rs): build the
model, the SGD optimiser with its momentum buffers created up front, the input and the labels;
reset VmHWM to the current RSS (write 5 to /proc/self/clear_refs); read VmRSS; run exactly one
training step (forward, backward, SGD); read VmHWM. Peak = VmHWM - VmRSS-before. Prints one JSON
object.
"""

import argparse
import gc
import json
import os
import sys


def status_bytes(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {key}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--columns", type=int, required=True)
    ap.add_argument("--channels", required=True)
    ap.add_argument("--batch-size", type=int, required=True)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--channels-last", action="store_true")
    a = ap.parse_args()
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[k] = str(a.threads)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import torch
    import torch.nn.functional as F
    from fractalnet_torch import FractalNet

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    model = FractalNet(a.columns, [int(c) for c in a.channels.split(",")], 3, a.classes)
    model = model.to(memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=0.0)
    for p in model.parameters():  # momentum buffers up front (the engine allocates them in Sgd::new)
        opt.state[p]["momentum_buffer"] = torch.zeros_like(p)
    n = a.batch_size
    x = torch.randn(n, 3, 32, 32).to(memory_format=fmt)
    y = torch.arange(n) % a.classes
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    before = status_bytes("VmRSS")
    file_before = status_bytes("RssFile")
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    loss.item()
    hwm = status_bytes("VmHWM")
    # Diagnostic: file-backed pages (library code) first touched by the step count in VmHWM.
    file_growth = status_bytes("RssFile") - file_before
    print(json.dumps({"rss_before_steps_bytes": before, "peak_rss_bytes": hwm,
                      "peak_step_rss_bytes": hwm - before, "rss_file_growth_bytes": file_growth}))


if __name__ == "__main__":
    main()
