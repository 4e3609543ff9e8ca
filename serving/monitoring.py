"""Drift and quality of a scored cohort against the model's training reference.

The reference travels with the model: the export computes it from the training lake's mobile
recordings (input statistics, lead-set mix, quality flags) and the model's scores on held-out
ones, and stores it as ``reference.json`` beside the ONNX files. Each scoring run computes the
same figures for its cohort and compares:

* numeric inputs and the score: the two-sample Kolmogorov-Smirnov statistic with its p-value
  (alert when the statistic passes its threshold *and* the p-value is small, so a small cohort
  does not alert on noise) and the population stability index on the reference's deciles;
* lead-set mix and quality flags: total-variation distance between the two mixes.

The figures land in the ``monitoring.drift`` Delta table (one row per run x metric) with a PNG;
``cardiolake monitor`` prints the newest run's and exits non-zero past a threshold.
Only numpy and scipy: the same code runs in both environments.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Per-recording input statistics (of the model inputs: mV at the model rate, clipped).
NUMERIC = ("rms_mv", "range_mv", "clipped_fraction")
#: How many reference values are kept per statistic (enough for KS, small in JSON).
REFERENCE_SAMPLES = 2000


@dataclass(frozen=True)
class DriftThresholds:
    """When a figure alerts (configuration: the ``monitor:`` section).

    Attributes:
        ks_statistic: a numeric figure alerts when its KS statistic reaches this ...
        ks_p_value: ... and its p-value is below this.
        psi: reported beside KS; alerts on its own only with ``min_rows_for_psi`` rows.
        min_rows_for_psi: cohort size from which PSI alone may alert.
        mix_tvd: lead-set mix or quality-flag rates alert at this total-variation distance.
        min_rows: below this many scored recordings nothing alerts (the run is reported).
    """

    ks_statistic: float = 0.3
    ks_p_value: float = 0.001
    psi: float = 0.25
    min_rows_for_psi: int = 500
    mix_tvd: float = 0.3
    min_rows: int = 20


def input_stats(windows: np.ndarray, mask: np.ndarray, clip_mv: float) -> dict[str, float]:
    """Statistics of one recording's model inputs (present leads only).

    Args:
        windows: (W, leads, T) model inputs in mV.
        mask: (leads,) present leads.
        clip_mv: the spec's clipping level.
    """
    x = windows[:, mask > 0, :]
    if x.size == 0:
        return dict.fromkeys(NUMERIC, float("nan"))
    lo, hi = np.percentile(x, [1, 99], axis=-1)
    return {"rms_mv": float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))),
            "range_mv": float(np.median(hi - lo)),
            "clipped_fraction": float(np.mean(np.abs(x) >= clip_mv - 1e-6))}  # fmt: skip


def quality_flags(windows: np.ndarray, mask: np.ndarray, rate_hz: int, clip_mv: float,
                  recorded_s: float, min_seconds: float) -> list[str]:  # fmt: skip
    """Signal-quality flags of one recording's model inputs (the silver ECG gate's checks).

    ``flat_line``: a present lead with < 0.01 mV standard deviation; ``clipping``: > 1 % of
    samples at the clipping level; ``noisy``: > 30 % of the power above 40 Hz; ``short``:
    fewer than ``min_seconds`` recorded.
    """
    flags: list[str] = []
    x = windows[:, mask > 0, :].astype(np.float64)
    if recorded_s < min_seconds:
        flags.append("short")
    if x.size == 0:
        return [*flags, "flat_line"]
    if (x.std(axis=-1) < 0.01).all(axis=0).any():
        flags.append("flat_line")
    if np.mean(np.abs(x) >= clip_mv - 1e-6) > 0.01:
        flags.append("clipping")
    spectrum = np.abs(np.fft.rfft(x - x.mean(axis=-1, keepdims=True), axis=-1)) ** 2
    freqs = np.fft.rfftfreq(x.shape[-1], 1.0 / rate_hz)
    high = spectrum[..., freqs > 40].sum() / max(float(spectrum[..., freqs > 0.5].sum()), 1e-12)
    if high > 0.3:
        flags.append("noisy")
    return flags


def lead_set_name(leads: list[str] | tuple[str, ...]) -> str:
    """A lead set as one label (``I`` or ``I,II,III,aVR,aVL,aVF``)."""
    return ",".join(leads)


def reference(stats: list[dict[str, float]], scores: list[float], lead_sets: list[str],
              flags: list[list[str]], seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """The reference document of a model (samples per figure, mixes)."""
    rng = np.random.default_rng(seed)

    def sample(values: list[float]) -> list[float]:
        v = np.asarray([x for x in values if math.isfinite(x)], np.float64)
        if len(v) > REFERENCE_SAMPLES:
            v = rng.choice(v, REFERENCE_SAMPLES, replace=False)
        return sorted(float(x) for x in v)

    return {
        "numeric": {k: sample([s[k] for s in stats]) for k in NUMERIC},
        "score": sample(scores),
        "lead_sets": _mix(lead_sets),
        "flags": _flag_rates(flags, len(stats)),
        "rows": len(stats),
    }


def _mix(values: list[str]) -> dict[str, float]:
    counts = Counter(values)
    total = max(1, sum(counts.values()))
    return {k: v / total for k, v in sorted(counts.items())}


def _flag_rates(flags: list[list[str]], n: int) -> dict[str, float]:
    counts = Counter(f for row in flags for f in set(row))
    counts["none"] = sum(1 for row in flags if not row)
    return {k: v / max(1, n) for k, v in sorted(counts.items())}


def psi(reference_values: np.ndarray, values: np.ndarray, bins: int = 10) -> float:
    """Population stability index on the reference's quantile bins."""
    if len(reference_values) < 2 or len(values) == 0:
        return float("nan")
    edges = np.unique(np.quantile(reference_values, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        return 0.0 if np.allclose(values, reference_values[0]) else float("inf")
    edges[0], edges[-1] = -np.inf, np.inf
    ref = np.histogram(reference_values, edges)[0] / len(reference_values)
    cur = np.histogram(values, edges)[0] / len(values)
    ref, cur = np.clip(ref, 1e-4, None), np.clip(cur, 1e-4, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def tvd(a: dict[str, float], b: dict[str, float]) -> float:
    """Total-variation distance between two categorical mixes."""
    keys = set(a) | set(b)
    return 0.5 * sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in keys)


@dataclass(frozen=True)
class Figure:
    """One monitored figure of one run."""

    metric: str
    statistic: str
    value: float
    threshold: float
    p_value: float | None
    alert: bool
    detail: str

    def as_row(self) -> dict[str, Any]:
        """A ``monitoring.drift`` row's figure fields."""
        return {"metric": self.metric, "statistic": self.statistic, "value": self.value,
                "threshold": self.threshold, "p_value": self.p_value, "alert": self.alert,
                "detail": self.detail}  # fmt: skip


def drift(ref: dict[str, Any], stats: list[dict[str, float]], scores: list[float],
          lead_sets: list[str], flags: list[list[str]], thresholds: DriftThresholds
          ) -> list[Figure]:  # fmt: skip
    """Every figure of a cohort against the reference."""
    from scipy.stats import ks_2samp

    n = len(stats)
    enough = n >= thresholds.min_rows
    out: list[Figure] = []
    columns = {**{k: [s[k] for s in stats] for k in NUMERIC}, "score": list(scores)}
    for name, values in columns.items():
        cur = np.asarray([v for v in values if math.isfinite(v)], np.float64)
        base = np.asarray(ref["score"] if name == "score" else ref["numeric"][name], np.float64)
        if len(cur) == 0 or len(base) == 0:
            continue
        ks = ks_2samp(base, cur)
        ks_alert = enough and ks.statistic >= thresholds.ks_statistic and \
            ks.pvalue < thresholds.ks_p_value  # fmt: skip
        out.append(
            Figure(
                name,
                "ks",
                float(ks.statistic),
                thresholds.ks_statistic,
                float(ks.pvalue),
                bool(ks_alert),
                f"median {np.median(cur):.4g} vs reference {np.median(base):.4g}",
            )
        )
        p = psi(base, cur)
        out.append(Figure(name, "psi", p, thresholds.psi, None,
                          bool(n >= thresholds.min_rows_for_psi and p >= thresholds.psi),
                          f"{len(cur)} rows vs {len(base)} reference"))  # fmt: skip
    mix = _mix(lead_sets)
    d = tvd(ref["lead_sets"], mix)
    out.append(Figure("lead_set_mix", "tvd", d, thresholds.mix_tvd, None,
                      bool(enough and d >= thresholds.mix_tvd),
                      ", ".join(f"{k} {v:.0%}" for k, v in mix.items())))  # fmt: skip
    rates = _flag_rates(flags, n)
    d = tvd(ref["flags"], rates)
    out.append(Figure("quality_flags", "tvd", d, thresholds.mix_tvd, None,
                      bool(enough and d >= thresholds.mix_tvd),
                      ", ".join(f"{k} {v:.0%}" for k, v in rates.items())))  # fmt: skip
    return out


def plot_report(ref: dict[str, Any], stats: list[dict[str, float]], scores: list[float],
                figures: list[Figure], path: Path, title: str) -> Path:  # fmt: skip
    """Reference vs cohort histograms of every numeric figure and the score, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [*NUMERIC, "score"]
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2))
    by_metric = {f.metric: f for f in figures if f.statistic == "ks"}
    for ax, name in zip(axes, names, strict=True):
        base = ref["score"] if name == "score" else ref["numeric"][name]
        cur = scores if name == "score" else [s[name] for s in stats]
        cur = [v for v in cur if math.isfinite(v)]
        both = [*base, *cur]
        bins = np.histogram_bin_edges(both, bins=30) if both else 10
        ax.hist(base, bins=bins, density=True, alpha=0.5, label="training reference")
        ax.hist(cur, bins=bins, density=True, alpha=0.5, label="this cohort")
        f = by_metric.get(name)
        colour = "red" if f is not None and f.alert else "black"
        ks = f"KS {f.value:.2f} (p {f.p_value:.1g})" if f is not None else ""
        ax.set_title(f"{name}\n{ks}", color=colour, fontsize=9)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
