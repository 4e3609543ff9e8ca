"""Reader labels: parse one vote per row, resolve the votes of an exam, measure agreement.

An exam is read by two or three cardiologists; when they disagree (and sometimes when they
agree) a panel records an ``adjudicated`` row. Silver keeps one resolved label per exam with
its provenance: who voted what, whether it was adjudicated, and whether it still needs to be.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sklearn.metrics import cohen_kappa_score

from cardiolake.domain import FINDINGS
from pipelines.tabular.labs import RowError, parse_timestamp, text_field

#: The reader name a hospital export uses for the panel's final decision.
ADJUDICATOR = "adjudicated"
#: Triage vocabulary: the exported word -> urgent.
TRIAGE_VALUES: Mapping[str, bool] = {"urgent": True, "routine": False}
_TRUE = frozenset({"1", "true", "yes", "y", "t", "1.0"})
_FALSE = frozenset({"0", "false", "no", "n", "f", "0.0"})


@dataclass(frozen=True)
class LabelVote:
    """One reader's label of one exam.

    Attributes:
        label_id: the export's row id (empty when it has none).
        reader: the reader's name, or :data:`ADJUDICATOR`.
        urgent: the triage vote.
        findings: the vote on each finding.
        exam_time: when the exam started (identifies the exam together with the patient).
        label_time: when the vote was recorded.
    """

    label_id: str
    reader: str
    urgent: bool
    findings: Mapping[str, bool]
    exam_time: datetime
    label_time: datetime

    @property
    def is_adjudication(self) -> bool:
        """Whether this is the panel's final decision rather than a reader's vote."""
        return self.reader == ADJUDICATOR


@dataclass(frozen=True)
class ResolvedLabel:
    """The label of one exam, as the silver ``labels`` table stores it.

    Attributes:
        urgent: the resolved triage label; None when readers tie and nobody adjudicated.
        findings: the resolved value of each finding (None on an unadjudicated tie).
        adjudicated: whether a panel decision was recorded.
        needs_adjudication: readers disagree on triage or a finding and nobody adjudicated.
        n_readers: how many distinct readers voted (the adjudicator not counted).
        readers: the readers' names, in vote order.
        reader_votes: the readers' triage votes, aligned with ``readers``.
        agreement: share of readers casting the most common triage vote (None without
            readers).
        exam_time: the exam's start.
        label_time: the latest vote time: the label is not known before it.
    """

    urgent: bool | None
    findings: Mapping[str, bool | None]
    adjudicated: bool
    needs_adjudication: bool
    n_readers: int
    readers: tuple[str, ...]
    reader_votes: tuple[bool, ...]
    agreement: float | None
    exam_time: datetime
    label_time: datetime


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = "" if value is None else str(value).strip().lower()
    return True if text in _TRUE else False if text in _FALSE else None


def parse_label(
    row: Mapping[str, Any], *, findings: Sequence[str] = FINDINGS
) -> LabelVote | RowError:
    """Validate one exported label row.

    Args:
        row: one row with ``mrn``, ``reader``, ``triage``, ``exam_time``, ``label_time``, a
            0/1 column per finding and optionally ``label_id``.
        findings: the finding columns to read.

    Returns:
        The vote, or a :class:`RowError` whose reason is one of ``missing_patient``,
        ``missing_reader``, ``unknown_triage``, ``unparseable_finding`` or
        ``unparseable_time``. A label stamped before its exam reads fine: the labels gate
        (``labels_label_after_exam``) holds it back from promotion.
    """
    row_id = text_field(row, "label_id") or None
    if not text_field(row, "mrn"):
        return RowError("missing_patient", "no MRN on the label row", row_id)
    reader = text_field(row, "reader")
    if not reader:
        return RowError("missing_reader", "no reader on the label row", row_id)
    triage = TRIAGE_VALUES.get(text_field(row, "triage").lower())
    if triage is None:
        return RowError(
            "unknown_triage", f"triage {text_field(row, 'triage')!r} is not urgent/routine", row_id
        )
    votes: dict[str, bool] = {}
    for name in findings:
        vote = _flag(row.get(name))
        if vote is None:
            return RowError(
                "unparseable_finding", f"finding {name} = {row.get(name)!r} is not 0/1", row_id
            )
        votes[name] = vote
    exam_time = parse_timestamp(row.get("exam_time"))
    label_time = parse_timestamp(row.get("label_time"))
    if exam_time is None or label_time is None:
        bad = "exam_time" if exam_time is None else "label_time"
        return RowError("unparseable_time", f"{bad} {row.get(bad)!r} cannot be read", row_id)
    return LabelVote(row_id or "", reader, triage, votes, exam_time, label_time)


def _majority(values: Sequence[bool]) -> bool | None:
    n_true = sum(values)
    n_false = len(values) - n_true
    return None if n_true == n_false else n_true > n_false


def resolve_exam_labels(votes: Sequence[LabelVote]) -> ResolvedLabel:
    """Resolve the votes of one exam into its label.

    The adjudicated value wins when present (the latest one if re-sent); otherwise a
    unanimous value is taken as is, and a split one by majority (None on a tie) with
    ``needs_adjudication`` set. A reader voting twice counts once, with the later vote.

    Args:
        votes: every vote of one exam (same patient and exam time).

    Returns:
        The resolved label.

    Raises:
        ValueError: when ``votes`` is empty or mixes exams.
    """
    if not votes:
        raise ValueError("an exam needs at least one vote")
    exam_times = {v.exam_time for v in votes}
    if len(exam_times) > 1:
        raise ValueError(f"votes of {len(exam_times)} different exams cannot be resolved together")
    latest: dict[str, LabelVote] = {}
    for vote in sorted(votes, key=lambda v: v.label_time):
        latest[vote.reader] = vote  # later votes of the same reader replace earlier ones
    panel = latest.pop(ADJUDICATOR, None)
    readers = list(latest.values())
    names = sorted({f for v in votes for f in v.findings})

    disagree = len({v.urgent for v in readers}) > 1 or any(
        len({v.findings.get(f) for v in readers}) > 1 for f in names
    )
    if panel is not None:
        urgent: bool | None = panel.urgent
        findings: dict[str, bool | None] = {f: panel.findings.get(f) for f in names}
    else:
        urgent = _majority([v.urgent for v in readers])
        findings = {
            f: _majority([v.findings[f] for v in readers if f in v.findings]) for f in names
        }
    triage_votes = tuple(v.urgent for v in readers)
    agreement = max(Counter(triage_votes).values()) / len(triage_votes) if triage_votes else None
    return ResolvedLabel(
        urgent=urgent,
        findings=findings,
        adjudicated=panel is not None,
        needs_adjudication=panel is None and disagree,
        n_readers=len(readers),
        readers=tuple(v.reader for v in readers),
        reader_votes=triage_votes,
        agreement=agreement,
        exam_time=exam_times.pop(),
        label_time=max(v.label_time for v in votes),
    )


def cohen_kappa(a: Sequence[bool | int], b: Sequence[bool | int]) -> float:
    """Cohen's kappa of two readers over the same exams.

    Args:
        a: the first reader's votes.
        b: the second reader's votes, aligned with ``a``.

    Returns:
        Kappa; 1.0 when both readers give the same single value throughout (sklearn returns
        NaN there, but perfect agreement is the honest answer for a batch).

    Raises:
        ValueError: when the sequences differ in length or are empty.
    """
    if len(a) != len(b) or not a:
        raise ValueError("cohen_kappa needs two non-empty aligned vote sequences")
    x, y = [int(v) for v in a], [int(v) for v in b]
    if len(set(x) | set(y)) == 1:
        return 1.0
    return float(cohen_kappa_score(x, y))


def fleiss_kappa(table: Sequence[Sequence[int]] | np.ndarray) -> float:
    """Fleiss' kappa of a batch whose exams may have different numbers of readers.

    Uses the generalisation to a varying number of raters per item (it reduces to Fleiss'
    formula when the number is constant); exams with fewer than two readers carry no
    agreement information and are skipped.

    Args:
        table: one row per exam, one column per category, cell = number of readers who
            chose that category.

    Returns:
        Kappa, or NaN when no exam has two readers or all chose one category.
    """
    counts = np.asarray(table, dtype=float)
    if counts.ndim != 2:
        raise ValueError(f"expected an items x categories table, got shape {counts.shape}")
    n = counts.sum(axis=1)
    counts, n = counts[n >= 2], n[n >= 2]
    if len(n) == 0:
        return float("nan")
    p_item = ((counts**2).sum(axis=1) - n) / (n * (n - 1))
    p_cat = counts.sum(axis=0) / n.sum()
    p_expected = float((p_cat**2).sum())
    if p_expected >= 1.0:
        return float("nan")
    return float((p_item.mean() - p_expected) / (1.0 - p_expected))


def vote_table(exams: Iterable[Sequence[LabelVote]], finding: str | None = None) -> np.ndarray:
    """The exams x (negative, positive) count table of readers' votes, for :func:`fleiss_kappa`.

    Args:
        exams: the votes of each exam; adjudication rows are left out.
        finding: a finding name, or None for the triage vote.

    Returns:
        An integer array of shape (n_exams, 2).
    """
    rows: list[tuple[int, int]] = []
    for votes in exams:
        picks = [
            v.urgent if finding is None else v.findings[finding]
            for v in votes
            if not v.is_adjudication and (finding is None or finding in v.findings)
        ]
        rows.append((len(picks) - sum(picks), sum(picks)))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2)
