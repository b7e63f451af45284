"""SyncNet (Chung & Zisserman 2016) as syncnet_python builds it, with its layer names.

Two towers map a 5-frame face window and the 0.2 s of speech under it (13 MFCCs x 20 steps)
into one space where in-sync pairs lie close. The defaults are `syncnet_v2.model`'s shapes
(224-pixel faces, 1024-d embeddings), so `from_syncnet_python` reads that file's state dict
as it is; the embedded profile keeps the same layers with fewer channels and smaller faces
(the last convolution's kernel is whatever collapses the face to 1 x 1) and may look at the
mouth region only (`face_region`, for crops too small to hold a readable mouth).

Inputs follow syncnet_python: faces as float BGR pixels in [0, 255], (B, 3, 5, S, S); MFCCs
as (B, 1, 13, 20). The outputs are not normalised: Sync-D is a Euclidean distance in this space.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from components.errors import SvpError

FACE_FRAMES = 5  # video frames per window
MFCC_STEPS = 20  # 100 Hz MFCC steps per window (0.2 s = 5 frames at 25 fps)
N_MFCC = 13


def _face_side_after_stem(size: int) -> int:
    """The face tower's spatial side before its last convolution (6 for 224)."""
    size = (size - 7) // 2 + 1  # conv 7x7 stride 2
    size = (size - 3) // 2 + 1  # max pool 3 stride 2
    size = (size + 2 - 5) // 2 + 1  # conv 5x5 stride 2 pad 1
    size = (size + 2 - 3) // 2 + 1  # max pool 3 stride 2 pad 1
    return (size - 3) // 2 + 1  # three 3x3 convs keep it; max pool 3 stride 2


def _conv2d(c_in: int, c_out: int, kernel, padding) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, padding=padding), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True)]


def _conv3d(c_in: int, c_out: int, kernel, stride=1, padding=0) -> list[nn.Module]:
    return [nn.Conv3d(c_in, c_out, kernel, stride=stride, padding=padding), nn.BatchNorm3d(c_out),
            nn.ReLU(inplace=True)]


def _head(width: int, hidden: int, embed_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, embed_dim))


class SyncNet(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, face_size: int = 224,
                 audio_channels: tuple[int, ...] = (64, 192, 384, 256, 256, 512),
                 face_channels: tuple[int, ...] = (96, 256, 256, 256, 256, 512),
                 hidden_dim: int = 512, embed_dim: int = 1024, face_region: str = "full"):
        super().__init__()
        if face_region not in ("full", "mouth"):
            raise SvpError(f"SyncNet: face_region {face_region!r} is not full or mouth")
        if _face_side_after_stem(face_size) < 1:
            raise SvpError(f"SyncNet: face_size {face_size} is too small (at least 51 pixels)")
        a, f = audio_channels, face_channels
        self.netcnnaud = nn.Sequential(
            *_conv2d(1, a[0], 3, 1), nn.MaxPool2d(1, 1),
            *_conv2d(a[0], a[1], 3, 1), nn.MaxPool2d(3, (1, 2)),
            *_conv2d(a[1], a[2], 3, 1),
            *_conv2d(a[2], a[3], 3, 1),
            *_conv2d(a[3], a[4], 3, 1), nn.MaxPool2d(3, 2),
            nn.Conv2d(a[4], a[5], (5, 4)), nn.BatchNorm2d(a[5]), nn.ReLU())
        self.netfcaud = _head(a[5], hidden_dim, embed_dim)
        self.netfclip = _head(f[5], hidden_dim, embed_dim)
        side = _face_side_after_stem(face_size)
        self.netcnnlip = nn.Sequential(
            *_conv3d(3, f[0], (5, 7, 7), (1, 2, 2)), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_conv3d(f[0], f[1], (1, 5, 5), (1, 2, 2), (0, 1, 1)),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            *_conv3d(f[1], f[2], (1, 3, 3), padding=(0, 1, 1)),
            *_conv3d(f[2], f[3], (1, 3, 3), padding=(0, 1, 1)),
            *_conv3d(f[3], f[4], (1, 3, 3), padding=(0, 1, 1)),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_conv3d(f[4], f[5], (1, side, side)))

    def forward_audio(self, mfcc: torch.Tensor) -> torch.Tensor:
        """(B, 1, 13, 20) MFCC windows -> (B, embed_dim)."""
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def forward_face(self, faces: torch.Tensor) -> torch.Tensor:
        """(B, 3, 5, S, S) BGR pixels in [0, 255] -> (B, embed_dim)."""
        return self.netfclip(self.netcnnlip(faces).flatten(1))

    def forward(self, faces: torch.Tensor, mfcc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_face(faces), self.forward_audio(mfcc)

    @classmethod
    def from_syncnet_python(cls, path: str | Path) -> SyncNet:
        """syncnet_python's `syncnet_v2.model` (a state dict; read as tensors only, nothing
        unpickled), for the full profile."""
        path = Path(path)
        if not path.is_file():
            raise SvpError(f"{path}: SyncNet weights not found")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise SvpError(f"{path}: not a SyncNet state dict "
                           f"({' '.join(str(err).split())[:120]})") from None
        model = cls()
        try:
            model.load_state_dict(state, strict=True)
        except (RuntimeError, AttributeError) as err:
            raise SvpError(f"{path}: not syncnet_python's SyncNet "
                           f"({' '.join(str(err).split())[:160]})") from None
        return model.eval()
