"""Settings of the ingestion jobs (one frozen dataclass, passed down from the CLI edge)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cardiolake.pseudonym import DEVELOPMENT_SECRET, check_secret, resolve_secret
from pipelines.readers.limits import ReadLimits


@dataclass(frozen=True)
class IngestSettings:
    """What ``cardiolake ingest`` needs to turn a landing zone into bronze/silver/gold tables.

    Attributes:
        landing: the landing-zone folder.
        lake_root: the lake root (tables at ``lake_root/layer/name``).
        pseudonym_secret: HMAC secret for patient keys (from the environment at the CLI);
            the default marker selects the lake's random development secret.
        canonical_fs: the one sampling rate silver ECGs are resampled to (Hz).
        echo_size: silver echo frames are ``echo_size`` x ``echo_size`` grayscale.
        task_slices: Spark partitions for per-file work at least (more than cores keeps
            both busy); a stage with more input bytes than ``task_slices`` x
            ``partition_bytes`` gets one partition per ``partition_bytes``.
        partition_bytes: input bytes one per-file task partition is sized for.
        max_batch_bytes: a per-file task cuts its Arrow output batches at about this many
            bytes (decoded frames and signals), whatever the input batch size.
        max_clock_offset_s: the largest ECG/echo clock disagreement alignment searches.
        split_shares: patient-level shares of train / validation / test in gold.
        limits: size caps every reader checks before allocating, and the per-file memory
            budget of a decoding task.
        date_shift_max_days: every timestamp of a patient moves back by the same 1 to this
            many days (keyed by the pseudonym), so no real date lands; 0 keeps real dates.
        skip_unchanged_files: skip, unread, every landing file whose path, size and
            modification time bronze or quarantine already record (the Auto Loader model);
            False hashes every file each run, for a landing zone whose writers may rewrite a
            file keeping its size and mtime.
    """

    landing: Path
    lake_root: Path
    pseudonym_secret: str = DEVELOPMENT_SECRET
    canonical_fs: int = 500
    echo_size: int = 112
    task_slices: int = 8
    partition_bytes: int = 128 * 1024 * 1024
    max_batch_bytes: int = 64 * 1024 * 1024
    max_clock_offset_s: float = 2.0
    split_shares: tuple[float, float, float] = field(default=(0.7, 0.15, 0.15))
    limits: ReadLimits = field(default_factory=ReadLimits)
    date_shift_max_days: int = 365
    skip_unchanged_files: bool = True

    def __post_init__(self) -> None:
        # a configured secret is checked at once (before any file is read, before Spark);
        # the development marker is resolved against the lake when a run starts
        if self.pseudonym_secret != DEVELOPMENT_SECRET:
            check_secret(self.pseudonym_secret)

    def partitions_for(self, rows: int, input_bytes: int) -> int:
        """Partitions for ``rows`` pending records holding ``input_bytes`` of source files."""
        by_bytes = -(-max(input_bytes, 0) // max(self.partition_bytes, 1))
        return max(1, min(rows, max(self.task_slices, by_bytes)))

    def secret(self) -> str:
        """The checked HMAC secret: the configured one, or the lake's development secret.

        Raises:
            SecretError: when the configured secret is empty or shorter than 16 bytes.
        """
        return resolve_secret(self.pseudonym_secret, self.lake_root)
