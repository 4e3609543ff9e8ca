"""Tabular row functions: lab normalisation, note de-identification, label resolution."""

from __future__ import annotations

import csv
import math
import pickle
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from cardiolake.cohort import clinical
from cardiolake.cohort.corrupt import add_corrupt_corpus
from cardiolake.cohort.latent import PatientState, patient_rng, sample_patient
from cardiolake.cohort.settings import CohortSettings
from cardiolake.domain import FINDINGS
from cardiolake.pseudonym import patient_key
from pipelines.tabular import (
    LAB_CATALOGUE,
    LabelVote,
    LabResult,
    RowError,
    cohen_kappa,
    deidentify_note,
    fleiss_kappa,
    normalize_lab,
    parse_label,
    resolve_exam_labels,
    scrub_report,
    vote_table,
)

SETTINGS = CohortSettings()
N_PATIENTS = 50

_TEST_SECRET = "a-test-secret-of-sufficient-length"


@pytest.fixture(scope="module")
def patients() -> list[PatientState]:
    return [sample_patient(SETTINGS, i) for i in range(N_PATIENTS)]


def _lab(loinc: str = "2160-0", value: object = "1.0", unit: str = "mg/dL", **extra: object):
    row = {
        "specimen_id": "S1", "mrn": "12345678", "loinc": loinc, "test_name": "x",
        "value": value, "unit": unit, "draw_time": "2024-06-01T09:00:00",
    }  # fmt: skip
    return {**row, **extra}


# --- labs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loinc", "value", "unit", "expected", "canonical"),
    [
        ("2160-0", 88.42, "umol/L", 1.0, "mg/dL"),
        ("2160-0", "176.84", "\u00b5mol/L", 2.0, "mg/dL"),
        ("2160-0", "1.3", "mg/dl", 1.3, "mg/dL"),
        ("718-7", 135, "g/L", 13.5, "g/dL"),
        ("718-7", "12.1", "g/dL", 12.1, "g/dL"),
        ("33762-6", "850", "ng/L", 850.0, "pg/mL"),
        ("67151-1", "0.014", "ng/mL", 14.0, "ng/L"),
        ("2823-3", "4.4", "mEq/L", 4.4, "mmol/L"),
        ("2951-2", "139", "meq/l", 139.0, "mmol/L"),
    ],
)
def test_units_convert_to_the_canonical_unit(loinc, value, unit, expected, canonical) -> None:
    result = normalize_lab(_lab(loinc, value, unit))
    assert isinstance(result, LabResult)
    assert result.value == pytest.approx(expected, rel=1e-9)
    assert result.unit == canonical == LAB_CATALOGUE[loinc].unit
    assert (result.original_value, result.original_unit) == (float(value), unit)
    assert result.draw_time == datetime(2024, 6, 1, 9)


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (_lab(unit="furlongs"), "unknown_unit"),
        (_lab(value="abc"), "unparseable_value"),
        (_lab(value=""), "unparseable_value"),
        (_lab(value="<0.1"), "unparseable_value"),
        (_lab(value="nan"), "unparseable_value"),
        (_lab(draw_time="yesterday"), "unparseable_time"),
        (_lab(mrn=""), "missing_patient"),
        ({"loinc": "2160-0", "value": "1", "unit": "mg/dL"}, "missing_patient"),
    ],
)
def test_bad_lab_rows_get_their_reason(row, reason) -> None:
    result = normalize_lab(row)
    assert isinstance(result, RowError)
    assert result.reason == reason
    assert "12345678" not in result.detail  # details go to quarantine and logs: no MRNs


@pytest.mark.parametrize(
    ("row", "value", "unit"),
    [
        (_lab("2823-3", 42.0, "mmol/L"), 42.0, "mmol/L"),
        (_lab("2160-0", "-1", "mg/dL"), -1.0, "mg/dL"),
        (_lab("718-7", "135", "g/dL"), 135.0, "g/dL"),  # g/L mislabelled as g/dL
        (_lab("99999-9", "1.0", "mg/dL"), 1.0, "mg/dL"),  # outside the catalogue: as reported
    ],
)
def test_implausible_lab_rows_read_through_to_the_labs_gate(row, value, unit) -> None:
    # reading is silver's job, plausibility the gate's: these rows reach silver and the labs
    # suite (labs_known_loinc / labs_value_within_limits, tested in expectations/) holds them
    result = normalize_lab(row)
    assert isinstance(result, LabResult)
    assert (result.value, result.unit) == (value, unit)
    analyte = LAB_CATALOGUE.get(result.loinc)
    assert analyte is None or not analyte.low <= result.value <= analyte.high


def test_generator_reports_the_domain_catalogue() -> None:
    # the cohort generator and ingestion share cardiolake.domain's catalogue: every analyte the
    # generator exports is there, with its name and canonical unit, and its alternative unit
    # converts back at the generator's own factor
    assert set(clinical.ANALYTES) == set(LAB_CATALOGUE)
    for loinc, made in clinical.ANALYTES.items():
        known = LAB_CATALOGUE[loinc]
        assert (made.name, made.canonical_unit) == (known.name, known.unit)
        if made.alt_unit is not None:
            assert known.to_canonical(made.alt_factor, made.alt_unit) == pytest.approx(1.0)


def test_results_and_catalogue_pickle_for_spark_tasks() -> None:
    result = normalize_lab(_lab())
    error = normalize_lab(_lab(unit="furlongs"))
    vote = parse_label(_label_row())
    for obj in (LAB_CATALOGUE, result, error, vote, resolve_exam_labels([vote])):
        assert pickle.loads(pickle.dumps(obj)) == obj


def test_lab_times_accept_site_formats_and_offsets() -> None:
    aware = normalize_lab(_lab(draw_time="2024-06-01T11:00:00+02:00"))
    site = normalize_lab(_lab(draw_time="06/01/2024 09:00"))
    assert isinstance(aware, LabResult) and isinstance(site, LabResult)
    assert aware.draw_time == site.draw_time == datetime(2024, 6, 1, 9)


# The tabular defects exactly as cardiolake.cohort.corrupt writes them.
_CORRUPT_LAB = {
    "specimen_id": "SX0006", "mrn": "", "loinc": "2823-3", "test_name": "Potassium",
    "value": "42.0", "unit": "mmol/L", "draw_time": "2024-06-01T09:00:00",
}  # fmt: skip
_CORRUPT_LABEL = {
    "label_id": "LX0008", "mrn": "90000008", "exam_time": "2024-06-01T09:00:00",
    "label_time": "2024-06-02T09:00:00", "reader": "adjudicated", "triage": "urgent",
    **dict.fromkeys(FINDINGS, "0"),
}  # fmt: skip


def _check_corrupt_rows(
    defects: dict[str, str], labs: list[dict[str, str]], labels: list[dict[str, str]], known
) -> None:
    # each reads fine; what is wrong with it is the labs gate's to find
    for row in labs:
        result = normalize_lab(row)
        assert isinstance(result, LabResult) and result.specimen_id == row["specimen_id"]
        analyte = LAB_CATALOGUE.get(result.loinc)
        if defects[row["specimen_id"]] == "lab_unknown_loinc":
            assert analyte is None
        else:
            assert defects[row["specimen_id"]] == "lab_impossible_value"
            assert analyte is not None and result.value > analyte.high
    for row in labels:
        assert defects[row["label_id"]] == "label_unknown_patient"
        assert isinstance(parse_label(row), LabelVote)  # a well-formed row ...
        assert patient_key(row["mrn"], _TEST_SECRET) not in known  # ... of nobody known


def test_corrupt_tabular_rows_read_through_to_the_gates(patients) -> None:
    mrn = patients[0].mrn
    labs = [
        {**_CORRUPT_LAB, "mrn": mrn},
        {**_CORRUPT_LAB, "mrn": mrn, "specimen_id": "SX0007", "loinc": "99999-9",
         "value": "1.0", "unit": "mg/dL"},
    ]  # fmt: skip
    defects = {
        "SX0006": "lab_impossible_value",
        "SX0007": "lab_unknown_loinc",
        "LX0008": "label_unknown_patient",
    }
    known = {patient_key(p.mrn, _TEST_SECRET) for p in patients}
    _check_corrupt_rows(defects, labs, [_CORRUPT_LABEL], known)


def test_generated_corrupt_corpus_rows_read_through_to_the_gates(tmp_path: Path, patients) -> None:
    # A landing zone with only the tabular exports: the file defects find no ECG or echo to
    # copy, so add_corrupt_corpus adds its tabular defects (and a non-DICOM file).
    for folder in ("labs", "labels", "echo/dicom"):
        (tmp_path / folder).mkdir(parents=True)
    _write_csv(
        tmp_path / "patients.csv", clinical.PATIENT_COLUMNS, map(clinical.patient_row, patients)
    )
    _write_csv(tmp_path / "labs" / "labs.csv", clinical.LAB_COLUMNS, [])
    _write_csv(tmp_path / "labels" / "labels.csv", clinical.LABEL_COLUMNS, [])
    settings = CohortSettings(patients=N_PATIENTS, corrupt_fraction=0.2)
    add_corrupt_corpus(settings, tmp_path)

    defects = {r["row_id"]: r["defect"] for r in _read_csv(tmp_path / "truth" / "corrupt.csv")}
    labs = _read_csv(tmp_path / "labs" / "labs.csv")
    labels = _read_csv(tmp_path / "labels" / "labels.csv")
    assert len(labs) == 2 and len(labels) == 1
    known = {patient_key(p.mrn, _TEST_SECRET) for p in patients}
    _check_corrupt_rows(defects, labs, labels, known)


def test_clean_cohort_labs_normalise_near_their_latent_value(patients) -> None:
    z_scores: list[float] = []
    for i, state in enumerate(patients):
        for row in clinical.lab_rows(state, patient_rng(SETTINGS.seed, i, "labs")):
            result = normalize_lab({k: str(v) for k, v in row.items()})  # as a CSV gives them
            assert isinstance(result, LabResult), result
            latent = clinical._latent_lab_value(state, row["loinc"])
            cv = clinical.ANALYTES[row["loinc"]].bio_cv
            z_scores.append(abs(math.log(result.value / latent)) / cv)
    assert len(z_scores) > 300
    # draws scatter log-normally by one CV: over hundreds of draws a couple pass 3 CV by chance,
    # while a wrong conversion factor (x10, x88) would land tens of CVs away
    assert sum(z <= 3 for z in z_scores) / len(z_scores) >= 0.99
    assert max(z_scores) <= 4.0


# --- notes --------------------------------------------------------------------------------


def _date_spellings(d) -> set[str]:
    return {
        f"{d:%m/%d/%Y}", f"{d.month}/{d.day}/{d:%Y}", f"{d:%Y-%m-%d}", f"{d:%d.%m.%Y}",
        f"{d.day} {d:%B %Y}", f"{d:%B} {d.day}, {d:%Y}",
    }  # fmt: skip


@pytest.mark.parametrize("use_index", [True, False], ids=["with_index", "patterns_only"])
def test_cohort_notes_lose_their_phi_and_keep_the_findings(patients, use_index: bool) -> None:
    for i, state in enumerate(patients):
        (row,) = clinical.note_rows(state, patient_rng(SETTINGS.seed, i, "notes"))
        names = [state.name] if use_index else []
        mrns = [state.mrn] if use_index else []
        clean = deidentify_note(row["text"], known_names=names, known_mrns=mrns)

        for part in state.name.split("^"):
            assert part.lower() not in clean.lower()
        assert state.mrn not in clean and state.mrn[-4:] not in clean
        for spelling in _date_spellings(state.birth_date) | _date_spellings(state.exam_time):
            assert spelling not in clean
        assert scrub_report(clean, known_names=[state.name], known_mrns=[state.mrn]) == []

        assert "EF" in clean and "bpm" in clean
        assert ("atrial fibrillation" if state.af else "sinus rhythm") in clean
        assert f"rate about {round(state.hr_bpm)} bpm" in clean
        assert clean.count("[DATE]") == 2 and "[MRN]" in clean and "[NAME]" in clean


def test_deidentify_handles_other_formats_and_leaves_clinical_numbers() -> None:
    text = (
        "Dr. Maya Lindqvist reviewed Mrs Novak on 12 March 2024 (admitted 2024-03-10, "
        "discharged 14.03.2024, echo March 11, 2024). MR#: 0042317. Account 99812345. "
        "Spoke with Quinn Abara; phone 555-201-7788, ext. 4411. "
        "BP 120/80, K 4.5 mmol/L, NT-proBNP 1250 pg/mL, QRS 148 ms, LBBB, EF 35%."
    )
    clean = deidentify_note(text)
    for phi in ("Maya", "Lindqvist", "Novak", "Quinn", "Abara", "March", "2024", "0042317",
                "99812345", "555", "4411"):  # fmt: skip
        assert phi not in clean, (phi, clean)
    for keep in ("BP 120/80", "K 4.5 mmol/L", "NT-proBNP 1250 pg/mL", "QRS 148 ms", "LBBB",
                 "EF 35%"):  # fmt: skip
        assert keep in clean, (keep, clean)
    assert scrub_report(clean) == []
    assert scrub_report(text)  # the raw note is flagged


# --- labels -------------------------------------------------------------------------------

EXAM = datetime(2024, 5, 1, 10, 0)


def _vote(reader: str, urgent: bool, hours: float = 5.0, **findings: bool) -> LabelVote:
    votes = {f: findings.get(f, False) for f in FINDINGS}
    return LabelVote(f"L_{reader}", reader, urgent, votes, EXAM, EXAM + timedelta(hours=hours))


def _label_row(**extra: object) -> dict[str, object]:
    row = {
        "label_id": "L1", "mrn": "12345678", "exam_time": "2024-05-01T10:00:00",
        "label_time": "2024-05-02T10:00:00", "reader": "reader_1", "triage": "urgent",
        **dict.fromkeys(FINDINGS, "0"),
    }  # fmt: skip
    return {**row, **extra}


def test_parse_label_reads_a_vote() -> None:
    vote = parse_label(_label_row(triage="Routine", reduced_lvef="1"))
    assert isinstance(vote, LabelVote)
    assert vote.urgent is False and vote.findings["reduced_lvef"] is True
    assert vote.label_time - vote.exam_time == timedelta(days=1)
    assert not vote.is_adjudication


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (_label_row(triage="soon"), "unknown_triage"),
        (_label_row(triage=""), "unknown_triage"),
        (_label_row(exam_time="n/a"), "unparseable_time"),
        (_label_row(hyperkalaemia="maybe"), "unparseable_finding"),
        (_label_row(reader=" "), "missing_reader"),
        (_label_row(mrn=None), "missing_patient"),
    ],
)
def test_bad_label_rows_get_their_reason(row, reason) -> None:
    result = parse_label(row)
    assert isinstance(result, RowError) and result.reason == reason and result.row_id == "L1"


def test_a_label_before_its_exam_reads_through_to_the_labels_gate() -> None:
    vote = parse_label(_label_row(label_time="2024-04-30T10:00:00"))
    assert isinstance(vote, LabelVote) and vote.label_time < vote.exam_time


def test_unanimous_readers_give_the_label() -> None:
    label = resolve_exam_labels([_vote("reader_1", True, 3), _vote("reader_2", True, 9)])
    assert label.urgent is True and label.findings["reduced_lvef"] is False
    assert not label.adjudicated and not label.needs_adjudication
    assert (label.n_readers, label.agreement) == (2, 1.0)
    assert label.label_time == EXAM + timedelta(hours=9)


def test_adjudication_overrides_disagreeing_readers() -> None:
    votes = [
        _vote("reader_1", True, reduced_lvef=True),
        _vote("reader_2", False),
        _vote("reader_3", False),
        _vote("adjudicated", True, hours=30, reduced_lvef=True),
    ]
    label = resolve_exam_labels(votes)
    assert label.urgent is True and label.findings["reduced_lvef"] is True
    assert label.adjudicated and not label.needs_adjudication
    assert label.n_readers == 3 and label.reader_votes == (True, False, False)
    assert label.agreement == pytest.approx(2 / 3)
    assert label.label_time == EXAM + timedelta(hours=30)


def test_disagreement_without_adjudication_is_flagged() -> None:
    three = resolve_exam_labels(
        [_vote("reader_1", True), _vote("reader_2", True), _vote("reader_3", False)]
    )
    assert three.urgent is True and three.needs_adjudication and not three.adjudicated
    tie = resolve_exam_labels([_vote("reader_1", True), _vote("reader_2", False)])
    assert tie.urgent is None and tie.needs_adjudication and tie.agreement == 0.5
    finding_tie = resolve_exam_labels(
        [_vote("reader_1", False, hyperkalaemia=True), _vote("reader_2", False)]
    )
    assert finding_tie.urgent is False and finding_tie.findings["hyperkalaemia"] is None
    assert finding_tie.needs_adjudication


def test_a_resent_vote_replaces_the_readers_earlier_one() -> None:
    label = resolve_exam_labels(
        [_vote("reader_1", False, 2), _vote("reader_1", True, 8), _vote("reader_2", True, 4)]
    )
    assert label.n_readers == 2 and label.urgent is True and not label.needs_adjudication


def test_resolving_mixed_or_no_exams_fails() -> None:
    other = LabelVote("x", "reader_2", True, {}, EXAM + timedelta(days=1), EXAM + timedelta(days=2))
    with pytest.raises(ValueError):
        resolve_exam_labels([_vote("reader_1", True), other])
    with pytest.raises(ValueError):
        resolve_exam_labels([])


def test_cohort_reader_agreement_is_moderate_to_substantial() -> None:
    settings = CohortSettings(labeled_fraction=1.0)
    exams: list[list[LabelVote]] = []
    for i in range(200):
        state = sample_patient(settings, i)
        rows = clinical.label_rows(state, patient_rng(settings.seed, i, "labels"))
        votes = [parse_label(r) for r in rows]
        assert all(isinstance(v, LabelVote) for v in votes)
        exams.append(votes)  # type: ignore[arg-type]
    assert len(exams) == 200

    first = [next(v.urgent for v in e if v.reader == "reader_1") for e in exams]
    second = [next(v.urgent for v in e if v.reader == "reader_2") for e in exams]
    assert 0.4 <= cohen_kappa(first, second) <= 0.95
    assert 0.4 <= fleiss_kappa(vote_table(exams)) <= 0.95
    for finding in FINDINGS:
        assert 0.4 <= fleiss_kappa(vote_table(exams, finding)) <= 0.95

    resolved = [resolve_exam_labels(e) for e in exams]
    assert not any(r.needs_adjudication for r in resolved)  # the export adjudicates every split
    truth = [sample_patient(settings, i).urgent for i in range(200)]
    assert [r.urgent for r in resolved] == truth


def test_kappas_match_reference_values() -> None:
    # Fleiss (1971) as worked on Wikipedia: 10 items, 14 raters, 5 categories -> 0.210
    table = [
        [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
    ]  # fmt: skip
    assert fleiss_kappa(table) == pytest.approx(0.210, abs=5e-4)
    # two raters: Fleiss and Cohen differ only in the chance model, close on balanced data
    a = [1, 1, 0, 0, 1, 0, 1, 0, 1, 1]
    b = [1, 0, 0, 0, 1, 0, 1, 1, 1, 1]
    pairs = [[(x == 0) + (y == 0), x + y] for x, y in zip(a, b, strict=True)]
    assert fleiss_kappa(pairs) == pytest.approx(cohen_kappa(a, b), abs=0.02)
    assert cohen_kappa([1, 1, 1], [1, 1, 1]) == 1.0


# --- helpers ------------------------------------------------------------------------------


def _write_csv(path: Path, columns, rows) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
