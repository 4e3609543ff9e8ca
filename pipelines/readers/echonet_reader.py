"""Read EchoNet-Dynamic clips: ``Videos/*.avi`` plus ``FileList.csv`` and ``VolumeTracings.csv``.

The index is small and read once on the driver (:func:`load_echonet_index`), then
broadcast; each Spark task reads one AVI with :func:`read_echonet_avi` and gets the same
:class:`~pipelines.readers.dicom_reader.EchoClip` a DICOM echo gives. CSVs are read with
the ``csv`` module, not pandas, so MRNs keep their leading zeros.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from os import PathLike
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipelines.readers.dicom_reader import EchoClip, resize_frames
from pipelines.readers.errors import InputError
from pipelines.readers.limits import DEFAULT_LIMITS, ReadLimits, check_size

FILE_LIST = "FileList.csv"
VOLUME_TRACINGS = "VolumeTracings.csv"
VIDEOS = "Videos"


@dataclass(frozen=True, kw_only=True)
class EchonetEntry:
    """One ``FileList.csv`` row, with the traced keyframes of ``VolumeTracings.csv``.

    Attributes:
        file_name: the clip name without ``.avi`` (the index key).
        ef: ejection fraction in percent.
        esv: end-systolic volume in mL.
        edv: end-diastolic volume in mL.
        fps: frame rate in Hz.
        number_of_frames: frames in the video.
        frame_height: frame height in pixels.
        frame_width: frame width in pixels.
        split: ``"TRAIN"``, ``"VAL"`` or ``"TEST"``.
        acquisition_datetime: hospital export column, when present.
        ed_frame: traced end-diastolic frame (the traced frame with the larger LV volume).
        es_frame: traced end-systolic frame (the smaller one).
        traced_frames: every traced frame in file order.
        mrn: hospital export ``PatientID`` column (kept out of repr; never store it).
    """

    file_name: str
    ef: float | None = None
    esv: float | None = None
    edv: float | None = None
    fps: float | None = None
    number_of_frames: int | None = None
    frame_height: int | None = None
    frame_width: int | None = None
    split: str | None = None
    acquisition_datetime: datetime | None = None
    ed_frame: int | None = None
    es_frame: int | None = None
    traced_frames: tuple[int, ...] = ()
    mrn: str | None = field(default=None, repr=False)


def entry_key(path: str | PathLike[str]) -> str:
    """Index key of a video or ``FileName`` value: the name without directory or ``.avi``."""
    name = Path(path).name
    return name[:-4] if name.lower().endswith(".avi") else name


def _float(value: str | None) -> float | None:
    try:
        number = float(value) if value not in (None, "") else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def _int(value: str | None) -> int | None:
    number = _float(value)
    return int(number) if number is not None else None


def _datetime(value: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(value.strip()) if value else None
    except ValueError:
        return None


def _disc_volume(lines: list[tuple[float, float, float, float]]) -> float:
    """Method of discs (EchoNet's convention): first line is the long axis, then chords."""
    x1, y1, x2, y2 = lines[0]
    length = math.hypot(x2 - x1, y2 - y1)
    chords = np.array([math.hypot(c - a, d - b) for a, b, c, d in lines[1:]])
    return float(np.sum(chords**2) * length / max(len(chords), 1))


def _keyframes(path: Path) -> dict[str, tuple[int | None, int | None, tuple[int, ...]]]:
    """ED/ES frames per clip, from the traced LV volumes (largest = ED, smallest = ES).

    The public file lists ES before ED but that order is a convention, not a guarantee,
    so the volumes decide.
    """
    traces: dict[str, dict[int, list[tuple[float, float, float, float]]]] = defaultdict(dict)
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            frame = _int(row.get("Frame"))
            x1, y1, x2, y2 = (_float(row.get(k)) for k in ("X1", "Y1", "X2", "Y2"))
            if frame is None or x1 is None or y1 is None or x2 is None or y2 is None:
                continue  # an unparseable tracing row only costs that clip its keyframes
            key = entry_key(row.get("FileName") or "")
            traces[key].setdefault(frame, []).append((x1, y1, x2, y2))
    result: dict[str, tuple[int | None, int | None, tuple[int, ...]]] = {}
    for key, frames in traces.items():
        volumes = {frame: _disc_volume(lines) for frame, lines in frames.items() if len(lines) > 1}
        order = tuple(frames)
        if len(volumes) < 2:
            result[key] = (None, None, order)
            continue
        result[key] = (
            max(volumes, key=volumes.__getitem__),
            min(volumes, key=volumes.__getitem__),
            order,
        )
    return result


def load_echonet_index(
    root: str | PathLike[str],
    *,
    file_list: str | PathLike[str] | None = None,
    tracings: str | PathLike[str] | None = None,
) -> dict[str, EchonetEntry]:
    """Read ``FileList.csv`` (and ``VolumeTracings.csv`` when present) into entries.

    Args:
        root: the dataset folder, i.e. the parent of ``Videos/``.
        file_list: explicit ``FileList.csv`` path (default ``root/FileList.csv``).
        tracings: explicit ``VolumeTracings.csv`` path (default ``root/VolumeTracings.csv``;
            a missing file leaves ``ed_frame``/``es_frame`` unset).

    Returns:
        Entries keyed by :func:`entry_key` of ``FileName``. Unparseable numbers become None.

    Raises:
        InputError: ``missing_file`` when the file list does not exist.

    Example:
        >>> index = load_echonet_index("landing/echo/echonet")  # doctest: +SKIP
        >>> clip = read_echonet_avi(path, index.get(entry_key(path)))  # doctest: +SKIP
    """
    base = Path(root)
    list_path = Path(file_list) if file_list is not None else base / FILE_LIST
    trace_path = Path(tracings) if tracings is not None else base / VOLUME_TRACINGS
    if not list_path.is_file():
        raise InputError("missing_file", f"no {FILE_LIST}", str(list_path))
    keyframes = _keyframes(trace_path) if trace_path.is_file() else {}
    index: dict[str, EchonetEntry] = {}
    with list_path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            key = entry_key(row.get("FileName", "") or "")
            if not key:
                continue
            ed, es, traced = keyframes.get(key, (None, None, ()))
            index[key] = EchonetEntry(
                file_name=key,
                ef=_float(row.get("EF")),
                esv=_float(row.get("ESV")),
                edv=_float(row.get("EDV")),
                fps=_float(row.get("FPS")),
                number_of_frames=_int(row.get("NumberOfFrames")),
                frame_height=_int(row.get("FrameHeight")),
                frame_width=_int(row.get("FrameWidth")),
                split=(row.get("Split") or "").strip().upper() or None,
                acquisition_datetime=_datetime(row.get("AcquisitionDateTime")),
                ed_frame=ed,
                es_frame=es,
                traced_frames=traced,
                mrn=(row.get("PatientID") or "").strip() or None,
            )
    return index


def _read_video(
    path: Path, uri: str, limits: ReadLimits = DEFAULT_LIMITS
) -> tuple[np.ndarray, float]:
    """All frames as ``(F, H, W)`` uint8 grey, and the container's frame rate.

    The container's declared size is checked first and the decoded bytes are counted while
    reading, so a video that declares or inflates to more than the caps stops early.
    """
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise InputError("unreadable_video", "OpenCV cannot open the video", uri)
        container_fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        check_size("video frames", declared, limits.max_frames, uri)
        # a BGR frame is decoded before its grey copy: 4 bytes per pixel at the peak
        check_size("decoded video", declared * width * height * 4, limits.max_decoded_bytes, uri)
        frames: list[np.ndarray] = []
        total = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            total += frame.size
            check_size("decoded video", total, limits.max_decoded_bytes, uri)
            check_size("video frames", len(frames) + 1, limits.max_frames, uri)
            # EchoNet stores grey as 3 equal BGR channels; luma of equal channels is exact.
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame)
    finally:
        capture.release()
    if not frames:
        raise InputError("unreadable_video", "the video has no decodable frames", uri)
    if len({f.shape for f in frames}) != 1:
        raise InputError("unreadable_video", "frames differ in size", uri)
    return np.stack(frames).astype(np.uint8, copy=False), container_fps


def read_echonet_avi(
    path: str | PathLike[str],
    entry: EchonetEntry | None,
    *,
    uri: str | None = None,
    limits: ReadLimits = DEFAULT_LIMITS,
) -> EchoClip:
    """Read one EchoNet AVI into an :class:`EchoClip` using its index row.

    Args:
        path: the ``.avi`` file (a local or FUSE-mounted path: OpenCV cannot read bytes).
        entry: its index row, e.g. ``index.get(entry_key(path))``; None means the video has
            no row in ``FileList.csv``.
        uri: name to report; defaults to ``str(path)``.
        limits: size caps checked before and while frames are decoded.

    Returns:
        The clip: grey frames, ``frames_112``, frame times ``k / FPS`` (the index FPS, else
        the container's), no R-wave times, traced ED/ES frames and the MRN from the index.

    Raises:
        InputError: ``not_in_index``, ``missing_file``, ``unreadable_video``,
            ``missing_frame_times`` (no FPS anywhere) or ``header_mismatch`` (frame count
            differs from ``NumberOfFrames``).
    """
    source = Path(path)
    uri = uri if uri is not None else str(path)
    if entry is None:
        raise InputError("not_in_index", f"{entry_key(source)} has no {FILE_LIST} row", uri)
    if not source.is_file():
        raise InputError("missing_file", "file does not exist", uri)
    frames, container_fps = _read_video(source, uri, limits)
    n_frames = int(frames.shape[0])
    if entry.number_of_frames is not None and entry.number_of_frames != n_frames:
        raise InputError(
            "header_mismatch",
            f"video has {n_frames} frames, {FILE_LIST} says {entry.number_of_frames}",
            uri,
        )
    fps = entry.fps or container_fps
    if not fps or fps <= 0:
        raise InputError("missing_frame_times", "no FPS in the index or the container", uri)
    # Real EchoNet has tracings past the last frame; keep the clip, drop the bad keyframe.
    ed = entry.ed_frame if entry.ed_frame is not None and entry.ed_frame < n_frames else None
    es = entry.es_frame if entry.es_frame is not None and entry.es_frame < n_frames else None
    header: dict[str, Any] = {
        "Source": "EchoNet-Dynamic",
        "FileName": entry.file_name,
        "EF": entry.ef,
        "EDV": entry.edv,
        "ESV": entry.esv,
        # the index's free text passes only as its known values
        "Split": entry.split if str(entry.split).upper() in {"TRAIN", "VAL", "TEST"} else None,
        "FPS": entry.fps,
        "ContainerFPS": container_fps,
        "NumberOfFrames": n_frames,
        "Rows": int(frames.shape[1]),
        "Columns": int(frames.shape[2]),
        "TracedFrames": list(entry.traced_frames),
    }
    if entry.acquisition_datetime is not None:
        header["AcquisitionDateTime"] = entry.acquisition_datetime.isoformat()
    return EchoClip(
        uri=uri,
        source_format="echonet_avi",
        frames=frames,
        frames_112=resize_frames(frames),
        frame_times_s=np.arange(n_frames) / float(fps),
        fps=float(fps),
        acquisition_datetime=entry.acquisition_datetime,
        synchronized=False,  # an AVI carries no clock-synchronisation statement
        header=header,
        ed_frame=ed,
        es_frame=es,
        mrn=entry.mrn,
    )
