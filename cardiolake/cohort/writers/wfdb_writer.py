"""Write simulated ECGs as WFDB records (``.hea`` header + ``.dat`` signal file).

The digital conversion is done here rather than by wfdb, so the stored integers depend only on
the simulation, the gain and the format: identical inputs give byte-identical files.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import wfdb

from cardiolake.cohort.signals import EcgSimulation

# Digital range per WFDB format; the lowest code of each is WFDB's "missing sample" marker.
_DIGITAL_RANGE: dict[str, tuple[int, int]] = {
    "80": (-(2**7), 2**7 - 1),
    "212": (-(2**11), 2**11 - 1),
    "16": (-(2**15), 2**15 - 1),
    "61": (-(2**15), 2**15 - 1),
    "24": (-(2**23), 2**23 - 1),
    "32": (-(2**31), 2**31 - 1),
}


def write_wfdb(
    sim: EcgSimulation,
    directory: Path,
    record_name: str,
    *,
    base_datetime: datetime,
    comments: list[str],
    fmt: str = "16",
    adc_gain: float = 1000.0,
) -> list[Path]:
    """Write one simulated ECG as a WFDB record.

    Samples are stored as ``round(mV * adc_gain)`` with baseline 0, clipped to the format's
    range (the lowest code stays reserved for missing samples). The header carries the lead
    names, ``mV`` units, the start date and time (to the millisecond) and ``comments``.

    Args:
        sim: the recording to write.
        directory: destination folder; created if missing.
        record_name: WFDB record name (letters, digits, ``_`` and ``-``).
        base_datetime: start of the recording, written as the header's base date and time.
        comments: header comment lines, e.g. ``"device: kardia-6l"``.
        fmt: WFDB storage format, one of ``80``, ``212``, ``16``, ``61``, ``24``, ``32``.
        adc_gain: digital units per millivolt.

    Returns:
        The written ``.hea`` and ``.dat`` paths.

    Raises:
        ValueError: on an unsupported format, a non-positive gain or a multi-line comment.

    Example:
        >>> write_wfdb(sim, Path("ecg"), "ecg_000001", base_datetime=start,
        ...            comments=["mrn: 12345678"])  # doctest: +SKIP
    """
    if fmt not in _DIGITAL_RANGE:
        raise ValueError(f"unsupported WFDB format {fmt!r}; use one of {sorted(_DIGITAL_RANGE)}")
    if not adc_gain > 0:
        raise ValueError(f"adc_gain must be positive, got {adc_gain}")
    if any("\n" in c or "\r" in c for c in comments):
        raise ValueError("header comments must be single lines")
    lo, hi = _DIGITAL_RANGE[fmt]
    digital = np.clip(np.rint(sim.signals_mv.astype(np.float64) * adc_gain), lo + 1, hi)
    n_sig = digital.shape[1]
    # WFDB headers carry milliseconds at most; drop the rest so the header round-trips exactly.
    start = base_datetime.replace(microsecond=base_datetime.microsecond // 1000 * 1000)
    directory.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(
        record_name,
        fs=sim.fs,
        units=["mV"] * n_sig,
        sig_name=list(sim.lead_names),
        d_signal=digital.astype(np.int64),
        fmt=[fmt] * n_sig,
        adc_gain=[float(adc_gain)] * n_sig,
        baseline=[0] * n_sig,
        comments=list(comments),
        base_date=start.date(),
        base_time=start.time(),
        write_dir=str(directory),
    )
    return [directory / f"{record_name}.hea", directory / f"{record_name}.dat"]
