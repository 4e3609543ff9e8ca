"""De-identification of free-text clinical notes (HIPAA Safe Harbor) before silver ``notes``.

Three detectors vote by union, and every span any of them finds is replaced by a tag:

1. **What the patient index knows** about the note's patient: every name part (any case,
   with or without diacritics, hyphens and apostrophes), the MRN (with or without leading
   zeros and separators) and its fragments of four or more digits, the birth date in any
   common rendering.
2. **philter-lite** (a maintained fork of UCSF's Philter): ~300 regular expressions for dates,
   ids, contact details and addresses, and first/last-name lists. Philter relies on an NLTK
   part-of-speech tagger whose model is downloaded at run time; this module gives it a
   dictionary tagger instead (a word in Philter's own list of non-names is a common noun,
   any other word a proper noun), so it runs offline and keeps recall on lower-case names.
3. **Rules** for what Safe Harbor lists and notes carry: e-mail, URL, IP, international
   phone, ZIP, street address, ages over 89, month-day dates, account/plan/device/licence
   numbers, names after cues in any case (plus the first scrubber's template rules,
   :mod:`pipelines.tabular.notes_rules`).

Clinical measurements (a number followed by a unit, EF/QTc/QRS-style abbreviations) are
protected from the library's name lists, never from the patient's own identifiers. The
result is checked by :mod:`pipelines.tabular.deid_verify`, which shares none of this code.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Any

from pipelines.tabular.notes_rules import _RULES, _matches, scrub_report

logger = logging.getLogger(__name__)

NAME_TAG, MRN_TAG, ID_TAG, DATE_TAG = "[NAME]", "[MRN]", "[ID]", "[DATE]"
CONTACT_TAG, ADDRESS_TAG, AGE_TAG, PHI_TAG = "[CONTACT]", "[ADDRESS]", "[AGE]", "[PHI]"
_TAG_RE = re.compile(r"\[(?:NAME|MRN|ID|DATE|CONTACT|ADDRESS|AGE|PHI)\]")

#: Units and abbreviations whose numbers and words are clinical content, not identifiers.
_UNITS = (
    r"%|ms|msec|s|sec|bpm|/min|mmhg|mm|cm|mv|uv|µv|hz|mg|g|kg|mcg|ug|ml|l|dl|mmol/l|mmol|"
    r"mg/dl|g/dl|meq/l|iu/l|u/l|ng/ml|pg/ml|ng/l|umol/l|µmol/l|cells|x10\^9/l|kg/m2|lb|lbs|"
    r"in|ft|°c|c|f|units?|beats|hours?|days?|weeks?|months?|years?|yrs?|minutes?|mins?"
)
_MEASUREMENT = re.compile(rf"(?i)^[<>~≈]?\d+(?:[.,]\d+)?\s*(?:{_UNITS})$")
_CLINICAL_WORDS = frozenset(
    {
        "ef", "lvef", "qtc", "qt", "qrs", "pr", "hr", "bp", "ecg", "ekg", "lv", "rv", "la",
        "ra", "af", "afib", "lbbb", "rbbb", "avb", "lvh", "rvh", "mi", "stemi", "nstemi",
        "echo", "tte", "tee", "bpm", "ms", "mmhg", "sinus", "rhythm", "rate", "shows",
        "mitral", "aortic", "tricuspid", "pulmonary", "regurgitation", "stenosis", "normal",
        "reduced", "preserved", "mild", "mildly", "moderate", "severe", "systolic",
        "diastolic", "function", "conduction", "clinic", "follow", "up", "call", "worse",
        "patient", "seen", "visually", "about", "with", "in", "if", "on", "and", "the",
    }
)  # fmt: skip

_E = r"[A-Za-zÀ-ÖØ-öø-ÿĀ-ſ]"  # a letter, diacritics included
_NAME_WORD = rf"{_E}+(?:['’\-]{_E}+)*"
_MONTHS = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_CUE_NAME_RE = re.compile(
    rf"(?i)\b(?:patient|pt\.?|name|mr|mrs|ms|miss|dr|prof|doctor|nurse|rn|np|pa|seen by"
    rf"|signed by|attending|resident|fellow|cardiologist|physician|referred (?:to|by)"
    rf"|discussed with|spoke with|informed|accompanied by|wife|husband|daughter|son|mother"
    rf"|father|sister|brother|partner|spouse|friend|neighbou?r|guardian|caregiver|carer"
    rf"|follow[- ]?up with|cc|dictated by|transcribed by|contact)\.?\s*:?\s+"
    rf"(?P<phi>{_NAME_WORD}(?:\s+{_NAME_WORD}){{0,2}})"
)
_EXTRA: tuple[tuple[str, re.Pattern[str]], ...] = (
    (CONTACT_TAG, re.compile(r"(?i)\b[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+\b")),
    (CONTACT_TAG, re.compile(r"(?i)\b(?:https?://|ftp://|www\.)[^\s<>\"]+")),
    (CONTACT_TAG, re.compile(r"(?i)\b[a-z0-9\-]+\.(?:com|org|net|edu|gov|io|de|uk|fr)(?:/\S*)?\b")),
    (ID_TAG, re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")),  # IPv4
    (ID_TAG, re.compile(r"(?i)\b(?:[0-9a-f]{1,4}:){4,7}[0-9a-f]{1,4}\b")),  # IPv6
    (CONTACT_TAG, re.compile(r"(?<![\w])\+\d{1,3}[\s.\-]?(?:\(?\d{1,4}\)?[\s.\-]?){2,5}\d{2,4}\b")),
    (CONTACT_TAG, re.compile(r"(?<![\w.])\(?\d{3}\)?[\s.\-]\d{3}[\s.\-]\d{4}\b")),
    (CONTACT_TAG, re.compile(r"(?<![\w.])0\d{2,4}[\s\-/]\d{3,4}[\s\-]?\d{3,4}\b")),  # 020 7946 0958
    (ADDRESS_TAG, re.compile(
        rf"(?i)\b\d{{1,6}}\s+(?:{_NAME_WORD}\s+){{1,4}}(?:st|street|ave|avenue|rd|road|blvd"
        rf"|boulevard|ln|lane|dr|drive|ct|court|way|pl|place|terrace|ter|pkwy|parkway|hwy"
        rf"|highway|sq|square|strasse|straße|weg|gasse)\b\.?(?:,?\s*(?:apt|unit|suite|#)\s*\w+)?"
    )),
    (ADDRESS_TAG, re.compile(r"(?i)\b(?:p\.?\s?o\.?\s+box|postfach)\s+\d+\b")),
    (ADDRESS_TAG, re.compile(r"\b[A-Z]{2}\s+\d{5}(?:-\d{4})?\b")),  # state + ZIP
    (ADDRESS_TAG, re.compile(r"(?i)\b(?:zip|postal code|postcode)\s*:?\s*[\w\- ]{3,10}\b")),
    (ADDRESS_TAG, re.compile(r"\b\d{5}-\d{4}\b")),
    (ADDRESS_TAG, re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]?\s+\d[A-Z]{2}\b")),  # UK postcode
    (AGE_TAG, re.compile(
        r"(?i)\b(?:age[ds]?|aged)\s*:?\s*(?:9\d|1[0-4]\d)\b"
        r"|\b(?:9\d|1[0-4]\d)\s*(?:-|\s)?(?:years?|yrs?|y/?o|yo)\b(?:[\s\-]*old)?"
    )),
    (DATE_TAG, re.compile(rf"(?i)\b{_MONTHS}\s+\d{{1,2}}(?:st|nd|rd|th)?\b(?:,?\s+\d{{2,4}})?")),
    (DATE_TAG, re.compile(rf"(?i)\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTHS}(?:,?\s+\d{{2,4}})?")),  # noqa: E501
    (DATE_TAG, re.compile(r"(?<![\d/.\-])\d{1,2}/\d{1,2}(?![\d/])")),  # 3/4 (month/day)
    (DATE_TAG, re.compile(r"(?<![\d.])(?:19|20)\d{2}[-/.]\d{1,2}[-/.]\d{1,2}(?:[T ][\d:.]+Z?)?")),
    (DATE_TAG, re.compile(rf"(?i)\b{_MONTHS}\s+(?:19|20)\d{{2}}\b")),
    (ID_TAG, re.compile(
        r"(?i)\b(?:account|acct|plan|member|policy|insurance|health\s*plan|beneficiary|device"
        r"|serial|s/n|sn|licen[cs]e|lic|certificate|cert|vin|plate|badge|employee|encounter|visit"
        r"|case|claim|ssn|social\s+security|passport|nhs|id|no|number|#)\s*(?:no\.?|number|#|id)?"
        r"\s*[:#]?\s*(?=[\w\-]*\d)[A-Z0-9][\w\-]{3,}"
    )),
    (ID_TAG, re.compile(r"(?<![\w.,])\d{6,}(?![\w]|[.,]\d)")),
    (ID_TAG, re.compile(r"(?<![\w\-])(?=[A-Z\d\-]*\d)(?=[A-Z\d\-]*[A-Z])[A-Z\d]{2,}-[A-Z\d\-]{3,}\b")),  # noqa: E501
)  # fmt: skip


@dataclass(frozen=True)
class PatientIdentity:
    """What the master patient index knows about a note's patient (held in memory only).

    Attributes:
        names: full names in any form (``Last^First``, ``Last, First``, ``First Last``).
        mrns: the patient's record numbers.
        birth_dates: ISO birth dates (``YYYY-MM-DD``).
    """

    names: tuple[str, ...] = ()
    mrns: tuple[str, ...] = ()
    birth_dates: tuple[str, ...] = ()


def fold(text: str) -> str:
    """Lower case without diacritics, one output character per input character."""
    out = []
    for ch in text:
        base = unicodedata.normalize("NFKD", ch)
        letters = [c for c in base if not unicodedata.combining(c)]
        out.append(letters[0].lower() if len(letters) == 1 else ch.lower())
    return "".join(out)


def name_parts(names: Iterable[str]) -> list[str]:
    """Every part of every name (split on spaces, commas, carets, hyphens, apostrophes)."""
    parts: set[str] = set()
    for name in names:
        for chunk in re.split(r"[\s^,;]+", name):
            chunk = chunk.strip('.()"')
            if len(chunk) >= 2:
                parts.add(fold(chunk))
            parts.update(fold(p) for p in re.split(r"['’\-]", chunk) if len(p) >= 2)
    return sorted(parts, key=len, reverse=True)


def date_renderings(iso: str) -> list[str]:
    """A birth date as notes write it: ISO, US and European numeric, with month names."""
    try:
        d = date.fromisoformat(iso.strip()[:10])
    except ValueError:
        return [iso.strip()] if iso.strip() else []
    month = d.strftime("%B")
    short = month[:3]
    out = {
        f"{d:%Y-%m-%d}", f"{d:%Y/%m/%d}", f"{d:%Y%m%d}", f"{d:%m/%d/%Y}", f"{d:%m/%d/%y}",
        f"{d.month}/{d.day}/{d.year}", f"{d.month}/{d.day}/{d:%y}", f"{d:%d.%m.%Y}",
        f"{d.day}.{d.month}.{d.year}", f"{d:%d/%m/%Y}", f"{d.day}/{d.month}/{d.year}",
        f"{d:%d-%m-%Y}", f"{d:%m-%d-%Y}", f"{month} {d.day}, {d.year}",
        f"{month} {d.day} {d.year}", f"{d.day} {month} {d.year}", f"{short} {d.day}, {d.year}",
        f"{d.day} {short} {d.year}", f"{d.day}-{short}-{d.year}", f"{d:%d}-{short}-{d.year}",
        f"{short}. {d.day}, {d.year}",
    }  # fmt: skip
    return sorted({fold(x) for x in out}, key=len, reverse=True)


def _digits_pattern(number: str) -> str:
    """A number with optional separators between its digits (``0012-3456``, ``00 12 34 56``)."""
    return r"[\s\-./]?".join(re.escape(c) for c in number)


def _known_spans(text: str, folded: str, identity: PatientIdentity) -> list[tuple[int, int, str]]:
    spans: list[tuple[int, int, str]] = []
    for part in name_parts(identity.names):
        for m in re.finditer(rf"(?<![\w]){re.escape(part)}(?![\w])", folded):
            spans.append((m.start(), m.end(), NAME_TAG))
    for mrn in {m.strip() for m in identity.mrns if m and m.strip()}:
        for variant in {mrn, mrn.lstrip("0")} - {""}:
            pattern = rf"(?<![\w]){_digits_pattern(variant)}(?![\w])"
            spans += [(m.start(), m.end(), MRN_TAG) for m in re.finditer(pattern, folded)]
        digits = re.sub(r"\D", "", mrn)
        # fragments staff quote (last or first digits, 4 or more) unless a unit follows
        for m in re.finditer(r"(?<![\w.,])\d{4,}(?![\w]|[.,]\d)", text):
            token = m.group(0)
            after = text[m.end() : m.end() + 8].strip().lower()
            is_measure = bool(re.match(rf"(?:{_UNITS})\b", after))
            if len(digits) > 4 and token in digits and not is_measure:
                spans.append((m.start(), m.end(), MRN_TAG))
    for birth in identity.birth_dates:
        for rendering in date_renderings(birth):
            for m in re.finditer(rf"(?<![\w]){re.escape(rendering)}(?![\w])", folded):
                spans.append((m.start(), m.end(), DATE_TAG))
    return spans


@lru_cache(maxsize=1)
def _philter() -> tuple[Any, list[Any], frozenset[str]]:
    """philter-lite's detector, its filters and its list of words that are not names."""
    from importlib.resources import files

    from philter_lite import filters, philter

    config = files("philter_lite") / "configs" / "philter_delta.toml"
    patterns = filters.load_filters(str(config))
    common: frozenset[str] = frozenset()
    for pattern in patterns:
        if getattr(pattern, "type", "") == "set" and not getattr(pattern, "exclude", True):
            common = common | frozenset(getattr(pattern, "data", ()))

    def dictionary_tagger(text: str) -> list[tuple[str, str]]:
        # Philter only asks: proper noun (name lists apply), cardinal number, or other
        tagged = []
        for word in philter._get_clean(text):  # type: ignore[no-untyped-call]
            low = word.lower()
            if re.fullmatch(r"[\d.,:/%\-]+", word):
                tag = "CD"
            elif not word.strip():
                tag = "SP"
            elif low in common or low in _CLINICAL_WORDS:
                tag = "NN"
            else:
                tag = "NNP"
            tagged.append((word, tag))
        return tagged

    philter._get_pos = dictionary_tagger  # the NLTK model is a download this platform lacks
    return philter, patterns, common


def philter_spans(text: str) -> list[tuple[int, int, str]]:
    """Spans philter-lite marks as PHI (characters it does not keep, punctuation aside)."""
    philter, patterns, _ = _philter()
    include_map, _, tracker = philter.detect_phi(text, patterns=patterns)
    keep = [False] * len(text)
    for start, stop in include_map.filecoords():
        keep[start:stop] = [True] * (stop - start)
    dates = [(p.start, p.stop) for p in tracker.phi if p.phi_type == "DATE"]
    spans: list[tuple[int, int, str]] = []
    i = 0
    while i < len(text):
        if keep[i] or not text[i].isalnum():
            i += 1
            continue
        j = i
        while j < len(text) and not keep[j] and (text[j].isalnum() or text[j] in "'’-@._/:"):
            j += 1
        while j > i and not text[j - 1].isalnum():
            j -= 1
        is_date = any(a <= i < b for a, b in dates)
        spans.append((i, j, DATE_TAG if is_date else PHI_TAG))
        i = max(j, i + 1)
    return spans


def _is_clinical(token: str) -> bool:
    low = token.lower()
    return (
        low in _CLINICAL_WORDS or bool(_MEASUREMENT.match(token)) or bool(_TAG_RE.fullmatch(token))
    )


def _rule_spans(text: str, common: frozenset[str] = frozenset()) -> list[tuple[int, int, str]]:
    # the template rules first: on equal spans the first tag wins ([MRN] before [ID])
    spans: list[tuple[int, int, str]] = []
    for rule in _RULES:
        spans += [(a, b, rule.tag) for a, b in _matches(rule, text)]
    for tag, pattern in _EXTRA:
        for m in pattern.finditer(text):
            spans.append((m.start(), m.end(), tag))
    for m in _CUE_NAME_RE.finditer(text):
        start, end = m.span("phi")
        words = list(re.finditer(_NAME_WORD, text[start:end]))
        kept = [w for w in words if w.group(0).lower() not in _CLINICAL_WORDS]
        # only the leading run of name-like words: "with anna in clinic" -> "anna"; a
        # capitalised word counts even when it is also a common word ("Will", "Hope")
        run_end = start
        for k, w in enumerate(words):
            word = w.group(0)
            low = word.lower()
            if k > 0 and (low in common or low in _CLINICAL_WORDS) and not word[:1].isupper():
                break
            if word.lower() in _CLINICAL_WORDS:
                break
            run_end = start + w.end()
        if kept and run_end > start:
            spans.append((start, run_end, NAME_TAG))
    return spans


def _merge(text: str, spans: list[tuple[int, int, str]]) -> str:
    """Replace the union of spans by tags (overlapping spans join; the first tag wins)."""
    if not spans:
        return text
    spans = sorted(spans, key=lambda s: (s[0], -s[1]))
    out: list[str] = []
    last = 0
    cur_start, cur_end, cur_tag = spans[0]
    for start, end, tag in spans[1:]:
        if start <= cur_end:
            cur_end = max(cur_end, end)
            continue
        out += [text[last:cur_start], cur_tag]
        last = cur_end
        cur_start, cur_end, cur_tag = start, end, tag
    out += [text[last:cur_start], cur_tag, text[cur_end:]]
    merged = "".join(out)
    return re.sub(r"(\[[A-Z]+\])(?:[\s,]*\1)+", r"\1", merged)


def deidentify_note(
    text: str,
    *,
    known_names: Sequence[str] = (),
    known_mrns: Sequence[str] = (),
    known_birth_dates: Sequence[str] = (),
    use_library: bool = True,
) -> str:
    """Replace the Safe Harbor identifiers of a note with tags.

    Args:
        text: the note as exported.
        known_names: the patient's names from the master patient index, any form.
        known_mrns: the patient's MRNs; they, their separated forms and their fragments of
            four or more digits are removed.
        known_birth_dates: the patient's ISO birth dates; every common rendering is removed.
        use_library: run philter-lite (True in the pipeline; False measures the rules alone).

    Returns:
        The text with ``[NAME]``, ``[MRN]``, ``[ID]``, ``[DATE]``, ``[CONTACT]``,
        ``[ADDRESS]``, ``[AGE]`` or ``[PHI]`` in place of each identifier.

    Example:
        >>> deidentify_note("Patient anna novak seen 3/4, EF 55%.", known_names=["Novak^Anna"])
        'Patient [NAME] seen [DATE], EF 55%.'
    """
    identity = PatientIdentity(tuple(known_names), tuple(known_mrns), tuple(known_birth_dates))
    folded = fold(text)
    common = _philter()[2] if use_library else frozenset()
    spans = _known_spans(text, folded, identity) + _rule_spans(text, common)
    if use_library:
        for start, end, tag in philter_spans(text):
            if tag == PHI_TAG and _is_clinical(text[start:end]):
                continue  # a measurement or clinical abbreviation the name lists caught
            spans.append((start, end, tag))
    return _merge(text, spans)


__all__ = [
    "DATE_TAG",
    "ID_TAG",
    "MRN_TAG",
    "NAME_TAG",
    "PatientIdentity",
    "date_renderings",
    "deidentify_note",
    "fold",
    "name_parts",
    "philter_spans",
    "scrub_report",
]
