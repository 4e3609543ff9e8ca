"""End-to-end ingestion on a real SparkSession and real Delta tables (tiny synthetic cohort)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from cardiolake import lake, tables
from cardiolake.cohort.generate import generate_cohort
from cardiolake.cohort.settings import CohortSettings
from pipelines.job import run_ingest
from pipelines.landing import scan_landing
from pipelines.settings import IngestSettings
from pipelines.signal.rpeaks import match_beats
from tests.fixtures.corpus import GATE_EXPECTATION, READER_REASON, corpus, silver_key

pytestmark = [pytest.mark.spark, pytest.mark.integration]


def _table(root: Path, table: tables.Table) -> pd.DataFrame:
    return DeltaTable(str(table.path(root))).to_pandas()


def _site_a(frame: pd.DataFrame, settings: IngestSettings) -> pd.DataFrame:
    """Rows from the first delivery (the incremental test adds a second one, site_b)."""
    prefix = str((settings.landing / "site_a").resolve())
    return frame[frame["source_uri"].str.startswith(prefix)]


def _counts(root: Path) -> dict[str, int]:
    return {
        str(t): DeltaTable(str(t.path(root))).to_pyarrow_dataset().count_rows()
        for t in lake.list_tables(root)
    }


@pytest.fixture(scope="module")
def ingested(spark, tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory):
    """The tiny cohort copied to a landing zone and ingested once, logs captured."""
    work = tmp_path_factory.mktemp("ingest")
    landing = work / "landing"
    shutil.copytree(tiny_cohort, landing / "site_a")
    settings = IngestSettings(landing=landing, lake_root=work / "lake", task_slices=4)
    handler = _Capture()
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    try:
        summary = run_ingest(spark, settings)
    finally:
        logging.getLogger().removeHandler(handler)
    return settings, summary, handler.lines


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_every_input_file_lands_in_bronze_or_quarantine(ingested) -> None:
    settings, _, _ = ingested
    inventory = scan_landing(settings.landing)
    files = {
        s.uri for s in [*inventory.records, *inventory.unknown] if not s.format.endswith("_csv")
    }
    bronze = set(_table(settings.lake_root, tables.ECG_RAW)["source_uri"]) | set(
        _table(settings.lake_root, tables.ECHO_RAW)["source_uri"]
    )
    q = _table(settings.lake_root, tables.QUARANTINE)
    quarantined = set(q[q["stage"] == "bronze"]["source_uri"])
    assert bronze.isdisjoint(quarantined)
    assert bronze | quarantined == files


def test_undecodable_inputs_are_quarantined_and_the_rest_reach_silver(ingested) -> None:
    # ingestion alone (no gates): readers reject what cannot be decoded; inputs that decode
    # but are wrong reach silver for the quality gates (tests/expectations/test_gates.py)
    settings, _, _ = ingested
    site = settings.landing / "site_a"
    q = _table(settings.lake_root, tables.QUARANTINE)
    defects = corpus(site)
    assert set(defects["defect"]) == set(READER_REASON) | set(GATE_EXPECTATION)
    for _, row in defects.iterrows():
        if row["row_id"]:
            hits = q[q["row_id"] == row["row_id"]]
        else:
            hits = q[q["source_uri"] == str((site / row["path"]).resolve())]
        if row["defect"] in READER_REASON:
            assert list(hits["stage"]) == ["bronze"], row["defect"]
            assert list(hits["reason"]) == [READER_REASON[row["defect"]]], row["defect"]
            assert hits["detail"].str.len().min() > 10
        else:
            assert hits.empty, (row["defect"], list(hits["reason"]))
            assert silver_key(row, site, settings.lake_root) is not None, row["defect"]


def test_tabular_rows_are_all_accounted_for(ingested) -> None:
    settings, _, _ = ingested
    root = settings.lake_root
    q = _table(root, tables.QUARANTINE)
    for raw, silver, stage in (
        (tables.LABS_RAW, tables.LABS, "silver_labs"),
        (tables.NOTES_RAW, tables.NOTES, "silver_notes"),
    ):
        assert len(_table(root, raw)) == len(_table(root, silver)) + int(
            (q["stage"] == stage).sum()
        )
    labs = _table(root, tables.LABS)
    creatinine = labs[labs["loinc"] == "2160-0"]
    assert set(creatinine["unit"]) == {"mg/dL"} and creatinine["value"].between(0.2, 8).all()
    assert {"umol/L", "mg/dL"} <= set(creatinine["original_unit"])


def test_rerun_adds_nothing_and_new_files_add_only_themselves(
    ingested, spark, tmp_path: Path
) -> None:
    settings, _, _ = ingested
    before = _counts(settings.lake_root)
    again = run_ingest(spark, settings)
    assert _counts(settings.lake_root) == before
    assert again.skipped_files == sum(
        n for f, n in again.files_by_format.items() if not f.endswith("_csv")
    )
    # a new delivery arrives beside the first one
    extra = CohortSettings(patients=3, seed=99, labeled_fraction=0.0, echonet_fraction=0.0)
    generate_cohort(extra, settings.landing / "site_b")
    new_files = scan_landing(settings.landing / "site_b")
    n_ecg = len([s for s in new_files.records if s.format == "wfdb"]) + len(
        list((settings.landing / "site_b" / "ecg" / "dicom").glob("*.dcm"))
    )
    n_echo = len(list((settings.landing / "site_b" / "echo" / "dicom").glob("*.dcm")))
    run_ingest(spark, settings)
    after = _counts(settings.lake_root)
    assert after["bronze.ecg_raw"] - before["bronze.ecg_raw"] == n_ecg
    assert after["bronze.echo_raw"] - before["bronze.echo_raw"] == n_echo
    assert after["quarantine.quarantine"] == before["quarantine.quarantine"]


def test_no_identifier_reaches_a_table_or_the_logs(ingested) -> None:
    settings, _, log_lines = ingested
    patients = pd.read_csv(settings.landing / "site_a" / "patients.csv", dtype=str)
    needles = set(patients["mrn"])
    for name in patients["name"]:
        needles.update(part.strip() for part in name.split(",") if len(part.strip()) > 3)
    for dob in pd.to_datetime(patients["birth_date"]):
        needles.update({dob.strftime("%Y-%m-%d"), dob.strftime("%m/%d/%Y"), dob.strftime("%Y%m%d")})
    haystacks = ["\n".join(log_lines)]
    for table in lake.list_tables(settings.lake_root):
        frame = _table(settings.lake_root, table)
        for column in frame.columns:
            if frame[column].dtype == object:
                haystacks.append("\n".join(map(str, frame[column].tolist())))
    text = "\n".join(haystacks)
    found = sorted(n for n in needles if n in text)
    assert found == []


def test_silver_rpeaks_match_the_true_beats(ingested) -> None:
    settings, _, _ = ingested
    truth = pd.read_parquet(settings.landing / "site_a" / "truth" / "beats.parquet")
    ecg = _site_a(_table(settings.lake_root, tables.ECG), settings)
    # corpus copies (mob_x*: a wrong gain reaches silver for the gates) have no truth
    ecg = ecg[ecg["source_uri"].map(lambda u: Path(u).stem).isin(set(truth["recording_id"]))]
    assert len(ecg) > 10
    tp = fp = fn = 0
    for row in ecg.itertuples():
        stem = Path(row.source_uri).stem
        true = truth[truth["recording_id"] == stem]["r_peak_s"].to_numpy()
        m = match_beats(np.asarray(row.rpeaks) / row.fs, true, 0.15)
        tp, fp, fn = tp + m.tp, fp + m.fp, fn + m.fn
    assert tp > 300
    assert tp / (tp + fn) >= 0.995 and tp / (tp + fp) >= 0.995


def test_echo_keyframes_within_one_frame_of_truth(ingested) -> None:
    settings, _, _ = ingested
    truth = pd.read_parquet(settings.landing / "site_a" / "truth" / "echo_beats.parquet")
    echo = _site_a(_table(settings.lake_root, tables.ECHO), settings)
    hits = total = 0
    for row in echo.itertuples():
        true = truth[truth["recording_id"] == Path(row.source_uri).stem]
        times = np.asarray(row.frame_times_s)
        for col, frames in (("ed_s", row.ed_frames), ("es_s", row.es_frames)):
            found = times[np.asarray(frames, dtype=int)]
            for t in true[col].dropna():
                total += 1
                hits += bool(found.size) and np.min(np.abs(found - t)) <= 1.0 / row.fps + 1e-9
    assert total > 40 and hits / total >= 0.95


def test_alignment_recovers_the_true_clock_offsets(ingested) -> None:
    settings, _, _ = ingested
    offsets = pd.read_parquet(settings.landing / "site_a" / "truth" / "clock_offsets.parquet")
    aligned = _table(settings.lake_root, tables.ALIGNMENT)
    echo = _site_a(_table(settings.lake_root, tables.ECHO), settings)[["record_key", "source_uri"]]
    echo["recording_id"] = echo["source_uri"].map(lambda u: Path(u).stem)
    pairs = aligned.groupby("echo_record_key").first().reset_index()
    pairs = pairs.merge(echo, left_on="echo_record_key", right_on="record_key").merge(
        offsets, on="recording_id"
    )
    pairs["error"] = (pairs["clock_offset_s_x"] - pairs["clock_offset_s_y"]).abs()
    assert len(pairs) >= 8
    for source, bound in (("dicom_r_wave", 0.020), ("phase_match", 0.040), ("shared_clock", 0.020)):
        errors = pairs[pairs["sync_source"] == source]["error"]
        if len(errors):
            assert errors.median() <= bound, (source, errors.describe())
    assert (aligned["lag_ed_s"].dropna().abs() < 0.2).mean() > 0.9


def test_gold_examples_have_patient_level_splits(ingested) -> None:
    settings, _, _ = ingested
    for table in (tables.EXAMPLES_PRETRAIN, tables.EXAMPLES_ALIGN):
        frame = _table(settings.lake_root, table)
        assert len(frame) > 0
        assert frame.groupby("patient_key")["split"].nunique().max() == 1
    pretrain = DeltaTable(str(tables.EXAMPLES_PRETRAIN.path(settings.lake_root)))
    lead_type = pretrain.to_pyarrow_dataset().schema.field("lead_II").type
    assert pa.types.is_list(lead_type) and lead_type.value_type == pa.float32()
