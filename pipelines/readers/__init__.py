"""Per-file readers that Spark tasks call: DICOM ECG/echo and EchoNet AVI, with one error type.

Every reader returns a small dataclass of arrays plus a de-identified header, or raises
:class:`InputError` with a stable ``reason`` for the quarantine table.
"""

from pipelines.readers.dicom_reader import (
    PHI_TAGS,
    DicomEcg,
    DicomEcho,
    EchoClip,
    acquisition_datetime,
    deidentified_header,
    patient_mrn,
    read_dicom,
)
from pipelines.readers.echonet_reader import (
    EchonetEntry,
    entry_key,
    load_echonet_index,
    read_echonet_avi,
)
from pipelines.readers.errors import REASONS, InputError

__all__ = [
    "PHI_TAGS",
    "REASONS",
    "DicomEcg",
    "DicomEcho",
    "EchoClip",
    "EchonetEntry",
    "InputError",
    "acquisition_datetime",
    "deidentified_header",
    "entry_key",
    "load_echonet_index",
    "patient_mrn",
    "read_dicom",
    "read_echonet_avi",
]
