"""The temporal module: AnimateDiff motion modules (diffusers' `MotionAdapter`), random or loaded
from a motion-module file in AnimateDiff's own format (`mm_sd_v15_v2.ckpt` or a safetensors
conversion of it).

A motion module attends over the frames at each pixel, with sinusoidal frame positions up to
`max_seq_length` (32 for AnimateDiff v2): a longer window has no positions and is refused. A new
module's output projections are zero, as in AnimateDiff, so adding it leaves the image model's
frames unchanged until stage 2 trains it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers.loaders.single_file_utils import convert_animatediff_checkpoint_to_diffusers
from diffusers.models.unets.unet_motion_model import MotionAdapter
from safetensors.torch import load_file

from components.errors import SvpError


def new_motion_adapter(config: dict) -> MotionAdapter:
    adapter = MotionAdapter(**config)
    for module in adapter.modules():
        if type(module).__name__ == "AnimateDiffTransformer3D":
            torch.nn.init.zeros_(module.proj_out.weight)
            torch.nn.init.zeros_(module.proj_out.bias)
    return adapter


def read_motion_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A motion-module file's tensors: safetensors, or a torch file read with `weights_only`
    (tensors and plain containers only, nothing else is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise SvpError(f"{path}: motion-module weights not found (diffusion.motion.pretrained)")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise SvpError(f"{path}: not a readable motion-module file "
                       f"({' '.join(str(err).split())[:120]})") from None
    while isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SvpError(f"{path}: expected a flat mapping of tensor names to tensors")
    return state


def load_motion_adapter(path: str | Path, config: dict) -> MotionAdapter:
    """An adapter shaped by `config` with the weights of an AnimateDiff motion-module file."""
    adapter = MotionAdapter(**config)
    state = read_motion_weights(path)
    if any(".temporal_transformer." in k for k in state):  # AnimateDiff's names -> diffusers'
        state = convert_animatediff_checkpoint_to_diffusers(state)
    expected = adapter.state_dict()
    unexpected = sorted(set(state) - set(expected))
    missing = sorted(k for k in set(expected) - set(state) if not k.endswith("pos_embed.pe"))
    wrong = [k for k in state if k in expected and state[k].shape != expected[k].shape]
    if unexpected or missing or wrong:
        key = (wrong or unexpected or missing)[0]
        what = (f"{key} has shape {tuple(state[key].shape)}, the model expects "
                f"{tuple(expected[key].shape)}" if wrong else
                f"unexpected tensor {key}" if unexpected else f"no tensor for {key}")
        raise SvpError(f"{path}: does not fit diffusion.motion/unet ({what}; "
                       f"{len(wrong)} mismatched, {len(unexpected)} unexpected, "
                       f"{len(missing)} missing)")
    adapter.load_state_dict(state, strict=False)  # frame positions are recomputed, not stored
    return adapter
