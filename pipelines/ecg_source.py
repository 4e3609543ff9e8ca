"""Read an ECG from any supported source (WFDB record or DICOM waveform) into one shape.

WFDB records come from very different places: PTB-XL-like 12-lead exports indexed by a CSV,
mobile devices that put the MRN in header comments, bedside monitors with several sampling
rates in one record (MIMIC: ECG at 500 Hz beside ABP at 125 Hz), research records with
lower-case lead names and a second signal file (PTB). The reader picks the ECG channels at
their true rate, checks the signal files against the header, and never lets an identifier
reach the parsed header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import wfdb

from pipelines.readers import DicomEcg, InputError, read_dicom

#: Canonical spellings of ECG lead names (keys are lower case).
_LEAD_NAMES = {
    "i": "I",
    "ii": "II",
    "iii": "III",
    "avr": "aVR",
    "avl": "aVL",
    "avf": "aVF",
    **{f"v{i}": f"V{i}" for i in range(1, 7)},
    "mlii": "MLII",
    "mli": "MLI",
    "mliii": "MLIII",
    "vx": "vx",
    "vy": "vy",
    "vz": "vz",
    **{f"mcl{i}": f"MCL{i}" for i in range(1, 7)},
    "ecg": "ECG",
    "ecg1": "ECG1",
    "ecg2": "ECG2",
}
#: Leads that are physically a standard lead under another name.
STANDARD_ALIASES = {"MLII": "II", "MLI": "I", "MLIII": "III"}
#: Header-comment keys that identify a patient: used for the key, never stored.
_PHI_KEYS = re.compile(r"^(mrn|patient(_?id)?|name|dob|birth.*|ssn|address|phone)$", re.I)
#: Bytes per sample of the WFDB storage formats whose size we can check exactly.
_BYTES_PER_SAMPLE = {"16": 2.0, "212": 1.5, "80": 1.0, "24": 3.0, "32": 4.0, "61": 2.0, "8": 1.0}


@dataclass(frozen=True)
class EcgSource:
    """An ECG read from its source file, ECG channels only, at their own sampling rate."""

    uri: str
    format: str  # "wfdb" | "dicom_ecg"
    signals_mv: np.ndarray = field(repr=False)  # (n_samples, n_leads) float32
    lead_names: tuple[str, ...]
    fs: float
    acquisition_datetime: datetime | None
    device_kind: str  # resting_12lead | mobile_1lead | mobile_6lead | monitor
    header_fields: dict[str, str] = field(repr=False)
    header: dict[str, Any] = field(repr=False)
    mrn: str | None = field(default=None, repr=False)


def normalise_lead(name: str) -> str | None:
    """Canonical lead name, or None when the channel is not an ECG lead (ABP, RESP, ...)."""
    return _LEAD_NAMES.get(name.strip().lower().replace(" ", "").replace("lead", ""))


def read_ecg_source(
    uri: str, fmt: str, *, context: dict[str, Any] | None = None, max_abs_mv: float = 25.0
) -> EcgSource:
    """Read and validate an ECG file.

    Args:
        uri: the WFDB header (``.hea``) or the DICOM file.
        fmt: ``"wfdb"`` or ``"dicom"``.
        context: what an index says about the record (PTB-XL ``mrn``, ``device``,
            ``recording_date``).
        max_abs_mv: amplitude above which the signal is implausible (a wrong gain).

    Returns:
        The ECG channels, their rate and a de-identified header.

    Raises:
        InputError: with a stable reason for every kind of broken input.
    """
    context = context or {}
    if fmt == "dicom":
        source = _from_dicom(read_dicom(uri), uri)
    else:
        source = _from_wfdb(uri, context)
    _check_amplitude(source, max_abs_mv)
    return source


def _from_dicom(ecg: Any, uri: str) -> EcgSource:
    if not isinstance(ecg, DicomEcg):
        raise InputError("unsupported_sop_class", "expected an ECG waveform", uri=uri)
    fields = {k: str(v) for k, v in ecg.header.items() if not isinstance(v, (list, dict))}
    return EcgSource(
        uri=uri,
        format="dicom_ecg",
        signals_mv=ecg.signals_mv,
        lead_names=tuple(ecg.lead_names),
        fs=float(ecg.fs),
        acquisition_datetime=ecg.acquisition_datetime,
        device_kind=_device_kind(len(ecg.lead_names), None),
        header_fields=fields,
        header=ecg.header,
        mrn=ecg.mrn,
    )


def _check_signal_files(record_path: Path, header: wfdb.io.record.Record, uri: str) -> None:
    """Compare each signal file's size with what the header declares."""
    expected: dict[str, float] = {}
    for i, fname in enumerate(header.file_name or []):
        per_sample = _BYTES_PER_SAMPLE.get(str(header.fmt[i]))
        if per_sample is None:
            return  # a format whose size we cannot predict: leave it to wfdb
        spf = (header.samps_per_frame or [1] * header.n_sig)[i]
        offset = (header.byte_offset or [0] * header.n_sig)[i] or 0
        expected[fname] = expected.get(fname, float(offset)) + per_sample * spf * header.sig_len
    for fname, want in expected.items():
        path = record_path.parent / fname
        if not path.exists():
            raise InputError(
                "missing_file", f"signal file {fname} named in the header is missing", uri=uri
            )
        have = path.stat().st_size
        frame_bytes = max(1.0, want / max(header.sig_len, 1))
        if have + 1 < want:
            raise InputError(
                "truncated_signal",
                f"{fname} holds {have} bytes, the header declares {int(want)} "
                f"({header.sig_len} samples)",
                uri=uri,
            )
        if have > want + frame_bytes + 1:
            raise InputError(
                "header_mismatch",
                f"{fname} holds {have} bytes but the header declares only {header.sig_len} samples",
                uri=uri,
            )


def _from_wfdb(uri: str, context: dict[str, Any]) -> EcgSource:
    record_path = Path(uri).with_suffix("")
    try:
        header = wfdb.rdheader(str(record_path))
    except Exception as exc:  # noqa: BLE001 - wfdb raises many types for bad headers
        raise InputError("bad_header", f"{type(exc).__name__}: {exc}", uri=uri) from exc
    _check_signal_files(record_path, header, uri)
    try:
        record = wfdb.rdrecord(str(record_path), smooth_frames=False)
    except Exception as exc:  # noqa: BLE001
        raise InputError("decode_failed", f"{type(exc).__name__}: {exc}", uri=uri) from exc
    spf = record.samps_per_frame or [1] * record.n_sig
    channels = []
    for i, name in enumerate(record.sig_name):
        lead = normalise_lead(name)
        unit = (record.units[i] if record.units else "mV").lower()
        if lead is not None and unit in {"mv", "uv", "v"}:
            scale = {"mv": 1.0, "uv": 1e-3, "v": 1e3}[unit]
            channels.append((lead, float(record.fs) * spf[i], record.e_p_signal[i] * scale))
    if not channels:
        raise InputError("no_ecg_channel", f"no ECG lead among {record.sig_name}", uri=uri)
    fs = max(c[1] for c in channels)  # every ECG channel at the highest ECG rate
    channels = [c for c in channels if c[1] == fs]
    n = min(len(c[2]) for c in channels)
    signals = np.stack([np.nan_to_num(c[2][:n]) for c in channels], axis=1).astype(np.float32)

    fields: dict[str, str] = {}
    mrn = context.get("mrn")
    for j, comment in enumerate(record.comments or []):
        key, sep, value = comment.partition(":")
        if sep and key.strip():
            key = key.strip().lower().replace(" ", "_")
            if _PHI_KEYS.match(key):
                mrn = mrn or value.strip()
                continue
            fields[key] = value.strip()
        else:
            fields[f"comment_{j + 1}"] = comment.strip()
    device = context.get("device") or fields.get("device")
    if device:
        fields["device"] = str(device)
    acquired = _base_datetime(record, context)
    header = {
        "record_name": record.record_name,
        "n_sig": record.n_sig,
        "fs": float(fs),
        "frame_fs": float(record.fs),
        "sig_len": record.sig_len,
        "all_channels": list(record.sig_name),
        "ecg_channels": [c[0] for c in channels],
        "fmt": list(map(str, record.fmt or [])),
        "fields": fields,
    }
    return EcgSource(
        uri=uri,
        format="wfdb",
        signals_mv=signals,
        lead_names=tuple(c[0] for c in channels),
        fs=float(fs),
        acquisition_datetime=acquired,
        device_kind=_device_kind(len(channels), fields.get("device")),
        header_fields=fields,
        header=header,
        mrn=mrn,
    )


def _base_datetime(record: wfdb.Record, context: dict[str, Any]) -> datetime | None:
    if record.base_date is not None and record.base_time is not None:
        return datetime.combine(record.base_date, record.base_time)
    if context.get("recording_date"):
        return datetime.fromisoformat(str(context["recording_date"]))
    return None


def _device_kind(n_leads: int, device: str | None) -> str:
    if device and "mobile" in device.lower() or (device or "").lower().startswith("kardia"):
        return "mobile_6lead" if n_leads >= 6 else "mobile_1lead"
    if n_leads >= 12:
        return "resting_12lead"
    return "monitor"


def _check_amplitude(source: EcgSource, max_abs_mv: float) -> None:
    if source.signals_mv.size == 0:
        raise InputError("empty_signal", "the record holds no samples", uri=source.uri)
    level = float(np.percentile(np.abs(source.signals_mv), 99.5))
    if level > max_abs_mv:
        raise InputError(
            "implausible_amplitude",
            f"99.5th percentile |amplitude| {level:.0f} mV exceeds {max_abs_mv:.0f} mV "
            "(wrong gain?)",
            uri=source.uri,
        )
