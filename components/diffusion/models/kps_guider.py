"""The Head-Kps guider: a light conv encoder of the Head-Kps image, added to the latents after
the UNet's first conv (V-Express's V-Kps guider, AnimateAnyone's PoseGuider, Hallo's face locator).

diffusers' `ControlNetConditioningEmbedding` is exactly this network: a 3x3 conv, then per level a
3x3 conv and a stride-2 3x3 conv (SiLU after each), and a zero-initialised 3x3 `conv_out`, so a
new guider changes nothing until it has learnt something. `block_out_channels` has one entry more
than there are 2x downsamplings: (16, 32, 96, 256) for SD's 8x VAE, as V-Express.
"""

from __future__ import annotations

from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding


class HeadKpsGuider(ControlNetConditioningEmbedding):
    """(N, 3, H, W) Head-Kps images in [0, 1] -> (N, unet_channels, H / 2**k, W / 2**k)."""

    def __init__(self, unet_channels: int, block_out_channels: tuple[int, ...]):
        super().__init__(conditioning_embedding_channels=unet_channels, conditioning_channels=3,
                         block_out_channels=tuple(block_out_channels))
