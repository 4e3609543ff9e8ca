"""Read any WFDB record into per-channel arrays at each channel's true sampling rate.

WFDB records come from very different places: MIT-BIH Holter leads (``MLII``), research
12-leads with lower-case names and a second signal file (PTB: ``.dat`` + ``.xyz``), bedside
monitors whose ECG runs at several samples per frame beside 125 Hz pressure and respiration
(MIMIC: ``212x4``). Reading with ``smooth_frames=False`` keeps every ECG sample instead of
averaging it down to the frame rate. Broken records (missing or truncated signal files, a
header whose sample count does not match the data) raise a ``ValueError`` that names the file,
because wfdb's own errors for them are numpy broadcast errors.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import wfdb

from pipelines.readers.errors import InputError
from pipelines.readers.limits import DEFAULT_LIMITS, ReadLimits, check_size

logger = logging.getLogger(__name__)

#: Canonical spelling of ECG lead names, keyed by the lower-case name without spaces.
_LEADS = {
    "i": "I", "ii": "II", "iii": "III", "avr": "aVR", "avl": "aVL", "avf": "aVF",
    "di": "I", "dii": "II", "diii": "III",  # European notation
    **{f"v{i}": f"V{i}" for i in range(1, 10)}, "v": "V", "v3r": "V3R", "v4r": "V4R",
    "mli": "MLI", "mlii": "MLII", "mliii": "MLIII", "ecg": "ECG", "ekg": "ECG",
    "vx": "vx", "vy": "vy", "vz": "vz",  # Frank leads, spelled as PTB does
}  # fmt: skip
#: Holter and monitor bipolar leads: MCL1-6, CM5, CC5, ML5, ECG1, ECG2, ...
_BIPOLAR = re.compile(r"^(mcl|cm|cc|ml|ecg|ekg)(\d)$")
#: Words a device may put around a lead name ("ECG lead II", "Lead aVR").
_NOISE_WORDS = re.compile(r"^(ecg|ekg)?(lead)?")
#: Physical units of voltage channels, as factors to millivolts.
_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3, "nv": 1e-6}
#: Units WFDB writes when the header gives none (the WFDB default is millivolts).
_UNSPECIFIED_UNITS = {"", "nu"}
#: Bytes per sample of the storage formats whose file size is predictable.
_BYTES_PER_SAMPLE = {
    "8": 1.0, "16": 2.0, "24": 3.0, "32": 4.0, "61": 2.0, "80": 1.0, "160": 2.0,
    "212": 1.5, "310": 4 / 3, "311": 4 / 3,
}  # fmt: skip


@dataclass(frozen=True)
class WfdbChannel:
    """One signal of a record at its own rate.

    Attributes:
        name: normalised lead name for ECG channels ("aVR", "MLII", "MCL1"), else the
            header's name stripped.
        source_name: the name as written in the header.
        units: ``"mV"`` for ECG channels (converted), else the header's units.
        fs: this channel's sampling rate (frame rate x samples per frame).
        is_ecg: whether the channel is an ECG lead (ABP, RESP, PLETH, ... are not).
        signal: float32 samples in ``units``; invalid samples are NaN.
    """

    name: str
    source_name: str
    units: str
    fs: float
    is_ecg: bool
    signal: np.ndarray = field(repr=False)

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return float(self.signal.shape[0] / self.fs)


@dataclass(frozen=True)
class WfdbRecord:
    """A WFDB record read and checked against its header.

    Attributes:
        path: the record path without extension.
        record_name: the header's record name.
        frame_fs: the header's frame rate; channels may run at multiples of it.
        n_frames: frames per signal declared by the header.
        channels: every signal, ECG or not, in header order.
        comments: header comment lines, in order.
        header_fields: the comments that look like ``key: value`` (first occurrence wins;
            keys and values as written, stripped). May hold identifiers: never log it.
        base_datetime: recording start, when the header gives both date and time.
        checksum_errors: names of channels whose samples do not match the header checksum.
    """

    path: str
    record_name: str
    frame_fs: float
    n_frames: int
    channels: tuple[WfdbChannel, ...]
    comments: tuple[str, ...] = field(repr=False)
    header_fields: dict[str, str] = field(repr=False)
    base_datetime: datetime | None
    checksum_errors: tuple[str, ...] = ()

    @property
    def ecg_channels(self) -> tuple[WfdbChannel, ...]:
        """The ECG leads, in header order."""
        return tuple(c for c in self.channels if c.is_ecg)

    @property
    def lead_names(self) -> tuple[str, ...]:
        """Normalised names of the ECG leads."""
        return tuple(c.name for c in self.ecg_channels)

    def ecg_matrix(self) -> tuple[np.ndarray, tuple[str, ...], float]:
        """The ECG leads at the highest ECG rate as one ``(n_samples, n_leads)`` array.

        Leads recorded at a lower rate are left out rather than resampled.

        Returns:
            The float32 mV array, its lead names and its sampling rate.

        Raises:
            ValueError: if the record has no ECG channel.
        """
        ecg = self.ecg_channels
        if not ecg:
            raise ValueError(f"{self.path}: no ECG channel among {self._names()}")
        fs = max(c.fs for c in ecg)
        chosen = [c for c in ecg if c.fs == fs]
        n = min(c.signal.shape[0] for c in chosen)
        stacked = np.stack([c.signal[:n] for c in chosen], axis=1)
        return stacked, tuple(c.name for c in chosen), fs

    def _names(self) -> list[str]:
        return [c.source_name for c in self.channels]


def normalise_lead(name: str) -> str | None:
    """Canonical ECG lead name ("avr" -> "aVR", "ECG lead II" -> "II"), or None if not ECG.

    Args:
        name: a channel name from a header.

    Returns:
        The standard spelling, or None for non-ECG channels (ABP, RESP, PLETH, SpO2, ...).
    """
    key = re.sub(r"[\s_\-]", "", name.strip().lower())
    if key in _LEADS:
        return _LEADS[key]
    if match := _BIPOLAR.match(key):
        return match.group(1).upper().replace("EKG", "ECG") + match.group(2)
    stripped = _NOISE_WORDS.sub("", key, count=1)
    if stripped != key and stripped in _LEADS:
        return _LEADS[stripped]
    return None


def parse_comments(comments: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Header comments of the form ``key: value`` as a dict (headings like "Diagnose:" skipped).

    Args:
        comments: comment lines without the leading ``#``.

    Returns:
        Keys and values as written, stripped; the first occurrence of a key wins.
    """
    fields: dict[str, str] = {}
    for line in comments:
        key, sep, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if sep and key and value and key not in fields:
            fields[key] = value
    return fields


def read_wfdb(
    path: str | Path, *, verify_checksums: bool = True, limits: ReadLimits = DEFAULT_LIMITS
) -> WfdbRecord:
    """Read a WFDB record (header plus signal files) at every channel's own rate.

    Args:
        path: the record path without extension (a trailing ``.hea`` or ``.dat`` is dropped).
        verify_checksums: compare each channel with its header checksum; mismatches are
            logged and listed in ``checksum_errors`` (WFDB's own tools warn, not fail).
        limits: the header and the declared samples are checked against these caps and
            against the signal files' sizes before any sample is read.

    Returns:
        The record with ECG channels in mV and lead names normalised.

    Raises:
        ValueError: naming the file, when the header is missing or unreadable, a signal
            file is missing, shorter than the header declares (truncated) or longer by at
            least a frame (wrong sample count), or wfdb cannot decode the samples.

    Example:
        >>> record = read_wfdb("../shared/data/wfdb/mimic/03700181")
        >>> mcl1 = select_ecg_channel(record)
        >>> mcl1.name, mcl1.fs
        ('MCL1', 500.0)
    """
    base = Path(path)
    if base.suffix.lower() in {".hea", ".dat"}:
        base = base.with_suffix("")
    header_file = base.with_name(base.name + ".hea")
    if not header_file.is_file():
        raise ValueError(f"{header_file}: WFDB header file not found")
    check_size("header file", header_file.stat().st_size, limits.max_header_bytes, str(header_file))
    try:
        header = wfdb.rdheader(str(base))
    except Exception as exc:  # wfdb raises many types for bad headers
        raise ValueError(f"{header_file}: unreadable WFDB header ({_describe(exc)})") from exc
    if getattr(header, "seg_name", None):
        raise ValueError(f"{header_file}: multi-segment records are not supported")
    if not header.n_sig:
        raise ValueError(f"{header_file}: the header declares no signals")
    _check_declared_samples(base.parent, header, header_file, limits)
    _check_signal_files(base.parent, header, header_file)
    try:
        record = wfdb.rdrecord(str(base), smooth_frames=False, physical=False)
        physical = record.dac(expanded=True, return_res=64)
    except Exception as exc:
        files = ", ".join(sorted({str(base.parent / f) for f in header.file_name}))
        raise ValueError(f"{files}: wfdb could not decode the samples ({_describe(exc)})") from exc

    spf = record.samps_per_frame or [1] * record.n_sig
    units = record.units or [""] * record.n_sig
    channels = []
    for i, source in enumerate(record.sig_name):
        lead = normalise_lead(source)
        unit = str(units[i] or "").strip()
        factor = _TO_MV.get(unit.lower(), 1.0 if unit.lower() in _UNSPECIFIED_UNITS else None)
        is_ecg = lead is not None and factor is not None
        scale = factor if is_ecg and factor is not None else 1.0
        signal = np.asarray(physical[i], dtype=np.float64) * scale
        channels.append(
            WfdbChannel(
                name=lead if is_ecg and lead else source.strip(),
                source_name=source,
                units="mV" if is_ecg else unit,
                fs=float(record.fs) * spf[i],
                is_ecg=is_ecg,
                signal=signal.astype(np.float32),
            )
        )
    errors = _checksum_errors(record, header_file) if verify_checksums else ()
    comments = tuple(str(c) for c in (record.comments or []))
    return WfdbRecord(
        path=str(base),
        record_name=str(record.record_name),
        frame_fs=float(record.fs),
        n_frames=int(record.sig_len),
        channels=tuple(channels),
        comments=comments,
        header_fields=parse_comments(comments),
        base_datetime=_base_datetime(record),
        checksum_errors=errors,
    )


def select_ecg_channel(record: WfdbRecord, lead: str | None = None) -> WfdbChannel:
    """The named ECG lead, or the first ECG lead, at its own sampling rate.

    Args:
        record: a record from :func:`read_wfdb`.
        lead: a lead name in any spelling ("ii", "MLII", "avr"); None picks the first.

    Returns:
        The channel, its ``fs`` being that channel's rate (500 Hz for MIMIC's MCL1).

    Raises:
        ValueError: if the record has no ECG channel or not the requested one.
    """
    ecg = record.ecg_channels
    if not ecg:
        raise ValueError(f"{record.path}: no ECG channel among {record._names()}")
    if lead is None:
        return ecg[0]
    wanted = normalise_lead(lead) or lead.strip()
    for channel in ecg:
        if channel.name == wanted:
            return channel
    raise ValueError(
        f"{record.path}: no ECG lead {lead!r}; ECG leads are {list(record.lead_names)}"
    )


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _check_declared_samples(
    folder: Path, header: wfdb.Record, header_file: Path, limits: ReadLimits
) -> None:
    """Declared samples against the cap and, for any format, the signal files' sizes."""
    uri = str(header_file)
    check_size("signals", int(header.n_sig), 4096, uri)
    spf = [int(x or 1) for x in (header.samps_per_frame or [1] * header.n_sig)]
    if header.sig_len is None:
        return  # wfdb infers the length from the file size, which bounds it
    declared = int(header.sig_len) * sum(spf)
    check_size("waveform samples", declared, limits.max_waveform_samples, uri)
    stored = 0
    for name in sorted({str(n) for n in header.file_name}):
        data_file = folder / name
        if data_file.is_file():
            stored += data_file.stat().st_size
    # no WFDB format (not even FLAC, 508-524) stores a sample in fewer than ~1/16 byte
    if stored and declared > stored * 16:
        raise InputError(
            "header_mismatch",
            f"{declared:,} samples declared for {stored:,} signal bytes",
            uri,
        )


def _check_signal_files(folder: Path, header: wfdb.Record, header_file: Path) -> None:
    """Compare each signal file with the bytes its header declares."""
    n = header.n_sig
    spf = header.samps_per_frame or [1] * n
    offsets = header.byte_offset or [None] * n
    per_file: dict[str, list[int]] = {}
    for i, name in enumerate(header.file_name):
        per_file.setdefault(str(name), []).append(i)
    for name, members in per_file.items():
        data_file = folder / name
        if not data_file.is_file():
            raise ValueError(f"{data_file}: signal file named in {header_file.name} is missing")
        sizes = [_BYTES_PER_SAMPLE.get(str(header.fmt[i])) for i in members]
        known = [s for s in sizes if s is not None]
        if header.sig_len is None or len(known) < len(sizes):
            continue  # no declared length, or a compressed format: leave it to wfdb
        frame_bytes = sum(s * spf[i] for s, i in zip(known, members, strict=True))
        start = int(offsets[members[0]] or 0)
        want = start + math.ceil(frame_bytes * header.sig_len)
        have = data_file.stat().st_size
        if have < want:
            frames = int((have - start) // frame_bytes) if frame_bytes else 0
            raise ValueError(
                f"{data_file}: truncated or wrong sample count: holds {have} bytes ({frames}"
                f" frames) but {header_file.name} declares {header.sig_len} frames ({want} bytes)"
            )
        if have >= want + math.ceil(frame_bytes):
            frames = int((have - start) // frame_bytes)
            raise ValueError(
                f"{data_file}: sample count mismatch: holds {frames} frames but "
                f"{header_file.name} declares {header.sig_len}"
            )


def _checksum_errors(record: wfdb.Record, header_file: Path) -> tuple[str, ...]:
    """Channels whose 16-bit sample sum differs from the header (skewed ones skipped)."""
    if not record.checksum:
        return ()
    skew = record.skew or [None] * record.n_sig
    bad = []
    for i, expected in enumerate(record.checksum):
        if expected is None or skew[i]:
            continue
        total = int(np.sum(np.asarray(record.e_d_signal[i], dtype=np.int64)))
        # the 16-bit sum is stored signed (PhysioNet) or unsigned (wfdb-python): compare mod 2**16
        if (total - int(expected)) % 65536 != 0:
            bad.append(str(record.sig_name[i]))
    if bad:
        logger.warning("%s: checksum mismatch in %d channel(s)", header_file.name, len(bad))
    return tuple(bad)


def _base_datetime(record: wfdb.Record) -> datetime | None:
    if record.base_date is None or record.base_time is None:
        return None
    return datetime.combine(record.base_date, record.base_time)
