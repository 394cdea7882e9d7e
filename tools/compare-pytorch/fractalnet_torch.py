"""FractalNet in PyTorch, exactly as shared/SPEC.md defines it (the reference the engine is timed
against in tools/compare-pytorch).

- A layer is conv3x3 (pad 1, no bias) -> BatchNorm (eps 1e-5, momentum 0.1) -> ReLU (no dropout:
  the comparison trains without it).
- Block of C columns, D = 2^(C-1): column c has 2^c layers, layer l of column c ends at position
  p = (l+1) * 2^(C-1-c); joins (element-wise means, inputs summed in ascending column order) sit
  at the even positions; each column's last output is max-pooled 2x2 on its own BEFORE the
  block's final join.
- Under a drop-path keep-mask keep[b][j][c] only LIVE layers are computed: a layer whose output
  reaches no kept join input is skipped, so its parameters get no gradient (grad None: SGD skips
  them, as the engine does) and its BatchNorm statistics are not updated.
- flatten (NCHW order) -> Linear.

Also here: the paper's drop-path sampler, the SPEC checkpoint writer (safetensors), and the
deepest column as a plain nn.Sequential with BatchNorm folded (for the ONNX Runtime comparison).
"""

import json
import random

import torch
import torch.nn as nn
import torch.nn.functional as F

BN_EPS = 1e-5
BN_MOMENTUM = 0.1


class Layer(nn.Module):
    """conv3x3 (pad 1, no bias) -> BatchNorm -> ReLU."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def participants(columns, j):
    """Columns whose layer ends at join j (position p = 2(j+1)): c >= C-1-t, 2^t | p."""
    p = 2 * (j + 1)
    t = min((p & -p).bit_length() - 1, columns - 1)
    return list(range(columns - 1 - t, columns))


class Block(nn.Module):
    def __init__(self, columns, cin, cout):
        super().__init__()
        self.C = columns
        self.D = 1 << (columns - 1)
        self.cols = nn.ModuleList(
            nn.ModuleList(Layer(cin if l == 0 else cout, cout) for l in range(1 << c))
            for c in range(columns)
        )
        # ending[p]: the layers (c, l) whose output lands at position p, ascending c.
        self.ending = {p: [] for p in range(1, self.D + 1)}
        for c in range(columns):
            for l in range(1 << c):
                self.ending[(l + 1) * self.span(c)].append((c, l))

    def span(self, c):
        """S_c: rows of the deepest column one layer of column c spans."""
        return 1 << (self.C - 1 - c)

    def live_layers(self, keep):
        """The (c, l) that are computed under keep[j][c] (None: every path)."""
        if keep is None or self.C == 1:
            return {cl for p in self.ending for cl in self.ending[p]}
        live, live_state = set(), {self.D}
        for p in range(self.D, 0, -1):  # consumers sit at higher positions than producers
            if p not in live_state:
                continue
            for c, l in self.ending[p]:
                if p % 2 == 0 and not keep[p // 2 - 1][c]:
                    continue  # its input into join p/2-1 is dropped
                live.add((c, l))
                live_state.add(l * self.span(c))  # its input: the state at l*S_c (0: block input)
        return live

    def forward(self, x, keep=None):
        live = self.live_layers(keep)
        states = {0: x}
        for p in range(1, self.D + 1):
            outs = [
                self.cols[c][l](states[l * self.span(c)])
                for c, l in self.ending[p]
                if (c, l) in live
            ]
            if p == self.D:  # final join: per-column max-pool, then the mean
                return mean([F.max_pool2d(o, 2) for o in outs])
            if outs:
                states[p] = outs[0] if p % 2 == 1 else mean(outs)
        raise AssertionError("unreachable: the loop returns at p = D")


def mean(xs):
    """Sum in ascending column order, divided by the count (SPEC's join arithmetic)."""
    if not xs:
        raise ValueError("a join with no active input (the keep-mask keeps none)")
    s = xs[0]
    for v in xs[1:]:
        s = s + v
    return s if len(xs) == 1 else s / len(xs)


class FractalNet(nn.Module):
    def __init__(self, columns, channels, in_channels=3, classes=10, input_hw=(32, 32)):
        super().__init__()
        self.columns, self.channels = columns, list(channels)
        self.in_channels, self.classes, self.input_hw = in_channels, classes, tuple(input_hw)
        cins = [in_channels] + self.channels[:-1]
        self.blocks = nn.ModuleList(Block(columns, ci, co) for ci, co in zip(cins, self.channels))
        b = len(self.channels)
        features = self.channels[-1] * (input_hw[0] >> b) * (input_hw[1] >> b)
        self.fc = nn.Linear(features, classes)
        # SPEC's recipe: Xavier (Glorot uniform) conv and FC weights, gamma 1, beta 0.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
        nn.init.zeros_(self.fc.bias)

    @property
    def joins(self):
        return (1 << (self.columns - 1)) // 2

    def forward(self, x, keep=None):
        """keep: None (every path) or keep[b][j][c] booleans (shared/SPEC.md's keep-mask)."""
        for b, blk in enumerate(self.blocks):
            x = blk(x, None if keep is None else keep[b])
        return self.fc(torch.flatten(x, 1))

    def param_count(self):
        return sum(p.numel() for p in self.parameters())

    def column_mask(self, g):
        """The global drop-path mask of column g (also: column g evaluated alone)."""
        return column_mask(len(self.blocks), self.columns, g)

    def spec_tensors(self):
        """{SPEC tensor name: float32 tensor}, with the column statistics when calibrated."""
        out = {}
        for b, blk in enumerate(self.blocks):
            for c, col in enumerate(blk.cols):
                for l, layer in enumerate(col):
                    n = f"block{b}.col{c}.layer{l}"
                    out[f"{n}.conv.weight"] = layer.conv.weight
                    out[f"{n}.bn.gamma"] = layer.bn.weight
                    out[f"{n}.bn.beta"] = layer.bn.bias
                    out[f"{n}.bn.running_mean"] = layer.bn.running_mean
                    out[f"{n}.bn.running_var"] = layer.bn.running_var
                    if hasattr(layer, "column_mean"):
                        out[f"{n}.bn.column_mean"] = layer.column_mean
                        out[f"{n}.bn.column_var"] = layer.column_var
        out["fc.weight"] = self.fc.weight
        out["fc.bias"] = self.fc.bias
        return {k: v.detach().to(torch.float32).contiguous() for k, v in out.items()}

    def spec_config(self, input_mean, input_std):
        """The `fractalnet_config` metadata object (src/model/io.rs: ModelMeta)."""
        b = len(self.channels)
        return {
            "format_version": 1,
            "blocks": b,
            "columns": self.columns,
            "channels": self.channels,
            "in_channels": self.in_channels,
            "classes": self.classes,
            "input_hw": list(self.input_hw),
            "dropout": [0.0] * b,
            "input_mean": list(input_mean),
            "input_std": list(input_std),
        }

    def save_spec(self, path, input_mean=None, input_std=None):
        """Writes a SPEC model file (safetensors) the engine loads."""
        from safetensors.torch import save_file

        input_mean = input_mean or [0.0] * self.in_channels
        input_std = input_std or [1.0] * self.in_channels
        meta = {"fractalnet_config": json.dumps(self.spec_config(input_mean, input_std))}
        save_file(self.spec_tensors(), str(path), metadata=meta)

    @torch.no_grad()
    def randomise_bn(self, batches, batch_size=50, seed=0):
        """Random gamma/beta, then SPEC's calibration on random pixel/255 inputs: the running
        statistics for the full network and the column statistics (`column_mean/column_var`,
        each layer's column alone), cumulative averages over `batches` batches. Evaluation then
        keeps the signal at a sensible scale through all layers (a meaningful logit check), and
        the checkpoint exercises the column statistics too."""
        g = torch.Generator().manual_seed(seed)
        bns = [m for m in self.modules() if isinstance(m, nn.BatchNorm2d)]
        for bn in bns:
            bn.weight.copy_(torch.rand(bn.weight.shape, generator=g) + 0.5)
            bn.bias.copy_((torch.rand(bn.bias.shape, generator=g) - 0.5) * 0.4)
        xs = [torch.randint(0, 256, (batch_size, self.in_channels, *self.input_hw), generator=g)
              .to(torch.float32) / 255.0 for _ in range(batches)]
        was = self.training
        self.train()

        def calibrate(keep):
            for bn in bns:
                bn.reset_running_stats()
                bn.momentum = None  # cumulative average
            for x in xs:
                self(x, keep)
            for bn in bns:
                bn.momentum = BN_MOMENTUM

        for c in range(self.columns):
            calibrate(self.column_mask(c))
            for blk in self.blocks:
                for layer in blk.cols[c]:
                    layer.column_mean = layer.bn.running_mean.clone()
                    layer.column_var = layer.bn.running_var.clone()
        calibrate(None)
        self.train(was)


def column_mask(blocks, columns, g):
    """keep[b][j][c] of the global drop-path sample g: only column g, in every block."""
    joins = (1 << (columns - 1)) // 2
    return [[[c == g for c in range(columns)] for _ in range(joins)] for _ in range(blocks)]


def sample_paper_mix(blocks, columns, rng, global_ratio=0.5, p_local=0.15):
    """One drop-path sample of the paper's mix (SPEC): with probability global_ratio one column
    for the whole net, else every join input dropped with p_local, at least one kept per join.
    (The comparison replays the engine's own samples; this is the fallback.)"""
    C = columns
    if C == 1:
        return None
    if rng.random() < global_ratio:
        return column_mask(blocks, C, rng.randrange(C))
    keep = []
    for _ in range(blocks):
        block = []
        for j in range((1 << (C - 1)) // 2):
            row = [True] * C  # entries of non-participating columns are ignored
            parts = participants(C, j)
            for c in parts:
                row[c] = rng.random() >= p_local
            if not any(row[c] for c in parts):
                row[rng.choice(parts)] = True
            block.append(row)
        keep.append(block)
    return keep


def parse_mask(s, shape):
    """A mask of `fractalnet bench --json` ('0'/'1', keep[b, j, c] row-major) as nested lists."""
    B, J, C = shape
    if len(s) != B * J * C:
        raise ValueError(f"mask of {len(s)} entries, expected {B}x{J}x{C}")
    bits = [ch == "1" for ch in s]
    return [[bits[(b * J + j) * C:(b * J + j + 1) * C] for j in range(J)] for b in range(B)]


def python_masks(blocks, columns, n, seed=0):
    rng = random.Random(seed)
    return [sample_paper_mix(blocks, columns, rng) for _ in range(n)]


@torch.no_grad()
def folded_column(model, column=None):
    """Column `column` (default: the deepest) alone as nn.Sequential of conv(+bias)->ReLU with
    max-pools, BatchNorm folded into each convolution with the column's own statistics when
    calibrated (else the running ones), in float64 and rounded once (as the engine's
    extract-column --fold-bn)."""
    c = model.columns - 1 if column is None else column
    seq = []
    for blk in model.blocks:
        for layer in blk.cols[c]:
            conv, bn = layer.conv, layer.bn
            mean = getattr(layer, "column_mean", bn.running_mean).double()
            var = getattr(layer, "column_var", bn.running_var).double()
            s = bn.weight.double() / torch.sqrt(var + bn.eps)
            f = nn.Conv2d(conv.in_channels, conv.out_channels, 3, padding=1, bias=True)
            f.weight.copy_((conv.weight.double() * s[:, None, None, None]).float())
            f.bias.copy_((bn.bias.double() - mean * s).float())
            seq += [f, nn.ReLU()]
        seq.append(nn.MaxPool2d(2))
    fc = nn.Linear(model.fc.in_features, model.fc.out_features)
    fc.weight.copy_(model.fc.weight)
    fc.bias.copy_(model.fc.bias)
    seq += [nn.Flatten(), fc]
    return nn.Sequential(*seq).eval()
