"""Read an echo clip from any supported source (DICOM ultrasound or EchoNet AVI) into one shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.readers import EchoClip, InputError, load_echonet_index, read_dicom, read_echonet_avi
from pipelines.readers.dicom_reader import PixelMode
from pipelines.readers.limits import DEFAULT_LIMITS, ReadLimits

# one EchoNet index read per Python worker and folder, not one per video
_ECHONET_INDEX: dict[Path, dict[str, Any]] = {}


def read_echo_clip(uri: str, fmt: str, *, limits: ReadLimits = DEFAULT_LIMITS,
                   pixels: PixelMode = "stream") -> EchoClip:  # fmt: skip
    """Decode an echo clip.

    Args:
        uri: a DICOM file, or an AVI inside an EchoNet ``Videos/`` folder.
        fmt: ``"echonet_avi"`` or ``"dicom"``.
        limits: size caps checked before frames are allocated.
        pixels: for DICOM, ``"stream"`` (frames straight to 112x112, bounded memory),
            ``"header"`` (bronze: sizes checked, nothing decoded) or ``"full"`` (see
            :func:`~pipelines.readers.read_dicom`). EchoNet AVIs are 112x112 already and
            always decoded.

    Returns:
        The clip; EchoNet metadata comes from ``FileList.csv``/``VolumeTracings.csv`` beside
        ``Videos/``.

    Raises:
        InputError: a broken file, an AVI missing from its index, or a DICOM that is no echo.
    """
    if fmt == "echonet_avi":
        root = Path(uri).parent.parent
        if root not in _ECHONET_INDEX:
            _ECHONET_INDEX[root] = load_echonet_index(root)
        return read_echonet_avi(uri, _ECHONET_INDEX[root].get(Path(uri).stem), limits=limits)
    clip = read_dicom(uri, limits=limits, pixels=pixels)
    if not isinstance(clip, EchoClip):
        raise InputError("unsupported_sop_class", "expected an echo", uri=uri)
    return clip
