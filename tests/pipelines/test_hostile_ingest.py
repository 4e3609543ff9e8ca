"""Acceptance: a real ``cardiolake ingest`` of a landing zone with hostile files and planted PHI.

One small generated cohort gets identifiers planted in every free-text place (WFDB comments,
DICOM descriptions, names and private tags, notes in many forms), files that declare
gigabytes (billions of frames, decoded gigapixels, a deflate bomb, 10^9-sample headers, a
2 MB header), symlink loops, a dangling link, a FIFO, a Windows-1252 patient index with a
truncated row, a BOM + semicolon labs export, burned-in annotation, an R-wave vector shifted
200 ms and a finding-level reader disagreement. The CLI runs once, as a subprocess (its
memory measured as the proportional set size of its whole process tree); the tests then
check the lake, its files and the run's output.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from cardiolake import tables
from cardiolake.cohort import hostile

ROOT = Path(__file__).resolve().parents[2]
MEMORY_LIMIT_BYTES = 4 * 1024**3


@dataclass
class HostileRun:
    landing: Path
    lake: Path
    output: str
    peak_bytes: int
    seconds: float
    planted: list[str]
    hostile: list[dict[str, str]]
    shifted_echo: str


def _tree_pss(root: psutil.Process) -> int:
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_full_info().pss  # forked workers share pages: PSS, not RSS
        except psutil.Error:
            continue
    return total


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory) -> HostileRun:
    from cardiolake.cohort.generate import generate_cohort
    from cardiolake.cohort.settings import CohortSettings

    landing = tmp_path_factory.mktemp("hostile_landing")
    lake = tmp_path_factory.mktemp("hostile_lake") / "lake"
    settings = CohortSettings(patients=4, seed=5, labeled_fraction=1.0, echonet_fraction=0.0)
    generate_cohort(settings, landing)
    planted = hostile.plant_identifiers(landing)
    shifted = hostile.shift_r_wave(landing)
    hostile.add_finding_disagreement(landing)
    rows = hostile.add_hostile_corpus(landing)
    env = {k: v for k, v in os.environ.items() if k != "CARDIOLAKE_PSEUDONYM_SECRET"}
    cli = Path(sys.executable).parent / "cardiolake"  # the installed console script
    cmd = [str(cli), "ingest", "--landing", str(landing), "--lake", str(lake)]
    log = lake.parent / "ingest.log"
    start = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)  # noqa: S603
        parent, peak = psutil.Process(proc.pid), 0
        while proc.poll() is None:
            peak = max(peak, _tree_pss(parent))
            time.sleep(0.25)
    seconds = time.monotonic() - start
    output = log.read_text(errors="replace")
    assert proc.returncode == 0, output[-4000:]
    return HostileRun(landing, lake, output, peak, seconds, planted, rows, shifted)


def _table(run: HostileRun, table: tables.Table) -> Any:
    return DeltaTable(str(table.path(run.lake))).to_pandas()


def test_the_batch_finishes_within_memory_and_every_clean_recording_lands(
    hostile_run: HostileRun,
) -> None:
    run = hostile_run
    print(f"hostile ingest: {run.seconds:.0f} s, peak PSS {run.peak_bytes / 1024**3:.2f} GiB")
    assert run.peak_bytes < MEMORY_LIMIT_BYTES
    landed = set(_table(run, tables.ECG_RAW)["source_uri"]) | set(
        _table(run, tables.ECHO_RAW)["source_uri"]
    )
    clean = [
        *run.landing.glob("ecg/records500/*/*.hea"), *run.landing.glob("ecg/dicom/ecg_0*.dcm"),
        *run.landing.glob("mobile/mob_0*.hea"), *run.landing.glob("echo/dicom/echo_0*.dcm"),
    ]  # fmt: skip
    assert clean and {str(p.resolve()) for p in clean} <= landed
    labs_rows = sum(1 for _ in csv.reader((run.landing / "labs" / "labs.csv").open(
        encoding="utf-8-sig"), delimiter=";")) - 1  # fmt: skip
    assert len(_table(run, tables.LABS_RAW)) == labs_rows  # BOM + semicolons read as labs


def test_every_hostile_file_is_quarantined_with_its_reason(hostile_run: HostileRun) -> None:
    run = hostile_run
    q = _table(run, tables.QUARANTINE)
    bronze = q[q["stage"] == "bronze"]
    for row in run.hostile:
        uri = str((run.landing / row["path"]).absolute())
        hits = bronze[
            (bronze["source_uri"] == uri)
            | (bronze["source_uri"] == os.path.realpath(run.landing / row["path"]))
        ]
        assert row["reason"] in set(hits["reason"]), (row, hits[["reason", "detail"]])
    # the truncated index row is set aside; the rest of the index is used
    assert len(_table(run, tables.LABS)) > 0
    assert not q["detail"].fillna("").str.contains("Trunc").any()


def test_shifted_r_wave_and_unadjudicated_finding_are_held_back(hostile_run: HostileRun) -> None:
    run = hostile_run
    q = _table(run, tables.QUARANTINE)
    echo_uri = str((run.landing / run.shifted_echo).resolve())
    echo = _table(run, tables.ECHO)
    keys = set(echo.loc[echo["source_uri"] == echo_uri, "record_key"])
    unaligned = q[(q["stage"] == "gold_alignment") & q["source_uri"].eq(echo_uri)]
    alignment = _table(run, tables.ALIGNMENT)
    rows = alignment[alignment["echo_record_key"].isin(keys)]
    failed = q[q["stage"].str.startswith("gate_") & q["row_id"].isin(rows["alignment_key"])]
    assert (unaligned["reason"].str.startswith("unaligned").any()) or (
        len(rows) and len(failed) == len(rows)
    )
    gate = q[(q["stage"] == "gate_labels")]
    assert "labels_adjudicated_where_readers_disagree" in set(gate["reason"])


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


def _cell_strings(value: Any) -> list[str]:
    if value is None or isinstance(value, bytes | float):
        return []
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_cell_strings(k), *_cell_strings(v))]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _cell_strings(v)]
    return [str(value)]


def _lake_text(lake: Path) -> list[tuple[str, str]]:
    """(where, text) of every string-like cell of every Delta table and every text file."""
    out: list[tuple[str, str]] = []
    for log in lake.rglob("_delta_log"):
        data: pa.Table = DeltaTable(str(log.parent)).to_pyarrow_table()
        for name in data.column_names:
            kind = data.schema.field(name).type
            if pa.types.is_floating(kind) or pa.types.is_binary(kind):
                continue
            if pa.types.is_list(kind) and pa.types.is_floating(kind.value_type):
                continue
            for value in data.column(name).to_pylist():
                out += [(f"{log.parent.name}.{name}", s) for s in _cell_strings(value)]
    for path in lake.rglob("*"):
        if path.is_file() and path.suffix in {".html", ".json", ".yml", ".yaml", ".txt", ".md"}:
            out.append((str(path.relative_to(lake)), path.read_text(errors="replace")))
    return out


def test_no_planted_identifier_reaches_any_table_file_or_log(hostile_run: HostileRun) -> None:
    run = hostile_run
    haystack = [*_lake_text(run.lake), ("ingest output", run.output)]
    leaks = []
    for identifier in run.planted:
        if len(identifier) < 3:
            continue
        pattern = re.compile(rf"(?<![\w]){re.escape(_fold(identifier))}(?![\w])")
        leaks += [(identifier, where) for where, text in haystack if pattern.search(_fold(text))]
    assert leaks == []


@pytest.fixture(scope="module")
def feast_store_text(hostile_run: HostileRun) -> list[tuple[str, str]]:
    """Features applied and materialized from the hostile lake; (file, text) of the Feast
    registry and online store (protobuf values and entity keys are stored uncompressed)."""
    cli = Path(sys.executable).parent / "cardiolake"
    for step in ("apply", "materialize"):
        done = subprocess.run(  # noqa: S603
            [str(cli), "features", step, "--lake", str(hostile_run.lake)],
            cwd=ROOT, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    feast_dir = hostile_run.lake / "_feast"
    found = [p for p in feast_dir.rglob("*") if p.is_file() and p.suffix != ".parquet"]
    online = [p for p in found if p.suffix == ".db" and "registry" not in p.name]
    assert online, f"no online store under {feast_dir}: {found}"
    with sqlite3.connect(online[0]) as conn:  # the store holds one row per patient and feature
        tables_ = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        assert sum(conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables_)
    return [(str(p.relative_to(feast_dir)), p.read_bytes().decode("latin-1")) for p in found]


def test_no_planted_identifier_reaches_the_feast_online_store(
    hostile_run: HostileRun, feast_store_text: list[tuple[str, str]]
) -> None:
    # the scan sees what the store holds: the pseudonymous keys of the served patients
    keys = set(_table(hostile_run, tables.LABS)["patient_key"])
    assert any(key in text for key in keys for _, text in feast_store_text)
    leaks = []
    for identifier in hostile_run.planted:
        if len(identifier) < 3:
            continue
        # latin-1 keeps UTF-8 bytes apart: match the identifier's own bytes and its folded form
        forms = {identifier.encode().decode("latin-1"), _fold(identifier)}
        for form in forms:
            pattern = re.compile(rf"(?<![\w]){re.escape(form)}(?![\w])", re.IGNORECASE)
            leaks += [(identifier, where) for where, text in feast_store_text
                      if pattern.search(text)]  # fmt: skip
    assert leaks == []


def test_notes_keep_their_clinical_content(hostile_run: HostileRun) -> None:
    run = hostile_run
    notes = _table(run, tables.NOTES)
    raw = {
        r["note_id"]: r["text"]
        for r in csv.DictReader((run.landing / "notes" / "notes.csv").open(encoding="utf-8"))
    }
    text = " ".join(notes["text"])
    for phrase in ("EF 35%", "QTc 468 ms", "K 4.1 mmol/L", "BNP 450 pg/mL", "LBBB", "72 bpm"):
        assert phrase in text
    kept = sum(len(re.sub(r"\[[A-Z]+\]", "", t)) for t in notes["text"])
    total = sum(len(raw[n]) for n in notes["note_id"] if n in raw)
    print(f"notes: {len(notes)} of {len(raw)} in silver, {kept / total:.0%} of characters kept")
    assert len(notes) == len(raw) and kept / total > 0.6
    q = _table(run, tables.QUARANTINE)
    assert json.dumps(list(q["detail"].fillna(""))).count("Evergreen") == 0


def test_dates_are_shifted_per_patient_and_intervals_survive(hostile_run: HostileRun) -> None:
    import pandas as pd

    run = hostile_run
    truth = pd.read_parquet(run.landing / "truth" / "recordings.parquet")
    truth["uri"] = [
        os.path.realpath(run.landing / (p + (".hea" if not p.endswith(".dcm") else "")))
        for p in truth["path"]
    ]
    raw = pd.concat([_table(run, tables.ECG_RAW), _table(run, tables.ECHO_RAW)], ignore_index=True)[
        ["source_uri", "patient_key", "acquisition_time"]
    ]
    both = raw.merge(truth, left_on="source_uri", right_on="uri")
    assert len(both) >= 8
    real = pd.to_datetime(both["device_start_time"]).dt.tz_localize("UTC")
    shift = pd.to_datetime(both["acquisition_time"], utc=True) - real
    assert (shift < pd.Timedelta(0)).all()  # no real acquisition date lands
    # one shift per patient, in whole days: every interval within a patient survives
    # (headers keep milliseconds, the truth microseconds: compare whole days)
    days = shift.dt.round("D")
    assert ((shift - days).abs() < pd.Timedelta(seconds=1)).all()
    assert (days.groupby(both["patient_key"]).nunique() == 1).all()
    assert days.groupby(both["patient_key"]).first().nunique() > 1  # patients differ
    for column in ("draw_time",):
        labs = _table(run, tables.LABS_RAW)
        assert (
            not labs[column]
            .isin(
                pd.read_csv(run.landing / "labs" / "labs.csv", sep=";", encoding="utf-8-sig")[
                    column
                ]
            )
            .any()
        )
