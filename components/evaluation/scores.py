"""The paper's metrics for one row of one protocol: per-frame PSNR, SSIM, F-LMD and M-LMD (the
diffusion stages' own, `components/diffusion/metrics.py`), FID over its frames and FVD over its
16-frame clips, each against the protocol's real target frames."""

from __future__ import annotations

import numpy as np

from components.diffusion.metrics import f_lmd, m_lmd, nanmean, psnr, ssim


def frame_metrics(generated: np.ndarray, real: np.ndarray, lm_generated: np.ndarray,
                  lm_real: np.ndarray) -> dict[str, np.ndarray]:
    """Per frame, over (N, R, R, 3) frames and their (N, 68, 2) landmarks."""
    return {"psnr": psnr(generated, real), "ssim": ssim(generated, real),
            "f_lmd": f_lmd(lm_generated, lm_real), "m_lmd": m_lmd(lm_generated, lm_real),
            "faces_found": np.isfinite(lm_generated).all(axis=(1, 2)).astype(np.float64)}


def mean_metrics(per_frame: dict[str, np.ndarray]) -> dict[str, float]:
    return {name: nanmean(values) for name, values in per_frame.items()}
