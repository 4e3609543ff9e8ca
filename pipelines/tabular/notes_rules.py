"""The first, rule-based notes scrubber: one layer of :mod:`pipelines.tabular.notes` now.

Kept as its own module because the chosen scrubber still runs these rules beside the library
(they know the hospital's export templates) and because ``benchmarks/deid.py`` measures it
as the baseline.

Two layers work together. What the master patient index knows about the patient (name parts,
MRN) is removed exactly; patterns then catch what no index lists: names after cues
("Patient ...", "Dr. ...", "Follow-up with ..."), record numbers and other long digit runs,
partial ids ("5678-ext") and dates in the common formats. Each removal leaves a tag
(``[NAME]``, ``[MRN]``, ``[ID]``, ``[DATE]``) so the sentence stays readable; the clinical
content (rhythm, EF, rates, units) is left alone.

This is a rule-based scrubber tuned to hospital export templates, not a general NER model:
:func:`scrub_report` lists what still looks like PHI so expectations can gate on it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

NAME_TAG = "[NAME]"
MRN_TAG = "[MRN]"
ID_TAG = "[ID]"
DATE_TAG = "[DATE]"

_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
    r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?"
)
_ORDINAL = r"(?:st|nd|rd|th)?"
# A person-name word: capitalised, then lower case (so acronyms such as EF, LBBB never match).
_WORD = r"[A-Z][a-z]+(?:['\u2019-][A-Za-z]+)*"
_NAME = rf"{_WORD}(?:\s+{_WORD}){{0,2}}"

#: Capitalised words that follow a name cue without being a name.
_NOT_NAMES = frozenset(
    {
        "Dr", "Mr", "Mrs", "Ms", "Miss", "Prof", "Doctor", "The", "This", "His", "Her",
        "Their", "Our", "Cardiology", "Cardiologist", "Clinic", "Echo", "Heart", "Team",
        "Emergency", "Department", "Hospital", "Primary", "Care", "Nurse", "Family",
        "Internal", "Medicine", "Nephrology", "Electrophysiology", "Radiology", "Ward",
        "Unit", "Outpatient", "Inpatient", "General", "Practitioner", "Telemetry",
    }
)  # fmt: skip


@dataclass(frozen=True)
class _Rule:
    """One pattern: the span of group ``phi`` (or the whole match) is replaced by ``tag``."""

    tag: str
    pattern: re.Pattern[str]
    is_name: bool = False  # filter captured words through _NOT_NAMES


def _rule(tag: str, pattern: str, *, is_name: bool = False, flags: int = 0) -> _Rule:
    return _Rule(tag, re.compile(pattern, flags), is_name)


# Order matters: dates go before digit runs (2024-03-12 must become one [DATE], not ids),
# and the MRN cue before generic digit runs so record numbers get their own tag.
_DATE_RULES = (
    # 2024-03-12, 2024/03/12, with an optional ISO time part
    _rule(
        DATE_TAG,
        r"(?<![\d.])\d{4}[-/.]\d{1,2}[-/.]\d{1,2}"
        r"(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?(?![\d.])",
    ),
    # 03/12/2024, 3/12/24, 12-03-2024
    _rule(DATE_TAG, r"(?<![\d/.-])\d{1,2}([/-])\d{1,2}\1(?:\d{4}|\d{2})(?![\d/-])"),
    # 12.03.2024, 12.03.24 (two dots, so decimals such as 1.5 never match)
    _rule(DATE_TAG, r"(?<![\d.])\d{1,2}\.\d{1,2}\.(?:\d{4}|\d{2})(?![\d])"),
    # 12 March 2024, 12th Mar. 2024, 12-Mar-2024
    _rule(
        DATE_TAG,
        rf"\b\d{{1,2}}{_ORDINAL}(?:\s+|-)(?:of\s+)?{_MONTH}(?:,?\s+|-)\d{{2,4}}\b",
        flags=re.IGNORECASE,
    ),
    # March 12, 2024 / March 12th 2024
    _rule(DATE_TAG, rf"\b{_MONTH}\s+\d{{1,2}}{_ORDINAL},?\s+\d{{4}}\b", flags=re.IGNORECASE),
    # March 2024 (month and year identify too)
    _rule(DATE_TAG, rf"\b{_MONTH}\s+\d{{4}}\b", flags=re.IGNORECASE),
)
_ID_RULES = (
    # MRN 12345678, MR#: A1234567, medical record number 0042-77
    _rule(
        MRN_TAG,
        r"(?i:\b(?:MRN|MR#|medical\s+record(?:\s+(?:number|no\.?))?|record\s+no\.?))"
        r"\s*[:#]?\s*(?P<phi>(?=[A-Za-z-]*\d)[A-Za-z0-9-]{4,})",
    ),
    # US social security and phone numbers
    _rule(ID_TAG, r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)"),
    _rule(ID_TAG, r"(?<![\d(])\(?\d{3}\)?[-. ]\d{3}[-. ]\d{4}(?!\d)"),
    # partial ids and extensions: 5678-ext, ext. 5678, x5678
    _rule(ID_TAG, r"(?i)(?<![\w-])\d{3,6}\s*-?\s*ext\b"),
    _rule(ID_TAG, r"(?i)\b(?:ext\.?\s*|x)\d{3,6}\b"),
    # any other long digit run (accounts, encounter and device numbers)
    _rule(ID_TAG, r"(?<![\d.,])\d{6,}(?![\d.,]\d)"),
)
_NAME_RULES = (
    # titles: Dr. Anna Novak, Mrs Novak
    _rule(NAME_TAG, rf"\b(?:Dr|Mr|Mrs|Ms|Miss|Prof)\.?\s+(?P<phi>{_NAME})", is_name=True),
    # Patient Anna Novak, Pt: Anna Novak, Name: Novak, Anna
    _rule(
        NAME_TAG,
        rf"(?i:\b(?:patient|pt\.?|name|seen\s+by|signed\s+by|attending))\s*:?\s+"
        rf"(?P<phi>{_WORD}(?:,?\s+{_WORD}){{0,2}})",
        is_name=True,
    ),
    # Follow-up with Anna, referred to Novak, discussed with Anna Novak
    _rule(
        NAME_TAG,
        rf"(?i:\b(?:follow[- ]?up\s+with|referred\s+(?:to|by)|discussed\s+with|spoke\s+with"
        rf"|informed|accompanied\s+by|wife|husband|daughter|son|mother|father))\s*:?\s+"
        rf"(?P<phi>{_NAME})",
        is_name=True,
    ),
)
_RULES: tuple[_Rule, ...] = (*_DATE_RULES, *_ID_RULES, *_NAME_RULES)
_REPEATED_TAG = re.compile(r"(\[(?:NAME|MRN|ID|DATE)\])(?:[\s,]+\1)+")


def _name_span(words: str) -> tuple[int, int] | None:
    """The span inside a captured name to replace: leading words up to the first non-name."""
    end = 0
    for match in re.finditer(_WORD, words):
        if match.group(0) in _NOT_NAMES:
            break
        end = match.end()
    return (0, end) if end else None


def _matches(rule: _Rule, text: str) -> Iterable[tuple[int, int]]:
    for match in rule.pattern.finditer(text):
        if "phi" in rule.pattern.groupindex:
            start, end = match.span("phi")
        else:
            start, end = match.span()
        if rule.is_name:
            span = _name_span(text[start:end])
            if span is None:
                continue
            start, end = start + span[0], start + span[1]
        yield start, end


def _apply(rule: _Rule, text: str) -> str:
    pieces: list[str] = []
    last = 0
    for start, end in _matches(rule, text):
        pieces += [text[last:start], rule.tag]
        last = end
    return "".join(pieces) + text[last:]


def _known_name_parts(known_names: Sequence[str]) -> list[str]:
    # "Novak^Anna", "Novak, Anna" and "Anna Novak" all split into parts; single letters
    # (initials) are skipped because removing every "A" would shred the clinical text.
    parts = {p for name in known_names for p in re.split(r"[\s^,]+", name) if len(p) >= 2}
    return sorted(parts, key=len, reverse=True)


def _known_id_patterns(known_mrns: Sequence[str]) -> list[tuple[str, re.Pattern[str]]]:
    patterns: list[tuple[str, re.Pattern[str]]] = []
    for mrn in (m.strip() for m in known_mrns):
        if not mrn:
            continue
        variants = {mrn, mrn.lstrip("0")} - {""}
        for variant in sorted(variants, key=len, reverse=True):
            patterns.append((MRN_TAG, re.compile(rf"(?<![\w]){re.escape(variant)}(?![\w])")))
        # staff quote the last digits of the record number as a call-back or chart reference
        if len(mrn) > 4:
            tail = re.escape(mrn[-4:])
            patterns.append(
                (ID_TAG, re.compile(rf"(?<![\w.]){tail}(?!\d)(?:\s*-?\s*ext\b)?", re.I))
            )
    return patterns


def deidentify_note(
    text: str, *, known_names: Sequence[str] = (), known_mrns: Sequence[str] = ()
) -> str:
    """Replace names, record numbers, ids and dates in a note with tags.

    Args:
        text: the note as exported.
        known_names: the patient's names from the master patient index in any common form
            (``Last^First``, ``Last, First``, ``First Last``); every part is removed.
        known_mrns: the patient's MRNs; each is removed, and so are its last four digits.

    Returns:
        The text with ``[NAME]``, ``[MRN]``, ``[ID]`` and ``[DATE]`` in place of PHI.

    Example:
        >>> deidentify_note("Patient Anna Novak (MRN 12345678) seen 03/04/2024. EF 55%.")
        'Patient [NAME] (MRN [MRN]) seen [DATE]. EF 55%.'
    """
    out = text
    for tag, pattern in _known_id_patterns(known_mrns):
        out = pattern.sub(tag, out)
    for part in _known_name_parts(known_names):
        out = re.sub(rf"(?<![\w]){re.escape(part)}(?![\w])", NAME_TAG, out, flags=re.IGNORECASE)
    for rule in _RULES:
        out = _apply(rule, out)
    return _REPEATED_TAG.sub(r"\1", out)


def scrub_report(
    text: str, *, known_names: Sequence[str] = (), known_mrns: Sequence[str] = ()
) -> list[str]:
    """The strings in a (de-identified) note that still look like PHI.

    Runs the same detectors as :func:`deidentify_note` but reports instead of replacing, so
    an expectation can require an empty report on every silver note.

    Args:
        text: the text to inspect.
        known_names: patient names whose parts must not appear.
        known_mrns: MRNs that must not appear, nor their last four digits.

    Returns:
        The suspicious substrings, in order of detection (empty when clean).
    """
    found: list[str] = []
    for _, pattern in _known_id_patterns(known_mrns):
        found += [m.group(0) for m in pattern.finditer(text)]
    for part in _known_name_parts(known_names):
        pattern = re.compile(rf"(?<![\w]){re.escape(part)}(?![\w])", re.IGNORECASE)
        found += [m.group(0) for m in pattern.finditer(text)]
    for rule in _RULES:
        found += [text[start:end] for start, end in _matches(rule, text)]
    return found
