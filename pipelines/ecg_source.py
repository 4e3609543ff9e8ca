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

from pipelines.readers import DicomEcg, InputError, read_dicom
from pipelines.signal.wfdb_reader import read_wfdb

#: Leads that are physically a standard lead under another name.
STANDARD_ALIASES = {"MLII": "II", "MLI": "I", "MLIII": "III"}
#: Header-comment keys that identify a patient: used for the key, never stored.
_PHI_KEYS = re.compile(r"^(mrn|patient(_?id)?|name|dob|birth.*|ssn|address|phone)$", re.I)


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


def read_ecg_source(uri: str, fmt: str, *, context: dict[str, Any] | None = None) -> EcgSource:
    """Read an ECG file and check that it decodes to samples.

    Whether the amplitudes are physiological is the silver ECG gate's question
    (``ecg_amplitude_in_bounds``), not the reader's: a wrong gain decodes fine.

    Args:
        uri: the WFDB header (``.hea``) or the DICOM file.
        fmt: ``"wfdb"`` or ``"dicom"``.
        context: what an index says about the record (PTB-XL ``mrn``, ``device``,
            ``recording_date``).

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
    if source.signals_mv.size == 0:
        raise InputError("empty_signal", "the record holds no samples", uri=uri)
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


def _wfdb_reason(message: str) -> str:
    """Quarantine reason of a :func:`read_wfdb` error (its messages name the defect)."""
    text = message.lower()
    if "sample count mismatch" in text:
        return "header_mismatch"
    if "truncated" in text:
        return "truncated_signal"
    if "missing" in text or "no such file" in text:
        return "missing_file"
    return "decode_failed"


def _from_wfdb(uri: str, context: dict[str, Any]) -> EcgSource:
    try:
        record = read_wfdb(Path(uri).with_suffix(""))
        signals, names, fs = record.ecg_matrix()
    except ValueError as exc:
        reason = "no_ecg_channel" if "no ECG channel" in str(exc) else _wfdb_reason(str(exc))
        raise InputError(reason, str(exc), uri=uri) from exc
    fields: dict[str, str] = {}
    mrn = context.get("mrn")
    for key, value in record.header_fields.items():
        key = key.strip().lower().replace(" ", "_")
        if _PHI_KEYS.match(key):
            mrn = mrn or value.strip()
        else:
            fields[key] = value
    for j, comment in enumerate(record.comments):
        if ":" not in comment:  # free comments (MIT-BIH: "69 M 1085 1629 x1")
            fields[f"comment_{j + 1}"] = comment.strip()
    device = context.get("device") or fields.get("device")
    if device:
        fields["device"] = str(device)
    acquired = record.base_datetime
    if acquired is None and context.get("recording_date"):
        acquired = datetime.fromisoformat(str(context["recording_date"]))
    header = {
        "record_name": record.record_name,
        "n_sig": len(record.channels),
        "fs": float(fs),
        "frame_fs": float(record.frame_fs),
        "n_frames": record.n_frames,
        "all_channels": [c.source_name for c in record.channels],
        "ecg_channels": list(names),
        "checksum_errors": list(record.checksum_errors),
        "fields": fields,
    }
    return EcgSource(
        uri=uri,
        format="wfdb",
        signals_mv=np.nan_to_num(signals).astype(np.float32),
        lead_names=tuple(names),
        fs=float(fs),
        acquisition_datetime=acquired,
        device_kind=_device_kind(len(names), fields.get("device")),
        header_fields=fields,
        header=header,
        mrn=mrn,
    )


def _device_kind(n_leads: int, device: str | None) -> str:
    if device and "mobile" in device.lower() or (device or "").lower().startswith("kardia"):
        return "mobile_6lead" if n_leads >= 6 else "mobile_1lead"
    if n_leads >= 12:
        return "resting_12lead"
    return "monitor"
