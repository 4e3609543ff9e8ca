"""Echo clips in the EchoNet-Dynamic layout: 112×112 AVIs, ``FileList.csv``, ``VolumeTracings.csv``.

Mirrors the public dataset (Ouyang et al., 2020) so loaders written for it work unchanged,
plus the two columns a hospital export adds (``PatientID`` = MRN, ``AcquisitionDateTime``),
which makes the CSV a second carrier of synthetic PHI that ingestion must handle.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from cardiolake.cohort.echo_phantom import PhantomEcho, disc_volume_ml, lv_chords
from cardiolake.cohort.latent import PatientState
from cardiolake.cohort.signals import EchoSimulation

#: EchoNet-Dynamic frame size.
ECHONET_SIZE = 112
FILELIST_COLUMNS: tuple[str, ...] = (
    "FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames",
    "Split", "PatientID", "AcquisitionDateTime",
)  # fmt: skip
VOLUME_TRACING_COLUMNS: tuple[str, ...] = ("FileName", "X1", "Y1", "X2", "Y2", "Frame")
Split = Literal["TRAIN", "VAL", "TEST"]
_JPEG_QUALITY = 75  # pinned so the bytes do not depend on OpenCV's default
_N_DISCS = 20  # EchoNet traces 20 method-of-discs chords below the long axis


def echonet_file_name(seed: int, state: PatientState) -> str:
    """An EchoNet-style name (``0X`` + 16 hex digits) hashed from seed and patient."""
    digest = hashlib.sha256(f"{seed}:{state.patient_id}:echonet".encode()).hexdigest()
    return "0X" + digest[:16].upper()


def echonet_split(file_name: str) -> Split:
    """Deterministic split with EchoNet's proportions (about 75 / 12.5 / 12.5 %)."""
    bucket = int(hashlib.sha256(f"{file_name}:split".encode()).hexdigest(), 16) % 8
    return "TEST" if bucket == 0 else "VAL" if bucket == 1 else "TRAIN"


def _resized(frames: np.ndarray) -> np.ndarray:
    return np.stack(
        [cv2.resize(f, (ECHONET_SIZE, ECHONET_SIZE), interpolation=cv2.INTER_AREA) for f in frames]
    )


def write_echonet_avi(echo: EchoSimulation, path: Path) -> Path:
    """Write the clip as a 112×112 Motion-JPEG AVI at the clip's frame rate.

    Uses OpenCV's built-in MJPEG muxer (not FFmpeg), which writes no timestamps or encoder
    strings, so identical clips give identical bytes. Frames are stored as 3-channel grey
    like the public dataset.

    Args:
        echo: the clip (frames of any square size; resized with area averaging).
        path: output ``.avi`` file (parents are created).

    Returns:
        ``path``.

    Raises:
        OSError: if OpenCV cannot open the writer.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(
        str(path),
        cv2.CAP_OPENCV_MJPEG,
        cv2.VideoWriter.fourcc(*"MJPG"),
        float(echo.fps),
        (ECHONET_SIZE, ECHONET_SIZE),
        True,
    )
    if not writer.isOpened():
        raise OSError(f"OpenCV could not open an MJPEG writer for {path}")
    writer.set(cv2.VIDEOWRITER_PROP_QUALITY, _JPEG_QUALITY)
    try:
        for frame in _resized(echo.frames):
            writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    finally:
        writer.release()
    return path


def keyframes(echo: EchoSimulation) -> tuple[int, int]:
    """The traced ED and ES frame indices: the first true ED followed by its ES in the clip.

    Falls back to the largest/smallest-area frames when the clip holds no full ED→ES pair.
    """
    for ed in echo.ed_s:
        later = echo.es_s[echo.es_s > ed]
        if later.size:
            return int(round(ed * echo.fps)), int(round(later[0] * echo.fps))
    return int(np.argmax(echo.lv_area_px)), int(np.argmin(echo.lv_area_px))


def _fps_value(fps: float) -> float | int:
    return int(fps) if float(fps).is_integer() else round(float(fps), 3)


def filelist_row(
    echo: PhantomEcho, file_name: str, *, state: PatientState, split: Split | None = None
) -> dict[str, Any]:
    """One ``FileList.csv`` row (EchoNet columns + ``PatientID``, ``AcquisitionDateTime``).

    EF is the latent ``lvef`` (2 decimals). EDV is the method-of-discs volume of the LV at
    true end-diastole and ESV follows from EF, so ``EF == 100 (EDV - ESV) / EDV`` like in
    the public file; the phantom scales self-similarly, so the ES chords agree too.

    Args:
        echo: the phantom clip (its geometry gives the volumes).
        file_name: name without ``.avi`` (e.g. from :func:`echonet_file_name`).
        state: the patient (EF, MRN, echo-clock start time).
        split: dataset split; by default :func:`echonet_split` of the file name.

    Returns:
        A dict keyed by :data:`FILELIST_COLUMNS`.
    """
    spacing = echo.pixel_spacing_cm
    edv = disc_volume_ml(echo.ed_length_px * spacing, echo.ed_half_width_px * spacing, _N_DISCS)
    esv = edv * (1.0 - state.lvef / 100.0)
    return {
        "FileName": file_name,
        "EF": round(state.lvef, 2),
        "ESV": round(esv, 2),
        "EDV": round(edv, 2),
        "FrameHeight": ECHONET_SIZE,
        "FrameWidth": ECHONET_SIZE,
        "FPS": _fps_value(echo.fps),
        "NumberOfFrames": int(echo.frames.shape[0]),
        "Split": split or echonet_split(file_name),
        "PatientID": state.mrn,
        "AcquisitionDateTime": state.echo_start_time.isoformat(sep=" ", timespec="milliseconds"),
    }


def volume_tracing_rows(
    echo: PhantomEcho, file_name: str, *, size: int | None = None
) -> list[dict[str, Any]]:
    """``VolumeTracings.csv`` rows for the traced ES and ED frames, in 112×112 coordinates.

    Per frame: first the long axis (apex → mitral-plane centre), then 20 chords across the
    cavity, apex to base, ``X1,Y1`` on one wall and ``X2,Y2`` on the other. ES rows come
    first, as in the public file, whose loader takes the last traced frame as the large
    (diastolic) one and the first as the small (systolic) one.

    Args:
        echo: the phantom clip.
        file_name: name without ``.avi``; rows carry ``<file_name>.avi`` like EchoNet.
        size: side of the source frames; optional, checked against ``echo.frames``.

    Returns:
        Dicts keyed by :data:`VOLUME_TRACING_COLUMNS`, 21 per traced frame.

    Raises:
        ValueError: if ``size`` disagrees with the frames.
    """
    ed, es = keyframes(echo)
    if size is not None and size != echo.frames.shape[1]:
        raise ValueError(f"size {size} but frames are {echo.frames.shape[1]} px")
    size = echo.frames.shape[1]
    scale = ECHONET_SIZE / size
    rows: list[dict[str, Any]] = []
    for frame in (es, ed):
        apex = echo.lv_apex_px[frame]
        length = float(echo.lv_length_px[frame])
        base = apex + length * echo.lv_axis
        axis_row = np.concatenate([apex, base])[None, :]
        chords = lv_chords(apex, echo.lv_axis, length, float(echo.lv_half_width_px[frame]))
        # Map pixel-centre coordinates of the source grid onto the resized 112×112 grid.
        lines = (np.vstack([axis_row, chords]) + 0.5) * scale - 0.5
        for x1, y1, x2, y2 in lines:
            rows.append(
                {
                    "FileName": f"{file_name}.avi",
                    "X1": round(float(x1), 4),
                    "Y1": round(float(y1), 4),
                    "X2": round(float(x2), 4),
                    "Y2": round(float(y2), 4),
                    "Frame": frame,
                }
            )
    return rows
