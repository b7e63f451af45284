"""The champion gate: does a challenger's evaluation beat the champion's, by params' rule?

Each compared metric ("protocol/row/metric", lower or higher better) gives a relative gain (the
improvement over the champion's value, as a share of it; negative when worse). The challenger
wins when the mean gain exceeds `min_improvement` and no single metric is worse by more than
`max_regression`. With no champion, the first evaluated generator wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from components.config import PromoteConfig
from components.errors import SvpError


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    compared: dict[str, dict]  # metric -> challenger, champion, delta, relative gain
    mean_gain: float | None


def metric(metrics: dict, key: str) -> float:
    """`metrics["reconstruction"]["full"]["m_lmd"]` for "reconstruction/full/m_lmd"."""
    node = metrics
    for part in key.split("/"):
        if not isinstance(node, dict) or part not in node:
            raise SvpError(f"promote.compare: {key!r} is not in the evaluation's metrics")
        node = node[part]
    value = float("nan") if node is None else float(node)
    return value


def decide(challenger: dict, champion: dict | None, cfg: PromoteConfig) -> Decision:
    values = {key: metric(challenger, key) for key in cfg.compare}
    missing = [k for k, v in values.items() if not math.isfinite(v)]
    if missing:
        return Decision(False, f"not measured: {', '.join(missing)}",
                        {k: {"challenger": v} for k, v in values.items()}, None)
    if champion is None:
        return Decision(True, "no champion yet: the first evaluated generator becomes it",
                        {k: {"challenger": v} for k, v in values.items()}, None)
    compared = {}
    for key, direction in cfg.compare.items():
        new, old = values[key], metric(champion, key)
        gain = (old - new if direction == "lower" else new - old) / max(abs(old), 1e-12)
        compared[key] = {"challenger": new, "champion": old, "delta": new - old,
                         "relative_gain": gain, "better": direction}
    gains = {k: c["relative_gain"] for k, c in compared.items()}
    if not all(math.isfinite(g) for g in gains.values()):
        return Decision(False, "the champion's metrics are incomplete", compared, None)
    mean_gain = sum(gains.values()) / len(gains)
    worst = min(gains, key=gains.get)
    if gains[worst] < -cfg.max_regression:
        return Decision(False, f"{worst} is {-gains[worst]:.1%} worse than the champion's "
                        f"(at most {cfg.max_regression:.1%} allowed)", compared, mean_gain)
    if mean_gain <= cfg.min_improvement:
        return Decision(False, f"mean gain {mean_gain:+.1%} does not exceed "
                        f"{cfg.min_improvement:+.1%}", compared, mean_gain)
    return Decision(True, f"mean gain {mean_gain:+.1%} over the champion; the worst metric, "
                    f"{worst}, {gains[worst]:+.1%}", compared, mean_gain)
