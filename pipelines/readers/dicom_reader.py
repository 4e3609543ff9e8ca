"""Read one DICOM file (12-lead/general ECG waveform or ultrasound cine) into arrays.

Spark tasks call :func:`read_dicom` on one file at a time. Whatever is wrong with the file
surfaces as :class:`~pipelines.readers.errors.InputError` with a stable reason, never as a
crash or a half-filled result. Patient identifiers never enter the returned header:
:func:`deidentified_header` copies an allowlist of technical attributes, and the MRN travels
in a field of its own so the caller can turn it into the pseudonymous key and drop it.
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from os import PathLike, fspath
from typing import Any, BinaryIO, Literal

import cv2
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.processing import apply_color_lut
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pydicom.valuerep import DA, DT, TM, PersonName

from pipelines.readers.errors import InputError
from pipelines.readers.limits import DEFAULT_LIMITS, ReadLimits, check_size, inflated_size

logger = logging.getLogger(__name__)

#: Side of the frames every downstream echo model reads (EchoNet-Dynamic's size).
FRAME_SIZE = 112

#: How much of an echo's pixel data a read decodes (see :func:`read_dicom`).
PixelMode = Literal["full", "stream", "header"]

ECG_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.9.1.1",  # 12-lead ECG Waveform
        "1.2.840.10008.5.1.4.1.1.9.1.2",  # General ECG Waveform
        "1.2.840.10008.5.1.4.1.1.9.1.3",  # Ambulatory ECG Waveform
        "1.2.840.10008.5.1.4.1.1.9.1.4",  # General 32-bit ECG Waveform
    }
)
US_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image
        "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image
        "1.2.840.10008.5.1.4.1.1.3",  # Ultrasound Multi-frame Image (retired, still exported)
        "1.2.840.10008.5.1.4.1.1.6",  # Ultrasound Image (retired)
    }
)
#: Attributes that identify the patient or staff (PS3.15 basic profile, the ones exports
#: really fill). They never enter a header dict; tests assert it on every reader output.
PHI_TAGS: frozenset[str] = frozenset(
    {
        "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "PatientAddress",
        "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames", "IssuerOfPatientID",
        "PatientMotherBirthName", "PatientTelephoneNumbers", "MedicalRecordLocator",
        "PatientInstitutionResidence", "CurrentPatientLocation", "AdmissionID",
        "AdditionalPatientHistory", "PatientComments", "EthnicGroup", "Occupation",
        "ReferringPhysicianName", "PerformingPhysicianName", "NameOfPhysiciansReadingStudy",
        "RequestingPhysician", "PhysiciansOfRecord", "OperatorsName", "AccessionNumber",
        "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName",
        "DeviceSerialNumber", "StudyID", "RequestAttributesSequence",
    }
)  # fmt: skip
#: Technical attributes copied into the header when present and well-formed: an allow-list
#: in the spirit of the PS3.15 Basic Application Level Confidentiality Profile, keeping only
#: what the pipeline reads. Every value must match its pattern (numbers, UIDs, enumerated
#: code strings), so no free text (descriptions, protocol and device names, labels, private
#: tags) can carry an identifier through; the view is derived into a closed vocabulary.
_NUMBER = r"[+-]?\d+(\.\d+)?([eE][+-]?\d+)?"
_HEADER_PATTERNS: dict[str, str] = {
    "SOPClassUID": r"[0-9.]{1,64}",
    "Modality": r"(US|ECG|HD|IVUS|OT|XA|MR|CT)",
    "ImageType": r"(ORIGINAL|DERIVED|PRIMARY|SECONDARY)",
    "Rows": _NUMBER, "Columns": _NUMBER, "NumberOfFrames": _NUMBER, "SamplesPerPixel": _NUMBER,
    "PhotometricInterpretation": r"(MONOCHROME1|MONOCHROME2|RGB|PALETTE COLOR|YBR_[A-Z0-9_]+)",
    "PlanarConfiguration": _NUMBER, "BitsAllocated": _NUMBER, "BitsStored": _NUMBER,
    "LossyImageCompression": r"0[01]", "FrameIncrementPointer": r"\([0-9A-F]{4},[0-9A-F]{4}\)",
    "FrameTime": _NUMBER, "CineRate": _NUMBER, "RecommendedDisplayFrameRate": _NUMBER,
    "EffectiveDuration": _NUMBER, "HeartRate": _NUMBER, "AcquisitionTimeSynchronized": r"[YN]",
    "SynchronizationFrameOfReferenceUID": r"[0-9.]{1,64}",
    "SynchronizationTrigger": r"(SOURCE|EXTERNAL|PASSTHRU|NO TRIGGER)",
    "TimeSource": r"[A-Z0-9_ ]{1,16}", "TimeDistributionProtocol": r"(NTP|IRIG|GPS|SNTP|PTP)",
    "TimezoneOffsetFromUTC": r"[+-]\d{4}", "BurnedInAnnotation": r"(YES|NO)",
}  # fmt: skip
_HEADER_KEYWORDS: tuple[str, ...] = tuple(_HEADER_PATTERNS)
#: Echo views, canonical name -> words that name it in descriptions and view codes.
_VIEWS: dict[str, tuple[str, ...]] = {
    "A4C": ("a4c", "apical 4", "apical four", "4 chamber", "four chamber", "4ch"),
    "A2C": ("a2c", "apical 2", "apical two", "2 chamber", "two chamber", "2ch"),
    "A3C": ("a3c", "apical 3", "apical three", "3 chamber", "three chamber", "aplax"),
    "A5C": ("a5c", "apical 5", "apical five", "5 chamber", "five chamber"),
    "PLAX": ("plax", "parasternal long"),
    "PSAX": ("psax", "parasternal short", "sax"),
    "SUBCOSTAL": ("subcostal", "sc4c", "subxiphoid"),
}
#: Multiplex group labels the reader knows (anything else is reported as OTHER).
_GROUP_LABELS = frozenset({"RHYTHM", "MEDIAN BEAT", "MEDIAN", "REPRESENTATIVE BEAT"})
_FRAME_TIME = Tag(0x0018, 0x1063)
_FRAME_TIME_VECTOR = Tag(0x0018, 0x1065)
# (bits allocated, sample interpretation) -> little-endian dtype; mu/A-law (MB/AB) are audio.
_WAVEFORM_DTYPES = {
    (8, "SB"): "i1", (8, "UB"): "u1", (16, "SS"): "<i2", (16, "US"): "<u2",
    (32, "SL"): "<i4", (32, "UL"): "<u4",
}  # fmt: skip
_UNIT_TO_MV = {"uV": 1e-3, "mV": 1.0, "V": 1e3, "nV": 1e-6}
# SCP-ECG lead numbers, shared by SCPECG codes (5.6.3-9-N) and MDC codes (2:N, 131328 + N).
_LEAD_NUMBERS = {
    1: "I", 2: "II", 61: "III", 62: "aVR", 63: "aVL", 64: "aVF", 3: "V1", 4: "V2", 5: "V3",
    6: "V4", 7: "V5", 8: "V6", 9: "V7", 66: "V8", 67: "V9", 11: "V3R", 12: "V4R", 65: "-aVR",
}  # fmt: skip
_TEXT_LEADS = {name.lower(): name for name in _LEAD_NUMBERS.values()}


@dataclass(frozen=True, eq=False, kw_only=True)
class EchoClip:
    """An echo cine loop from any source (DICOM or EchoNet AVI), as silver needs it.

    Attributes:
        uri: the source file.
        source_format: ``"dicom"`` or ``"echonet_avi"``.
        frames: ``(F, H, W)`` uint8 grayscale at the stored resolution; None unless asked
            for (``pixels="full"``): ingestion streams frames straight to 112x112.
        frames_112: ``(F, 112, 112)`` uint8, a plain (non-letterboxed) area resize of the
            whole image, so a non-square image is stretched; None for a header-only read.
        frame_times_s: ``(F,)`` seconds from the first frame, as the header states them
            (the echo gate checks that they strictly increase).
        fps: mean frame rate in Hz (``nan`` for a single frame without timing).
        acquisition_datetime: start on the acquiring machine's clock (naive local time).
        synchronized: the device declared its clock synchronised (Acquisition Time
            Synchronized ``Y``).
        header: JSON-able de-identified header.
        r_wave_times_s: R-wave times from (0018,6060), seconds from the first frame, or None.
        ed_frame: traced end-diastolic frame index when the source supplies one.
        es_frame: traced end-systolic frame index when the source supplies one.
        mrn: the patient's MRN, only for deriving the pseudonymous key (kept out of repr).
        shape: ``(F, H, W)`` as stored (from the header when nothing was decoded).
    """

    uri: str
    source_format: Literal["dicom", "echonet_avi"]
    # Arrays and header stay out of repr: a logged clip must not dump megabytes.
    frames: np.ndarray | None = field(repr=False)
    frames_112: np.ndarray | None = field(repr=False)
    frame_times_s: np.ndarray = field(repr=False)
    fps: float
    acquisition_datetime: datetime | None
    synchronized: bool
    header: dict[str, Any] = field(repr=False)
    r_wave_times_s: np.ndarray | None = field(default=None, repr=False)
    ed_frame: int | None = None
    es_frame: int | None = None
    mrn: str | None = field(default=None, repr=False)
    shape: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self) -> None:
        if self.frames is not None:
            # frozen: the stored frames, when kept, are the shape's one source of truth
            object.__setattr__(self, "shape", tuple(int(d) for d in self.frames.shape[:3]))

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return int(self.shape[0])


#: The DICOM echo result is the shared clip type.
DicomEcho = EchoClip


@dataclass(frozen=True, eq=False, kw_only=True)
class DicomEcg:
    """A DICOM ECG waveform, calibrated to millivolts with standard lead names.

    Attributes:
        uri: the source file.
        signals_mv: ``(n_samples, n_leads)`` float32 millivolts.
        lead_names: normalised names (``"I"``, ``"aVR"``, ``"V1"``, ...), one per column.
        fs: sampling frequency in Hz.
        acquisition_datetime: start on the cart's clock (naive local time).
        synchronized: the cart declared its clock synchronised.
        header: JSON-able de-identified header.
        mrn: the patient's MRN, only for deriving the pseudonymous key (kept out of repr).
    """

    uri: str
    signals_mv: np.ndarray = field(repr=False)
    lead_names: tuple[str, ...]
    fs: float
    acquisition_datetime: datetime | None
    synchronized: bool
    header: dict[str, Any] = field(repr=False)
    mrn: str | None = field(default=None, repr=False)


# --- header --------------------------------------------------------------------------------


def patient_mrn(ds: Dataset) -> str | None:
    """The Patient ID (MRN), for the caller to hash into the pseudonymous key; never store it."""
    value = str(ds.get("PatientID", "") or "").strip()
    return value or None


def acquisition_datetime(ds: Dataset) -> datetime | None:
    """When the acquisition started, on the device's clock, with fractional seconds.

    Tries Acquisition DateTime, then Acquisition Date + Time, Content Date + Time and Study
    Date + Time. A UTC offset inside a DT value is dropped and the wall-clock time kept,
    because devices mostly write local time without one; Timezone Offset From UTC
    (0008,0201), when present, is copied into the header by :func:`deidentified_header`.

    Returns:
        A naive datetime, or None when no pair parses.
    """
    value = ds.get("AcquisitionDateTime")
    if value:
        try:
            return DT(str(value)).replace(tzinfo=None)
        except ValueError:
            pass  # malformed DT: fall back to the date/time pairs
    for date_kw, time_kw in (
        ("AcquisitionDate", "AcquisitionTime"),
        ("ContentDate", "ContentTime"),
        ("StudyDate", "StudyTime"),
    ):
        day, clock = ds.get(date_kw), ds.get(time_kw)
        if day and clock:
            try:
                return datetime.combine(DA(str(day)), TM(str(clock)))
            except ValueError:
                continue
    return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, MultiValue | list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, BaseTag):  # before int: a tag is an int subclass
        return f"({value.group:04X},{value.element:04X})"
    if isinstance(value, str):  # also UID, DA, TM and the other string VRs
        return str(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    return str(value)


def _phi_strings(ds: Dataset) -> list[str]:
    """Identifier strings that must not leak through free-text technical attributes."""
    values: list[str] = []
    for keyword in ("PatientName", "PatientID", "OtherPatientIDs", "PatientBirthDate"):
        value = ds.get(keyword)
        if isinstance(value, PersonName):
            values += [part for part in re.split(r"[\^=\s]+", str(value)) if part]
        elif isinstance(value, MultiValue):
            values += [str(v) for v in value]
        elif value:
            values.append(str(value))
    return [v for v in values if len(v) >= 3]  # short parts ("M", "Jo") are not identifying


def _redact(value: Any, phi: Sequence[str]) -> Any:
    if isinstance(value, dict):
        return {key: _redact(v, phi) for key, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, phi) for v in value]
    if isinstance(value, str):
        for secret in phi:
            value = re.sub(re.escape(secret), "[removed]", value, flags=re.IGNORECASE)
    return value


def deidentified_header(ds: Dataset) -> dict[str, Any]:
    """A JSON-able dict of the technical header fields, free of patient identifiers.

    Only allowlisted attributes are copied (never any of :data:`PHI_TAGS`); free text that
    happens to contain the patient's name, ID or birth date is redacted as well.

    Args:
        ds: a parsed DICOM dataset.

    Returns:
        Keys are DICOM keywords plus derived ones: ``TransferSyntaxUID``, ``SOPClassName``,
        ``AcquisitionDateTime`` (ISO 8601), ``PixelSpacingCm``, ``ViewHints``,
        ``NumberOfRWaves``, ``FrameTimeVectorLength`` and, for waveforms, ``Waveforms`` (one
        summary per multiplex group with ``ChannelNames`` normalised).
    """
    header: dict[str, Any] = {}
    for keyword, pattern in _HEADER_PATTERNS.items():
        value = ds.get(keyword)
        if value is None or value == "":
            continue
        value = _jsonable(value)
        items = value if isinstance(value, list) else [value]
        kept = [v for v in items if re.fullmatch(pattern, str(v).strip())]
        if kept and (keyword == "ImageType" or len(kept) == len(items)):
            header[keyword] = kept if isinstance(value, list) else kept[0]
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        header["TransferSyntaxUID"] = str(meta.TransferSyntaxUID)
    if "SOPClassUID" in ds:
        header["SOPClassName"] = UID(str(ds.SOPClassUID)).name
    when = acquisition_datetime(ds)
    if when is not None:
        header["AcquisitionDateTime"] = when.isoformat()
    if "RWaveTimeVector" in ds:
        header["NumberOfRWaves"] = int(np.atleast_1d(ds.RWaveTimeVector).size)
    if "FrameTimeVector" in ds:
        header["FrameTimeVectorLength"] = int(np.atleast_1d(ds.FrameTimeVector).size)
    view = echo_view(ds)
    if view is not None:
        header["view"] = view
    regions = ds.get("SequenceOfUltrasoundRegions", [])
    if regions and regions[0].get("PhysicalUnitsXDirection") == 3:  # 3: centimetres
        header["PixelSpacingCm"] = [
            float(regions[0].PhysicalDeltaX),
            float(regions[0].PhysicalDeltaY),
        ]
    if "WaveformSequence" in ds:
        header["Waveforms"] = [_group_summary(group) for group in ds.WaveformSequence]
    redacted: dict[str, Any] = _redact(header, _phi_strings(ds))
    return redacted


def echo_view(ds: Dataset) -> str | None:
    """The echo view in a closed vocabulary (``A4C``, ``PLAX``, ...), or None.

    Read from the View Code Sequence's meanings, the series description and the protocol
    name; only the canonical name is kept, never the text it was found in.
    """
    texts = [str(item.get("CodeMeaning", "")) for item in ds.get("ViewCodeSequence", [])]
    texts += [str(ds.get("SeriesDescription", "")), str(ds.get("ProtocolName", ""))]
    for text in texts:
        low = re.sub(r"[-_]", " ", text.lower())
        for name, words in _VIEWS.items():
            if any(re.search(rf"(?<![a-z0-9]){re.escape(w)}(?![a-z0-9])", low) for w in words):
                return name
    return None


def _group_label(group: Dataset) -> str:
    label = str(group.get("MultiplexGroupLabel", "")).strip().upper()
    return label if label in _GROUP_LABELS else ("OTHER" if label else "")


def _group_summary(group: Dataset) -> dict[str, Any]:
    channels = group.get("ChannelDefinitionSequence", [])
    units = {
        str(ch.ChannelSensitivityUnitsSequence[0].get("CodeValue", ""))
        for ch in channels
        if ch.get("ChannelSensitivityUnitsSequence")
    }
    return {
        "MultiplexGroupLabel": _group_label(group),
        "NumberOfWaveformChannels": _jsonable(group.get("NumberOfWaveformChannels")),
        "NumberOfWaveformSamples": _jsonable(group.get("NumberOfWaveformSamples")),
        "SamplingFrequency": _jsonable(group.get("SamplingFrequency")),
        "WaveformBitsAllocated": _jsonable(group.get("WaveformBitsAllocated")),
        "WaveformSampleInterpretation": str(group.get("WaveformSampleInterpretation", "")),
        "ChannelNames": [_safe_lead(lead_name(ch), i) for i, ch in enumerate(channels)],
        "ChannelSensitivityUnits": sorted(u for u in units if u in _UNIT_TO_MV),
    }


# --- dispatch ------------------------------------------------------------------------------


def read_dicom(
    path: str | PathLike[str] | BinaryIO,
    *,
    uri: str | None = None,
    limits: ReadLimits = DEFAULT_LIMITS,
    pixels: PixelMode = "full",
) -> DicomEcg | EchoClip:
    """Read an ECG waveform or an ultrasound image DICOM file, dispatching on SOP Class.

    Args:
        path: the file, or an open binary file (e.g. ``io.BytesIO`` of Spark's
            ``binaryFile`` content).
        uri: name to report in results and errors; defaults to ``str(path)``.
        limits: size caps checked before anything is allocated.
        pixels: for an echo, ``"full"`` keeps the stored frames and their 112x112 resize;
            ``"stream"`` decodes frame by frame straight to 112x112, so memory is bounded by
            the output clip plus one frame (ingestion); ``"header"`` decodes nothing but still
            checks the declared sizes against the stored pixel bytes (bronze).

    Returns:
        :class:`DicomEcg` for 12-lead / general / ambulatory ECG waveforms, :class:`EchoClip`
        for ultrasound (multi-frame) images.

    Raises:
        InputError: ``missing_file``, ``io_error``, ``not_dicom``, ``unsupported_sop_class``,
            ``size_limit_exceeded``, ``memory_limit``, ``burned_in_annotation`` or any
            reason of the ECG and echo readers.

    Example:
        >>> record = read_dicom("landing/echo/dicom/echo_0001.dcm")  # doctest: +SKIP
        >>> record.frames_112.shape  # doctest: +SKIP
        (120, 112, 112)
    """
    if uri is None and isinstance(path, str | PathLike):
        uri = fspath(path)
    elif uri is None:
        uri = str(getattr(path, "name", "<stream>"))
    try:
        return _read_dicom(path, uri, limits, pixels)
    except MemoryError as exc:
        raise InputError("memory_limit", "decoding needs more memory than allowed", uri) from exc


def _read_dicom(
    path: str | PathLike[str] | BinaryIO, uri: str, limits: ReadLimits, pixels: PixelMode
) -> DicomEcg | EchoClip:
    with _quiet_pydicom() as caught:
        ds = _dcmread(path, uri, limits)
        # A transfer cut short inside encapsulated pixel data makes pydicom drop the element
        # with only a warning; remember it so "no pixel data" can be reported as truncation.
        hit_eof = any("End of file" in str(w.message) for w in caught)
        sop = str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", ""))
        try:
            if sop in ECG_SOP_CLASSES:
                return _read_ecg(ds, uri, limits)
            if sop in US_SOP_CLASSES:
                return _read_echo(ds, uri, hit_eof=hit_eof, limits=limits, pixels=pixels)
        except InputError:
            raise
        except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
            # pydicom raises these for malformed values deep inside element access; they
            # are properties of the file, so they go to quarantine, not fail the task.
            logger.warning("malformed header in %s: %s", uri, type(exc).__name__)
            raise InputError("missing_attribute", _short(exc), uri) from exc
    name = UID(sop).name if sop else "no SOP Class UID"
    raise InputError("unsupported_sop_class", f"{sop or '-'} ({name})", uri)


@contextmanager
def _quiet_pydicom() -> Iterator[list[warnings.WarningMessage]]:
    """Collect pydicom's warnings and switch off its value validation while reading.

    pydicom validates values lazily on access and logs offending values verbatim (e.g.
    "Invalid value for VR DA: '<birth date>'"), which would put PHI into worker logs.
    """
    previous = pydicom.config.settings.reading_validation_mode
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught
    finally:
        pydicom.config.settings.reading_validation_mode = previous


def check_dicom_file(
    path: str | PathLike[str] | BinaryIO, uri: str, limits: ReadLimits = DEFAULT_LIMITS
) -> None:
    """File size and, for the deflated transfer syntax, the inflated size, before parsing.

    Raises:
        InputError: ``missing_file``, ``io_error`` or ``size_limit_exceeded``.
    """
    if not isinstance(path, str | PathLike):
        return
    try:
        size = os.stat(path).st_size
    except FileNotFoundError as exc:
        raise InputError("missing_file", "file does not exist", uri) from exc
    except OSError as exc:
        raise InputError("io_error", type(exc).__name__, uri) from exc
    check_size("file", size, limits.max_file_bytes, uri)
    try:
        with open(path, "rb") as fh:
            pydicom.filereader.read_preamble(fh, force=True)
            file_meta = pydicom.filereader._read_file_meta_info(fh)
            if str(file_meta.get("TransferSyntaxUID", "")) == DeflatedExplicitVRLittleEndian:
                inflated_size(fh, limits.max_inflated_bytes, uri)
    except InputError:
        raise
    except Exception:  # noqa: BLE001 - dcmread reports the precise parse failure next
        return


def _dcmread(path: str | PathLike[str] | BinaryIO, uri: str, limits: ReadLimits) -> Dataset:
    """Parse the file, mapping every failure to an :class:`InputError`."""
    check_dicom_file(path, uri, limits)
    try:
        ds = pydicom.dcmread(path)
    except MemoryError:
        raise
    except FileNotFoundError as exc:
        raise InputError("missing_file", "file does not exist", uri) from exc
    except InvalidDicomError as exc:
        raise InputError("not_dicom", "no DICOM Part 10 preamble and prefix", uri) from exc
    except OSError as exc:
        raise InputError("io_error", type(exc).__name__, uri) from exc
    except Exception as exc:  # any other parser failure: the bytes are not DICOM
        raise InputError("not_dicom", _short(exc), uri) from exc
    if "TransferSyntaxUID" not in ds.file_meta:
        raise InputError("not_dicom", "file meta has no Transfer Syntax UID", uri)
    return ds


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def _number(ds: Dataset, keyword: str) -> float | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    return float(value)


def _required_int(ds: Dataset, keyword: str, uri: str) -> int:
    value = ds.get(keyword)
    if value is None or value == "":
        raise InputError("missing_attribute", f"{keyword} is missing", uri)
    return int(value)


# --- ECG -----------------------------------------------------------------------------------


def lead_name(channel: Dataset) -> str:
    """Normalised lead name of a Channel Definition item (``"I"``, ``"aVF"``, ``"V6"``, ...).

    Uses the SCP-ECG or MDC code when present, else the code meaning or Channel Label with
    "Lead" and parenthetical remarks stripped (``"Lead I (Einthoven)"`` -> ``"I"``).
    """
    source = channel.get("ChannelSourceSequence")
    item = source[0] if source else Dataset()
    code = str(item.get("CodeValue", ""))
    scheme = str(item.get("CodingSchemeDesignator", ""))
    number: int | None = None
    if scheme.startswith("SCPECG") and (m := re.fullmatch(r"5\.6\.3-9-(\d+)", code)):
        number = int(m.group(1))
    elif scheme == "MDC" and (m := re.fullmatch(r"2:(\d+)", code)):
        number = int(m.group(1))
    elif scheme == "MDC" and code.isdigit() and 131328 < int(code) < 131328 + 256:
        number = int(code) - 131328
    if number in _LEAD_NUMBERS:
        return _LEAD_NUMBERS[number]
    text = str(item.get("CodeMeaning", "") or channel.get("ChannelLabel", "") or code)
    cleaned = re.sub(r"\(.*?\)", "", text)
    cleaned = re.sub(r"(?i)^\s*(ecg\s+)?lead\s*", "", cleaned).strip()
    return _TEXT_LEADS.get(cleaned.replace(" ", "").lower(), cleaned or text)


def _pick_group(groups: Sequence[Dataset]) -> int:
    """The rhythm strip: the group labelled RHYTHM, else the longest one."""
    for i, group in enumerate(groups):
        if str(group.get("MultiplexGroupLabel", "")).strip().upper() == "RHYTHM":
            return i
    return max(range(len(groups)), key=lambda i: int(groups[i].get("NumberOfWaveformSamples", 0)))


def _channel_scale_mv(channel: Dataset, index: int, uri: str) -> tuple[float, float]:
    """(multiplier, offset) turning stored counts of one channel into millivolts."""
    sensitivity = _number(channel, "ChannelSensitivity")
    if sensitivity is None:
        raise InputError("missing_attribute", f"channel {index} has no sensitivity", uri)
    correction = _number(channel, "ChannelSensitivityCorrectionFactor") or 1.0
    baseline = _number(channel, "ChannelBaseline") or 0.0
    units = channel.get("ChannelSensitivityUnitsSequence")
    unit = str(units[0].get("CodeValue", "")) if units else ""
    if unit not in _UNIT_TO_MV:
        raise InputError("unsupported_waveform", f"channel {index} unit {unit!r}", uri)
    # PS3.3 C.10.9.1.4: value = stored x sensitivity x correction, baseline in the same
    # units (pydicom's waveform_array applies it identically).
    return sensitivity * correction * _UNIT_TO_MV[unit], baseline * _UNIT_TO_MV[unit]


def _safe_lead(name: str, index: int) -> str:
    """A known lead name, or a neutral channel name (a free-text label never passes)."""
    return name if name in _LEAD_NUMBERS.values() else f"CH{index + 1}"


def _read_ecg(ds: Dataset, uri: str, limits: ReadLimits = DEFAULT_LIMITS) -> DicomEcg:
    groups = ds.get("WaveformSequence")
    if not groups:
        raise InputError("missing_attribute", "no Waveform Sequence", uri)
    group = groups[_pick_group(groups)]
    n_channels = _required_int(group, "NumberOfWaveformChannels", uri)
    n_samples = _required_int(group, "NumberOfWaveformSamples", uri)
    bits = _required_int(group, "WaveformBitsAllocated", uri)
    fs = _number(group, "SamplingFrequency")
    if not fs or fs <= 0:
        raise InputError("missing_attribute", "no positive SamplingFrequency", uri)
    check_size("waveform", n_channels * n_samples, limits.max_waveform_samples, uri)
    interpretation = str(group.get("WaveformSampleInterpretation", ""))
    code = _WAVEFORM_DTYPES.get((bits, interpretation))
    if code is None:
        raise InputError("unsupported_waveform", f"{bits} bit {interpretation!r} samples", uri)
    data = group.get("WaveformData")
    expected = n_channels * n_samples * bits // 8
    if data is None or len(data) < expected:
        got = 0 if data is None else len(data)
        raise InputError("truncated_signal", f"{got} of {expected} waveform bytes", uri)
    if len(data) > expected + 1:  # one byte of even-length padding is legal
        raise InputError(
            "header_mismatch",
            f"{len(data)} waveform bytes for {n_samples} samples x {n_channels} channels",
            uri,
        )
    channels = group.get("ChannelDefinitionSequence", [])
    if len(channels) != n_channels:
        raise InputError(
            "header_mismatch", f"{len(channels)} channel definitions, {n_channels} channels", uri
        )
    dtype = np.dtype(code)
    if not ds.file_meta.TransferSyntaxUID.is_little_endian:
        dtype = dtype.newbyteorder(">")
    counts = np.frombuffer(data[:expected], dtype=dtype).reshape(n_samples, n_channels)
    scales = np.array([_channel_scale_mv(ch, i, uri) for i, ch in enumerate(channels)])
    signals = (counts * scales[:, 0] + scales[:, 1]).astype(np.float32)
    names = tuple(_safe_lead(lead_name(ch), i) for i, ch in enumerate(channels))
    if len(set(names)) != len(names):
        raise InputError("header_mismatch", f"duplicate lead names {names}", uri)
    header = deidentified_header(ds)
    header["SelectedWaveform"] = _group_label(group)
    header["SamplingFrequency"] = fs
    header["ChannelNames"] = list(names)
    return DicomEcg(
        uri=uri,
        signals_mv=signals,
        lead_names=names,
        fs=fs,
        acquisition_datetime=acquisition_datetime(ds),
        synchronized=str(ds.get("AcquisitionTimeSynchronized", "")).upper() == "Y",
        header=header,
        mrn=patient_mrn(ds),
    )


# --- echo ----------------------------------------------------------------------------------


def frame_times_s(ds: Dataset, n_frames: int, uri: str) -> tuple[np.ndarray, float]:
    """Frame times (s from the first frame) and mean fps from the Cine module.

    Follows Frame Increment Pointer: Frame Time Vector (0018,1065) holds per-frame
    increments in ms (first entry 0) and is summed; Frame Time (0018,1063) gives ``k * T``.
    Without either, Cine Rate or Recommended Display Frame Rate is used.

    Raises:
        InputError: ``nonfinite_frame_times`` for NaN or infinite times,
            ``header_mismatch`` when the vector length differs from the frame count,
            ``missing_frame_times`` for a multi-frame clip without timing.
    """
    pointer = ds.get("FrameIncrementPointer")
    pointers = set(pointer) if isinstance(pointer, MultiValue) else {pointer}
    vector = ds.get("FrameTimeVector")
    frame_time = _number(ds, "FrameTime")
    if vector is not None and (_FRAME_TIME_VECTOR in pointers or frame_time is None):
        steps = np.atleast_1d(np.asarray(vector, dtype=np.float64))
        if steps.size != n_frames:
            raise InputError(
                "header_mismatch", f"{steps.size} frame time steps for {n_frames} frames", uri
            )
        times_ms = np.cumsum(steps) - steps[0]
        fps = (n_frames - 1) * 1000.0 / times_ms[-1] if n_frames > 1 and times_ms[-1] else 0.0
    elif frame_time is not None:
        times_ms = np.arange(n_frames) * frame_time
        fps = 1000.0 / frame_time if frame_time else 0.0
    else:
        rate = _number(ds, "CineRate") or _number(ds, "RecommendedDisplayFrameRate")
        if n_frames == 1 and not rate:
            return np.zeros(1), math.nan
        if not rate:
            raise InputError("missing_frame_times", "no Frame Time, vector or Cine Rate", uri)
        times_ms, fps = np.arange(n_frames) * 1000.0 / rate, rate
    if not np.all(np.isfinite(times_ms)):
        raise InputError("nonfinite_frame_times", "NaN or infinite frame times", uri)
    # times that do not strictly increase decode fine; the echo gate
    # (echo_frame_times_increasing) holds the clip back from gold
    return times_ms / 1000.0, float(fps)


def to_grayscale(pixels: np.ndarray, photometric: str, *, top: float | None = None
                 ) -> np.ndarray:  # fmt: skip
    """``(F, H, W[, 3])`` RGB or monochrome pixels to ``(F, H, W)`` uint8 luminance.

    Colour becomes BT.601 luma (0.299 R + 0.587 G + 0.114 B), i.e. the Y of YBR_FULL;
    MONOCHROME1 is inverted so that bright always means echogenic. Above 8 bits, ``top`` is
    the clip's largest (offset) value when the frames come one at a time.
    """
    if pixels.ndim == 4:
        n, h, w, _ = pixels.shape
        flat = np.ascontiguousarray(pixels.reshape(n * h, w, 3))
        if flat.dtype != np.uint8:
            flat = _scale_to_uint8(flat, top)
        return np.asarray(cv2.cvtColor(flat, cv2.COLOR_RGB2GRAY)).reshape(n, h, w)
    gray = _scale_to_uint8(pixels, top)
    return 255 - gray if photometric == "MONOCHROME1" else gray


def _uint8_scale_top(pixels: np.ndarray) -> float:
    """The largest value of ``pixels`` after the signed offset (what sets the bit depth)."""
    if pixels.dtype == np.uint8 or not pixels.size:
        return 0.0
    top = float(pixels.max())
    if np.issubdtype(pixels.dtype, np.signedinteger):
        top -= float(np.iinfo(pixels.dtype).min)
    return top


def _scale_to_uint8(pixels: np.ndarray, top: float | None = None) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    values = pixels.astype(np.float64)
    if np.issubdtype(pixels.dtype, np.signedinteger):
        values -= np.iinfo(pixels.dtype).min
    if top is None:
        top = float(values.max()) if values.size else 0.0
    bits = max(8, math.ceil(math.log2(top + 1))) if top > 0 else 8
    # Shift by the used bit depth rather than min-max stretch: brightness stays comparable
    # between clips of one device.
    return np.asarray(np.floor(values / 2 ** (bits - 8)), dtype=np.uint8)


def resize_frames(frames: np.ndarray, size: int = FRAME_SIZE) -> np.ndarray:
    """Area-resize every ``(H, W)`` frame to ``(size, size)`` (whole image, no letterbox)."""
    if frames.shape[1:] == (size, size):
        return frames.copy()
    return np.stack(
        [cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames]
    ).reshape(frames.shape[0], size, size)


def _check_pixel_bytes(ds: Dataset, uri: str, *, n_frames: int, hit_eof: bool) -> None:
    """Pixel Data is there and (natively encoded) holds every declared byte."""
    if "PixelData" not in ds:
        if hit_eof:
            raise InputError("pixel_data_truncated", "file ends inside Pixel Data", uri)
        raise InputError("no_pixel_data", "image has no Pixel Data", uri)
    if not ds.file_meta.TransferSyntaxUID.is_compressed:
        rows = _required_int(ds, "Rows", uri)
        cols = _required_int(ds, "Columns", uri)
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = _required_int(ds, "BitsAllocated", uri)
        expected = rows * cols * n_frames * spp * max(bits, 8) // 8
        if len(ds.PixelData) < expected:
            raise InputError(
                "pixel_data_truncated", f"{len(ds.PixelData)} of {expected} pixel bytes", uri
            )


def _decoded_frames(ds: Dataset, uri: str) -> Iterator[tuple[np.ndarray, str]]:
    """Each frame as the codec returns it (RGB or monochrome), with its photometric."""
    syntax = ds.file_meta.TransferSyntaxUID
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as exc:
        raise InputError("decode_failed", f"no decoder for {syntax.name}", uri) from exc
    try:
        # raw=False: YBR_FULL/YBR_FULL_422 (and J2K's ICT/RCT) come back as RGB.
        for pixels, meta in decoder.iter_array(ds):
            photometric = str(meta.get("photometric_interpretation", ""))
            if photometric == "PALETTE COLOR":
                pixels, photometric = apply_color_lut(pixels, ds), "RGB"
            yield pixels, photometric
    except InputError:
        raise
    except Exception as exc:  # codecs raise all kinds of errors on corrupt streams
        raise InputError("decode_failed", _short(exc), uri) from exc


def _decode_frames(
    ds: Dataset, uri: str, *, n_frames: int, keep_full: bool = True
) -> tuple[np.ndarray | None, np.ndarray]:
    """The stored frames (when ``keep_full``) and their 112x112 resize, one frame at a time.

    Only the output clip and one decoded frame are held, never the whole decoded input: a
    500 MB cine needs the 112x112 clip, not 500 MB of frames plus their grey and float copies.
    Above 8 bits a first pass finds the clip's bit depth so every frame is scaled alike.
    The pixel bytes are checked (:func:`_check_pixel_bytes`) before.
    """
    rows = _required_int(ds, "Rows", uri)
    cols = _required_int(ds, "Columns", uri)
    top = None
    if int(ds.get("BitsAllocated", 8) or 8) > 8:
        top = max((_uint8_scale_top(px) for px, _ in _decoded_frames(ds, uri)), default=0.0)
    full = np.empty((n_frames, rows, cols), np.uint8) if keep_full else None
    small = np.empty((n_frames, FRAME_SIZE, FRAME_SIZE), np.uint8)
    count = 0
    for pixels, photometric in _decoded_frames(ds, uri):
        if count >= n_frames:
            count += 1
            break
        gray = to_grayscale(pixels[None], photometric, top=top)[0]
        if gray.shape != (rows, cols):
            raise InputError(
                "decode_failed", f"decoded frame {gray.shape}, header says {(rows, cols)}", uri
            )
        if full is not None:
            full[count] = gray
        small[count] = resize_frames(gray[None])[0]
        count += 1
    if count != n_frames:
        raise InputError("decode_failed", f"decoded {count} frames, header says {n_frames}", uri)
    return full, small


def _check_declared_pixels(
    ds: Dataset, uri: str, n_frames: int, limits: ReadLimits, pixels: PixelMode = "full"
) -> None:
    """Declared frames x rows x columns x samples against the caps and the stored bytes."""
    check_size("NumberOfFrames", n_frames, limits.max_frames, uri)
    if "PixelData" not in ds:
        return  # reported as no_pixel_data / pixel_data_truncated by the decoder
    rows = _required_int(ds, "Rows", uri)
    cols = _required_int(ds, "Columns", uri)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 8) or 8)
    if min(rows, cols, spp, bits) < 1 or spp > 4 or bits > 64:
        raise InputError("header_mismatch", f"image {rows}x{cols}x{spp} at {bits} bits", uri)
    # a full decode is capped as if it held the codec's array, its grey copy and (above 8
    # bits) a float64 copy of every frame; a streamed one holds one frame of those and the
    # 112x112 output clip, so a long cine is fine while a huge frame is not
    per_sample = max(bits, 8) // 8 + (8 if bits > 8 else 1)
    frame = rows * cols * spp * per_sample
    held = n_frames * frame if pixels == "full" else frame + n_frames * FRAME_SIZE**2
    check_size("decoded pixels", held, limits.max_decoded_bytes, uri)
    data = ds.get("PixelData")
    if data is not None and ds.file_meta.TransferSyntaxUID.is_compressed:
        try:
            n_fragments, _ = pydicom.encaps.parse_fragments(data)
        except Exception as exc:  # noqa: BLE001 - a broken item structure
            raise InputError("decode_failed", "malformed encapsulated pixel data", uri) from exc
        if n_fragments < n_frames:
            raise InputError(
                "header_mismatch", f"{n_fragments} pixel fragments for {n_frames} frames", uri
            )


def _read_echo(
    ds: Dataset,
    uri: str,
    *,
    hit_eof: bool,
    limits: ReadLimits = DEFAULT_LIMITS,
    pixels: PixelMode = "full",
) -> EchoClip:
    if str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES":
        # text burned into the pixels (names, dates, MRNs) cannot be removed from the
        # header; such clips are never promoted as clean
        raise InputError("burned_in_annotation", "BurnedInAnnotation is YES", uri)
    declared = ds.get("NumberOfFrames")
    n_frames = 1 if declared is None or declared == "" else int(declared)
    if n_frames < 1:
        raise InputError("header_mismatch", f"NumberOfFrames {n_frames}", uri)
    _check_declared_pixels(ds, uri, n_frames, limits, pixels)
    # Timing first: it is cheap, and a bad vector makes decoding pointless.
    times, fps = frame_times_s(ds, n_frames, uri)
    _check_pixel_bytes(ds, uri, n_frames=n_frames, hit_eof=hit_eof)
    frames, frames_112 = None, None
    if pixels != "header":
        frames, frames_112 = _decode_frames(ds, uri, n_frames=n_frames, keep_full=pixels == "full")
    shape = (n_frames, _required_int(ds, "Rows", uri), _required_int(ds, "Columns", uri))
    r_wave = ds.get("RWaveTimeVector")
    r_wave_s = None
    if r_wave is not None and np.atleast_1d(r_wave).size > limits.max_frames:
        check_size("RWaveTimeVector", np.atleast_1d(r_wave).size, limits.max_frames, uri)
    if r_wave is not None and r_wave != "":
        r_wave_s = np.atleast_1d(np.asarray(r_wave, dtype=np.float64)) / 1000.0
    return EchoClip(
        uri=uri,
        source_format="dicom",
        frames=frames,
        frames_112=frames_112,
        frame_times_s=times,
        fps=fps,
        acquisition_datetime=acquisition_datetime(ds),
        synchronized=str(ds.get("AcquisitionTimeSynchronized", "")).upper() == "Y",
        header=deidentified_header(ds),
        r_wave_times_s=r_wave_s,
        mrn=patient_mrn(ds),
        shape=shape,
    )
