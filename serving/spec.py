"""The device preprocessing spec: everything a device must do to a recording before the model.

One JSON document (``preprocessing.json`` in the registry and in every bundle) that the
reference device script (:mod:`serving.device_script`), the parity checks and batch scoring all
read, so the numbers a device computes are the numbers the platform validated. It mirrors what
the student saw in training: limb leads in mV at ``rate_hz`` (anti-aliased polyphase
resampling), clipped to ``clip_mv``, absent leads zero with a lead mask, ``window_s`` windows
whose logits are averaged, then temperature scaling and one threshold per lead count.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: Bumped when the meaning of a field changes (a device refuses a spec it does not know).
SPEC_VERSION = 1


@dataclass(frozen=True)
class ResamplerSpec:
    """Polyphase resampling with a Kaiser-windowed sinc low-pass (what training used).

    Attributes:
        taps_per_phase: filter taps per polyphase branch (``2 * taps_per_phase * max(up, down)
            + 1`` taps in all).
        kaiser_beta: the Kaiser window's beta.
    """

    taps_per_phase: int = 4
    kaiser_beta: float = 5.0


@dataclass(frozen=True)
class DeviceSpec:
    """Preprocessing, post-processing and operating point of one exported student.

    Attributes:
        rate_hz: the model's input rate.
        leads: the model's input channels, in order (absent ones zero, mask 0).
        units: signal units the model takes.
        clip_mv: amplitudes are clipped to +- this many mV.
        window_s: seconds per model input; a longer recording is scored as the mean logit of
            its non-overlapping windows, a shorter one is zero-padded.
        targets: the model's outputs, in order (``targets[0]`` is the triage decision).
        temperature: the urgent head's calibration temperature.
        thresholds_by_lead_count: calibrated urgent probability at or above which a recording is
            flagged, by the number of leads the device records.
        sensitivity_target: what the thresholds were chosen for (on validation).
        resampler: how any input rate is brought to ``rate_hz``.
        input_names: the ONNX inputs (signal, lead mask); output_name: the ONNX output.
        spec_version: :data:`SPEC_VERSION`.
    """

    rate_hz: int
    leads: tuple[str, ...]
    targets: tuple[str, ...]
    temperature: float
    thresholds_by_lead_count: dict[str, float]
    sensitivity_target: float
    units: str = "mV"
    clip_mv: float = 5.0
    window_s: float = 10.0
    resampler: ResamplerSpec = field(default_factory=ResamplerSpec)
    input_names: tuple[str, str] = ("signal", "lead_mask")
    output_name: str = "logits"
    spec_version: int = SPEC_VERSION

    @property
    def window(self) -> int:
        """Samples per model input."""
        return int(round(self.window_s * self.rate_hz))

    def threshold(self, n_leads: int) -> float:
        """The urgent threshold for a device with ``n_leads`` leads (nearest known count)."""
        counts = sorted(int(k) for k in self.thresholds_by_lead_count)
        best = min(counts, key=lambda c: (abs(c - n_leads), c))
        return float(self.thresholds_by_lead_count[str(best)])

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    def write(self, path: Path) -> Path:
        """Write as canonical JSON (sorted keys: the same spec gives the same bytes)."""
        path.write_text(json.dumps(self.as_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeviceSpec:
        """Parse (refusing a spec version this code does not know)."""
        if int(data.get("spec_version", 0)) != SPEC_VERSION:
            raise ValueError(f"preprocessing spec version {data.get('spec_version')} is not "
                             f"{SPEC_VERSION}")  # fmt: skip
        values = dict(data)
        values["leads"] = tuple(values["leads"])
        values["targets"] = tuple(values["targets"])
        values["input_names"] = tuple(values.get("input_names", ("signal", "lead_mask")))
        values["resampler"] = ResamplerSpec(**values.get("resampler", {}))
        values["thresholds_by_lead_count"] = {
            str(k): float(v) for k, v in values["thresholds_by_lead_count"].items()
        }
        return cls(**values)

    @classmethod
    def read(cls, path: Path) -> DeviceSpec:
        """Read ``preprocessing.json``."""
        return cls.from_dict(json.loads(Path(path).read_text()))


def spec_from_card(card: dict[str, Any]) -> DeviceSpec:
    """The device spec of a trained student's card (its rate, leads, calibration)."""
    targets = tuple(card["targets"])
    return DeviceSpec(
        rate_hz=int(card["input_fs"]),
        leads=tuple(card["leads"]),
        targets=targets,
        temperature=float(card["temperatures"][targets[0]]),
        thresholds_by_lead_count={str(k): float(v) for k, v in
                                  card["thresholds_by_lead_count"].items()},
        sensitivity_target=float(card["sensitivity_target"]),
        window_s=float(card["seconds"]),
    )  # fmt: skip
