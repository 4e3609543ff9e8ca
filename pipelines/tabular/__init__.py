"""Row functions for the tabular sources (labs, notes, labels): raw export row -> silver row.

Each takes one row (a mapping, as ``csv.DictReader`` or ``Row.asDict()`` gives) and returns a
typed result or a :class:`RowError`, never raising on bad data, so Spark tasks
(``mapPartitions``, Python UDFs) can call them directly and send errors to quarantine.
"""

from pipelines.tabular.labels import (
    LabelVote,
    ResolvedLabel,
    cohen_kappa,
    fleiss_kappa,
    parse_label,
    resolve_exam_labels,
    vote_table,
)
from pipelines.tabular.labs import (
    LAB_CATALOGUE,
    LabAnalyte,
    LabResult,
    RowError,
    RowErrorReason,
    normalize_lab,
)
from pipelines.tabular.notes import deidentify_note, scrub_report

__all__ = [
    "LAB_CATALOGUE",
    "LabAnalyte",
    "LabResult",
    "LabelVote",
    "ResolvedLabel",
    "RowError",
    "RowErrorReason",
    "cohen_kappa",
    "deidentify_note",
    "fleiss_kappa",
    "normalize_lab",
    "parse_label",
    "resolve_exam_labels",
    "scrub_report",
    "vote_table",
]
