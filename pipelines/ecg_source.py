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
from pipelines.readers.limits import DEFAULT_LIMITS, ReadLimits
from pipelines.signal.wfdb_reader import read_wfdb

#: Leads that are physically a standard lead under another name.
STANDARD_ALIASES = {"MLII": "II", "MLI": "I", "MLIII": "III"}
#: Header-comment keys that hold the MRN: used for the key, never stored.
_MRN_KEYS = re.compile(r"^(mrn|patient(_?id)?|medical_record(_number)?|record_number)$", re.I)
#: Ages at or above this are stored as this (Safe Harbor: ages over 89 are one category).
AGE_CAP = 90
#: Words a device name may consist of (besides tokens with a digit: models such as MAC5500).
_DEVICE_WORDS = frozenset(
    {
        "kardia", "mobile", "pagewriter", "mac", "cs", "holter", "monitor", "patch", "zio",
        "apple", "watch", "cart", "ge", "philips", "schiller", "mortara", "eli", "nihon",
        "kohden", "cardiosoft", "marquette", "mindray", "lead", "leads", "ecg", "ekg",
        "recorder", "event", "resting", "bedside", "wearable", "alivecor", "withings",
        "cardiovit", "burdick", "welch", "allyn", "edan", "biocare", "bittium", "faros",
    }
)  # fmt: skip
#: SCP-ECG statements PTB-XL style exports put into diagnosis comments.
_SCP_CODES = frozenset(
    {
        "NORM", "MI", "STTC", "CD", "HYP", "IMI", "AMI", "ASMI", "ALMI", "ILMI", "LMI", "PMI",
        "IPLMI", "IPMI", "LAFB", "LPFB", "IRBBB", "CRBBB", "CLBBB", "ILBBB", "LBBB", "RBBB",
        "IVCD", "WPW", "AVB", "1AVB", "2AVB", "3AVB", "LVH", "RVH", "LAO", "RAO", "SEHYP",
        "AFIB", "AFLT", "SR", "STACH", "SBRAD", "SARRH", "PSVT", "SVTAC", "PAC", "PVC", "NDT",
        "NST_", "DIG", "LNGQT", "ISC_", "ISCAL", "ISCIN", "ISCIL", "ISCAS", "ISCLA", "ANEUR",
        "EL", "PACE", "LPR", "LVOLT", "HVOLT", "TAB_", "QWAVE", "LOWT", "NT_", "PRC(S)",
    }
)  # fmt: skip
_DX_KEYS = frozenset({"dx", "diagnosis", "diagnoses", "diagnosis_codes", "scp_codes", "codes"})
_SEX = {"m": "male", "male": "male", "f": "female", "female": "female"}


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


def read_ecg_source(
    uri: str,
    fmt: str,
    *,
    context: dict[str, Any] | None = None,
    limits: ReadLimits = DEFAULT_LIMITS,
) -> EcgSource:
    """Read an ECG file and check that it decodes to samples.

    Whether the amplitudes are physiological is the silver ECG gate's question
    (``ecg_amplitude_in_bounds``), not the reader's: a wrong gain decodes fine.

    Args:
        uri: the WFDB header (``.hea``) or the DICOM file.
        fmt: ``"wfdb"`` or ``"dicom"``.
        context: what an index says about the record (PTB-XL ``mrn``, ``device``,
            ``recording_date``).
        limits: size caps checked before samples are allocated.

    Returns:
        The ECG channels, their rate and a de-identified header.

    Raises:
        InputError: with a stable reason for every kind of broken input.
    """
    context = context or {}
    try:
        if fmt == "dicom":
            source = _from_dicom(read_dicom(uri, limits=limits), uri)
        else:
            source = _from_wfdb(uri, context, limits)
    except MemoryError as exc:  # batch scoring calls this too: a file, not the job, fails
        raise InputError("memory_limit", "decoding needs more memory than allowed", uri) from exc
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


def _verhoeff_ok(number: str) -> bool:
    """Whether a digit string passes the Verhoeff check (every SNOMED CT identifier does)."""
    d = [[0,1,2,3,4,5,6,7,8,9],[1,2,3,4,0,6,7,8,9,5],[2,3,4,0,1,7,8,9,5,6],
         [3,4,0,1,2,8,9,5,6,7],[4,0,1,2,3,9,5,6,7,8],[5,9,8,7,6,0,4,3,2,1],
         [6,5,9,8,7,1,0,4,3,2],[7,6,5,9,8,2,1,0,4,3],[8,7,6,5,9,3,2,1,0,4],
         [9,8,7,6,5,4,3,2,1,0]]  # fmt: skip
    p = [[0,1,2,3,4,5,6,7,8,9],[1,5,7,6,2,8,3,0,9,4],[5,8,0,3,7,9,6,1,4,2],
         [8,9,1,6,0,4,3,5,2,7],[9,4,5,3,1,2,6,8,7,0],[4,2,8,6,5,7,3,9,0,1],
         [2,7,9,3,8,0,6,4,1,5],[7,0,4,6,9,1,3,2,5,8]]  # fmt: skip
    c = 0
    for i, ch in enumerate(reversed(number)):
        c = d[c][p[i % 8][int(ch)]]
    return c == 0


def _diagnosis_codes(value: str, mrn: str | None) -> str | None:
    """Only the codes of a diagnosis comment: ICD-10, SNOMED CT ids and SCP-ECG statements."""
    codes = []
    for token in re.split(r"[\s,;|]+", value.strip()):
        token = token.strip("'\"[]{}()")
        if re.fullmatch(r"[A-TV-Z]\d{2}(\.\d{1,4})?", token) or token.upper() in _SCP_CODES:
            codes.append(token.upper())
        elif re.fullmatch(r"\d{6,18}", token) and _verhoeff_ok(token) and token != mrn:
            codes.append(token)
    return ",".join(codes) or None


def _age(value: str) -> str | None:
    """An age in years as a whole number, ages over 89 stored as 90."""
    match = re.fullmatch(r"\s*>?\s*(\d{1,3})(?:\.\d+)?\s*(?:y|yr|yrs|years?)?\s*", value, re.I)
    if not match:
        return None
    return str(min(int(match.group(1)), AGE_CAP))


def _device(value: str) -> str | None:
    """A device name made only of known device words and model numbers, else None."""
    text = value.strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9 ._/\-]{0,39}", text):
        return None
    for word in re.split(r"[ ._/\-]+", text):
        if not word:
            continue
        if word.isdigit() and len(word) >= 5:
            return None  # a long number in a device name is an id, not a model
        if not any(ch.isdigit() for ch in word) and word.lower() not in _DEVICE_WORDS:
            return None
    return text


def whitelisted_fields(
    header_fields: dict[str, str], comments: tuple[str, ...], mrn: str | None
) -> dict[str, str]:
    """The header-comment fields bronze may keep: age, sex, device, leads, diagnosis codes.

    Everything else (free comments, names, dates, places, clinical free text) is dropped:
    a WFDB comment line can hold anything a technician typed.

    Args:
        header_fields: ``key: value`` comments as parsed by the WFDB reader.
        comments: every comment line (MIT-BIH style ``"69 M 1085 1629 x1"`` gives age/sex).
        mrn: the record's MRN, which a diagnosis code must not equal.
    """
    out: dict[str, str] = {}
    for raw_key, value in header_fields.items():
        key = raw_key.strip().lower().replace(" ", "_")
        if key == "age" and (age := _age(value)):
            out.setdefault("age", age)
        elif key in {"sex", "gender"} and value.strip().lower() in _SEX:
            out.setdefault("sex", _SEX[value.strip().lower()])
        elif key in {"device", "device_model", "recorder"} and (device := _device(value)):
            out.setdefault("device", device)
        elif key in {"leads", "n_leads"} and re.fullmatch(r"\d{1,2}", value.strip()):
            out.setdefault("leads", value.strip())
        elif key in _DX_KEYS and (codes := _diagnosis_codes(value, mrn)):
            out.setdefault("dx", codes)
    for comment in comments:  # MIT-BIH: "<age> <sex> <gain> <gain> x1"
        words = comment.split()
        if ":" not in comment and len(words) >= 2 and words[1].lower() in {"m", "f"}:
            if (age := _age(words[0])) is not None:
                out.setdefault("age", age)
                out.setdefault("sex", _SEX[words[1].lower()])
    return out


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


def _from_wfdb(uri: str, context: dict[str, Any], limits: ReadLimits) -> EcgSource:
    try:
        record = read_wfdb(Path(uri).with_suffix(""), limits=limits)
        signals, names, fs = record.ecg_matrix()
    except InputError:
        raise
    except ValueError as exc:
        reason = "no_ecg_channel" if "no ECG channel" in str(exc) else _wfdb_reason(str(exc))
        raise InputError(reason, _no_comments(str(exc)), uri=uri) from exc
    mrn = context.get("mrn")
    for key, value in record.header_fields.items():
        if _MRN_KEYS.match(key.strip().lower().replace(" ", "_")):
            mrn = mrn or value.strip()
    fields = whitelisted_fields(record.header_fields, record.comments, mrn)
    device = _device(str(context.get("device") or "")) or fields.get("device")
    if device:
        fields["device"] = device
    acquired = record.base_datetime
    if acquired is None and context.get("recording_date"):
        acquired = datetime.fromisoformat(str(context["recording_date"]))
    header = {
        "n_sig": len(record.channels),
        "fs": float(fs),
        "frame_fs": float(record.frame_fs),
        "n_frames": record.n_frames,
        # channel names as the header spells them only when they are a lead or a known
        # signal; a free-text label never passes
        "all_channels": [_channel_label(c, i) for i, c in enumerate(record.channels)],
        "ecg_channels": list(names),
        "checksum_errors": [
            _channel_label(c, i)
            for i, c in enumerate(record.channels)
            if c.source_name in record.checksum_errors
        ],
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


#: Non-ECG signals monitors record beside the ECG, by the names their headers use.
_KNOWN_SIGNALS = re.compile(
    r"(?i)^(abp|art|pap|cvp|icp|resp|pleth|spo2|sao2|co2|etco2|nbp|bp|pulse|hr|temp|"
    r"v[xyz]|ppg|ap|uap|fap)(\s*\d)?$"
)


def _channel_label(channel: Any, index: int) -> str:
    name = str(channel.source_name).strip()
    if channel.is_ecg or _KNOWN_SIGNALS.match(name):
        return name
    return f"CH{index + 1}"


def _no_comments(message: str) -> str:
    """A reader message without anything quoted from the header (only the problem)."""
    return message[:300]


def _device_kind(n_leads: int, device: str | None) -> str:
    if device and "mobile" in device.lower() or (device or "").lower().startswith("kardia"):
        return "mobile_6lead" if n_leads >= 6 else "mobile_1lead"
    if n_leads >= 12:
        return "resting_12lead"
    return "monitor"
