"""The one error a reader raises for a bad input file; ingestion routes it to ``quarantine``.

Readers run inside Spark tasks, one file at a time. Anything wrong with the *input* (as
opposed to a bug in our code) becomes an :class:`InputError` with a stable machine-readable
``reason``, so the quarantine table can be counted and checked per defect kind.
"""

from __future__ import annotations

from typing import Any

#: Reason codes used by the readers. New readers may add codes; keep them short snake_case
#: and never rename one (quarantine rows count by them). Readers reject what cannot be decoded;
#: data that decodes but is implausible (a wrong gain, frame times out of order) reaches silver
#: and is caught by the named Great Expectations gate before promotion (expectations/).
REASONS: frozenset[str] = frozenset(
    {
        "missing_file",  # the path does not exist
        "io_error",  # the file exists but cannot be read
        "not_dicom",  # no DICOM Part 10 preamble / unparseable header
        "unsupported_sop_class",  # DICOM, but neither an ECG waveform nor an ultrasound image
        "missing_attribute",  # a Type 1 attribute the reader needs is absent or malformed
        "header_mismatch",  # header fields contradict each other or the data
        "no_pixel_data",  # an image without Pixel Data
        "pixel_data_truncated",  # fewer pixel bytes than the header promises
        "decode_failed",  # a compressed frame that the codec rejects
        "nonfinite_frame_times",  # a frame time vector holding NaN or infinity
        "missing_frame_times",  # a multi-frame clip without any frame timing
        "truncated_signal",  # fewer waveform samples than the header promises
        "unsupported_waveform",  # waveform encoding we do not decode (e.g. mu-law)
        "empty_signal",  # an ECG record that holds no samples
        "unreadable_video",  # a video file that OpenCV cannot open or that has no frames
        "not_in_index",  # a video without its row in the dataset index (FileList.csv)
        "size_limit_exceeded",  # declared or inflated size past a configured cap
        "memory_limit",  # decoding ran out of the task's memory budget
        "burned_in_annotation",  # an image whose pixels carry burned-in text (PHI)
        "unreadable_path",  # a path that cannot be opened (permissions, I/O)
        "symlink_loop",  # a symbolic link that points back into itself
        "broken_symlink",  # a symbolic link whose target does not exist
    }
)


class InputError(ValueError):
    """A bad input file: what is wrong (``reason``), in words (``detail``), and where (``uri``).

    The arguments are positional-or-keyword (not keyword-only) so the exception pickles:
    Spark ships exceptions between worker and driver processes and rebuilds them from
    ``args``.

    Args:
        reason: stable machine code, e.g. ``"pixel_data_truncated"`` (see :data:`REASONS`).
        detail: human-readable explanation; must not contain PHI (no names, MRNs, dates of
            birth), since it is stored in the quarantine table and logged.
        uri: the offending file.

    Example:
        >>> str(InputError("not_dicom", "no DICM prefix", "/landing/echo/x.dcm"))
        '/landing/echo/x.dcm: not_dicom: no DICM prefix'
    """

    def __init__(self, reason: str, detail: str = "", uri: str = "") -> None:
        super().__init__(reason, detail, uri)
        self.reason = reason
        self.detail = detail
        self.uri = uri

    def __str__(self) -> str:
        return f"{self.uri or '<unknown file>'}: {self.reason}: {self.detail}"

    def to_record(self) -> dict[str, Any]:
        """The fields a quarantine row needs (``reason``, ``detail``, ``uri``)."""
        return {"reason": self.reason, "detail": self.detail, "uri": self.uri}
