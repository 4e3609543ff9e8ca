"""Notes de-identification (philter-lite + patient index + rules) and its independent check."""

from __future__ import annotations

import re

import pytest

from pipelines.tabular.deid_verify import verify_note
from pipelines.tabular.notes import deidentify_note, fold

KNOWN = {
    "known_names": ["O'Brien-Núñez^María-José"],
    "known_mrns": ["00123456"],
    "known_birth_dates": ["1941-04-22"],
}
#: (note, identifiers that must go, clinical phrases that must stay)
CASES = [
    (
        "pt maría o'brien-núñez seen 3/4 by dr. wakefield. EF 35%, QTc 468 ms, K 4.1 mmol/L.",
        ["maría", "o'brien", "núñez", "3/4", "wakefield"],
        ["EF 35%", "QTc 468 ms", "K 4.1 mmol/L"],
    ),
    (
        "MARIA-JOSE OBRIEN-NUNEZ (MRN 0012-3456), DOB April 22, 1941, age 93. Sinus rhythm.",
        ["maria", "0012-3456", "april 22, 1941", "93"],
        ["Sinus rhythm"],
    ),
    (
        "Wife Jane Okonkwo-Smith (+44 20 7946 0958, jane.os@example.org) lives at 1742 "
        "Evergreen Terrace, Springfield, IL 62704. BNP 450 pg/mL.",
        ["jane", "okonkwo", "7946", "jane.os@example.org", "evergreen", "62704"],
        ["BNP 450 pg/mL"],
    ),
    (
        "Chart ref 3456-ext; portal https://portal.example.org/p/88231 from 10.23.45.67. "
        "Acct# 4455-8899-1123, pacemaker serial AB12-77Q9X. Seen on March 3. Platelets "
        "3456 x10^9/L is a lab value, not an id.",
        ["portal.example.org", "10.23.45.67", "4455-8899-1123", "ab12-77q9x", "march 3"],
        ["Platelets"],
    ),
]


@pytest.mark.parametrize(("text", "identifiers", "clinical"), CASES)
def test_identifiers_go_and_clinical_content_stays(
    text: str, identifiers: list[str], clinical: list[str]
) -> None:
    clean = deidentify_note(text, **KNOWN)
    low = fold(clean)
    for identifier in identifiers:
        assert not re.search(rf"(?<!\w){re.escape(fold(identifier))}(?!\w)", low), (
            identifier,
            clean,
        )
    for phrase in clinical:
        assert phrase in clean, (phrase, clean)
    assert verify_note(clean, **KNOWN) == []


def test_the_verifier_shares_no_detector_and_catches_what_a_scrubber_missed() -> None:
    # what a scrubber that missed things would have left: the verifier flags every category
    leaked = (
        "maria obrien nunez called; record 00123456; born 22 Apr 1941; "
        "mail x@y.org, http://example.org, 10.1.2.3, 415 555 0134 22"
    )
    assert verify_note(leaked, **KNOWN) == [
        "birth_date", "date", "email", "ip", "long_number", "mrn", "name", "url",
    ]  # fmt: skip
    # tags and clinical numbers are no finding
    assert verify_note("[NAME] EF 55%, QTc 452 ms, K 4.1 mmol/L on [DATE].", **KNOWN) == []
    assert verify_note("QRS 98 102 110 ms, Hb 12.5 10.25 g/dL, EF 55 60 65 %", **KNOWN) == []


def test_mrn_fragments_go_but_lab_values_sharing_digits_stay() -> None:
    clean = deidentify_note("call 3456 today; troponin 3456 ng/L", known_mrns=["00123456"])
    assert clean == "call [MRN] today; troponin 3456 ng/L"
