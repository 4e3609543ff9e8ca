"""An independent check of de-identified notes: it shares no detector with the scrubber.

The scrubber (:mod:`pipelines.tabular.notes`) finds identifiers with regular expressions and
name lists and replaces spans. This verifier works the other way round, on tokens of the
*output*: it normalises the text to word and digit tokens and looks for

- the note's patient's own identifiers as token sequences (every name part, the MRN's digits
  and its digit fragments of five or more, the birth date as a canonical ``YYYYMMDD`` found
  in any numeric or month-name rendering it can parse back),
- and residue of the structural categories no template can avoid: runs of seven or more
  digits, ``@``-addresses, URLs, dotted-quad IPs and years beside a month name or day.

A note it flags is quarantined instead of landing in silver, so a miss of the scrubber has
to slip past a second, differently built test.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from datetime import date

_MONTH_NUMBER = {
    m: i + 1
    for i, names in enumerate(
        [
            ("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"),
            ("may",), ("jun", "june"), ("jul", "july"), ("aug", "august"),
            ("sep", "sept", "september"), ("oct", "october"), ("nov", "november"),
            ("dec", "december"),
        ]
    )
    for m in names
}  # fmt: skip
_TAG = re.compile(r"\[[A-Z]+\]")


def _plain(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z]+|\d+", _plain(_TAG.sub(" ", text)))


def _dates_in(tokens: list[str]) -> set[str]:
    """Every YYYYMMDD a window of three tokens can be read as (numeric or month names)."""
    found: set[str] = set()
    for i in range(len(tokens) - 2):
        a, b, c = tokens[i : i + 3]
        triples = []
        nums = [t for t in (a, b, c) if t.isdigit()]
        if len(nums) == 3:
            x, y, z = (int(t) for t in (a, b, c))
            triples += [(x, y, z), (z, x, y), (z, y, x)]  # Y-M-D, M-D-Y, D-M-Y
        for t in (a, b, c):
            if t in _MONTH_NUMBER and len(nums) == 2:
                n1, n2 = (int(v) for v in nums)
                month = _MONTH_NUMBER[t]
                triples += [(n2, month, n1), (n1, month, n2)]
        for year, month, day in triples:
            year = year + (1900 if 30 <= year < 100 else 2000 if year < 30 else 0)
            try:
                found.add(date(year, month, day).strftime("%Y%m%d"))
            except ValueError:
                continue
    for t in tokens:
        if len(t) == 8 and t.isdigit():
            found.add(t)
    return found


def verify_note(
    text: str,
    *,
    known_names: Sequence[str] = (),
    known_mrns: Sequence[str] = (),
    known_birth_dates: Sequence[str] = (),
) -> list[str]:
    """Categories of identifier still present in a de-identified note (empty when clean).

    Args:
        text: the de-identified note.
        known_names: the patient's names (any form).
        known_mrns: the patient's MRNs.
        known_birth_dates: the patient's ISO birth dates.

    Returns:
        Sorted category names (``name``, ``mrn``, ``birth_date``, ``long_number``,
        ``email``, ``url``, ``ip``, ``date``); never the offending text.
    """
    problems: set[str] = set()
    tokens = _tokens(text)
    token_set = set(tokens)
    for name in known_names:
        for part in re.findall(r"[a-z]+", _plain(name)):
            if len(part) >= 3 and part in token_set:
                problems.add("name")
    digit_run = "".join(t if t.isdigit() else " " for t in tokens)
    joined_digits = re.sub(r"\s+", " ", digit_run)
    for mrn in known_mrns:
        digits = re.sub(r"\D", "", mrn).lstrip("0")
        if not digits:
            continue
        for t in tokens:
            if t.isdigit() and len(t) >= 5 and t.lstrip("0") and t.lstrip("0") in digits:
                problems.add("mrn")
        if digits in joined_digits.replace(" ", ""):
            problems.add("mrn")
    births = {b.strip()[:10].replace("-", "") for b in known_birth_dates if b}
    if births & _dates_in(tokens):
        problems.add("birth_date")
    plain = _plain(_TAG.sub(" ", text))
    # ids and phones: seven or more digits run together or joined by hyphens, or a
    # space-separated phone; lists of clinical values ("QRS 98 102 110") are no finding
    if re.search(r"\d(?:-?\d){6,}", plain) or re.search(r"\b\d{3}\s\d{3}\s\d{4}\b", plain):
        problems.add("long_number")
    if re.search(r"\S@\S+\.\S", plain):
        problems.add("email")
    if "http" in token_set or "www" in token_set:
        problems.add("url")
    if re.search(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b", plain):
        problems.add("ip")
    for i, t in enumerate(tokens):
        if t in _MONTH_NUMBER and len(t) >= 3:
            near = tokens[max(0, i - 2) : i + 3]
            if any(n.isdigit() and (len(n) == 4 or int(n) <= 31) for n in near):
                problems.add("date")
    return sorted(problems)
