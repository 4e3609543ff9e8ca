"""Echo clips as DICOM Ultrasound Multi-frame Image Storage, as an echo machine exports them.

The header carries what real exports carry and ingestion must cope with: the machine's own
clock (``AcquisitionDateTime`` with fractional seconds, offset from the ECG unless the
devices were synchronised), an optional R Wave Time Vector, three transfer syntaxes and the
synthetic PHI of the patient module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import JPEG2000Lossless, RLELossless, UltrasoundMultiFrameImageStorage

from cardiolake.cohort.echo_phantom import PhantomEcho
from cardiolake.cohort.latent import PatientState
from cardiolake.cohort.signals import EchoSimulation
from cardiolake.cohort.writers.dicom_common import (
    add_synchronization,
    base_dataset,
    format_da,
    format_dt,
    format_tm,
    save,
)

EchoCompression = Literal["none", "jpeg2000", "rle"]
#: Transfer syntax per compression; both are lossless, so pixel_array equals the frames.
#: JPEG Baseline is absent on purpose: pydicom 3 has no encoder for it.
TRANSFER_SYNTAXES = {"jpeg2000": JPEG2000Lossless, "rle": RLELossless}
_FRAME_TIME_TAG = Tag(0x0018, 0x1063)


def _ds(value: float) -> str:
    """A DS string within the 16-character limit."""
    return f"{value:.10g}"


def _region_calibration(echo: PhantomEcho) -> Dataset:
    """US Region Calibration item: the whole image is one 2D tissue region in cm."""
    rows, cols = echo.frames.shape[1:]
    region = Dataset()
    region.RegionSpatialFormat = 1  # 2D
    region.RegionDataType = 1  # tissue
    region.RegionFlags = 0
    region.RegionLocationMinX0 = 0
    region.RegionLocationMinY0 = 0
    region.RegionLocationMaxX1 = cols - 1
    region.RegionLocationMaxY1 = rows - 1
    region.PhysicalUnitsXDirection = 3  # cm
    region.PhysicalUnitsYDirection = 3
    region.PhysicalDeltaX = echo.pixel_spacing_cm
    region.PhysicalDeltaY = echo.pixel_spacing_cm
    return region


def write_dicom_echo(
    echo: EchoSimulation,
    path: Path,
    *,
    state: PatientState,
    seed: int,
    compression: str,
    include_r_wave_vector: bool,
    synchronized: bool,
) -> Path:
    """Write an echo clip as an Ultrasound Multi-frame Image (MONOCHROME2, 8 bit).

    Args:
        echo: the clip; frames must be ``uint8`` ``(n_frames, rows, cols)``.
        path: output file (parents are created).
        state: the patient (PHI for the patient module, echo-clock start time).
        seed: cohort seed, for deterministic UIDs.
        compression: ``"none"`` (Explicit VR Little Endian), ``"jpeg2000"`` (JPEG 2000
            Lossless) or ``"rle"`` (RLE Lossless).
        include_r_wave_vector: add R Wave Time Vector (0018,6060), ms from the first frame.
        synchronized: add the Synchronization module with Acquisition Time Synchronized
            ``Y`` (UTC frame of reference); otherwise the module is omitted.

    Returns:
        ``path``.

    Raises:
        ValueError: for an unknown compression or frames that are not 3-D ``uint8``.

    Example:
        >>> write_dicom_echo(echo, Path("echo.dcm"), state=state, seed=0,
        ...                  compression="rle", include_r_wave_vector=True,
        ...                  synchronized=False)  # doctest: +SKIP
    """
    if compression != "none" and compression not in TRANSFER_SYNTAXES:
        raise ValueError(
            f"compression must be 'none', 'jpeg2000' or 'rle', got {compression!r} "
            "(JPEG Baseline is unsupported: pydicom has no encoder for it)"
        )
    frames = np.ascontiguousarray(echo.frames)
    if frames.dtype != np.uint8 or frames.ndim != 3:
        raise ValueError(f"frames must be uint8 (F, H, W), got {frames.dtype} {frames.shape}")
    n_frames, rows, cols = frames.shape
    start = state.echo_start_time  # the echo machine's clock

    ds = base_dataset(
        sop_class_uid=UltrasoundMultiFrameImageStorage,
        state=state,
        seed=seed,
        kind="echo",
        modality="US",
        series_number=2,
        content_time=start,
    )
    ds.ManufacturerModelName = "EchoPhantom A4C"
    ds.SeriesDescription = "Apical 4 chamber"
    # General Image / General Acquisition
    ds.ContentDate = format_da(start)
    ds.ContentTime = format_tm(start)
    ds.AcquisitionDateTime = format_dt(start)
    ds.PatientOrientation = ""
    ds.BurnedInAnnotation = "NO"
    # Image Pixel + US Image
    # CHEST: transthoracic; the US defined terms have no CARDIAC. 0001: 2D imaging.
    ds.ImageType = ["ORIGINAL", "PRIMARY", "CHEST", "0001"]
    ds.BodyPartExamined = "HEART"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "00"
    # Cine + Multi-frame
    ds.NumberOfFrames = n_frames
    ds.FrameIncrementPointer = _FRAME_TIME_TAG
    ds.FrameTime = _ds(1000.0 / echo.fps)
    ds.CineRate = int(round(echo.fps))
    ds.RecommendedDisplayFrameRate = int(round(echo.fps))
    ds.EffectiveDuration = _ds(n_frames / echo.fps)
    if include_r_wave_vector and len(echo.r_wave_s):
        ds.RWaveTimeVector = [float(t) * 1000.0 for t in echo.r_wave_s]
    if isinstance(echo, PhantomEcho):
        ds.SequenceOfUltrasoundRegions = Sequence([_region_calibration(echo)])
    if synchronized:
        add_synchronization(ds, seed=seed, state=state, kind="echo", frame_of_reference=True)

    ds.PixelData = frames.tobytes()
    ds["PixelData"].VR = "OB"
    if compression != "none":
        ds.compress(
            TRANSFER_SYNTAXES[compression],
            frames,
            encoding_plugin="pylibjpeg",
            generate_instance_uid=False,  # keep the deterministic UID
        )
    return save(ds, path)
