"""The generated landing zone: layout, readability, truth, bad-input corpus, determinism."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import wfdb

from cardiolake.cohort.clinical import ANALYTES, lab_rows
from cardiolake.cohort.corrupt import DEFECTS
from cardiolake.cohort.describe import describe_cohort
from cardiolake.cohort.generate import generate_cohort
from cardiolake.cohort.latent import patient_rng, sample_patient
from cardiolake.cohort.plot import plot_patient
from cardiolake.cohort.settings import CohortSettings


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_layout_and_indexes(tiny_cohort: Path) -> None:
    patients = pd.read_csv(tiny_cohort / "patients.csv", dtype=str)
    assert len(patients) == 16 and patients["mrn"].is_unique
    truth = pd.read_parquet(tiny_cohort / "truth" / "patients.parquet")
    rich = truth[~truth["mobile_only"]]
    index = pd.read_csv(tiny_cohort / "ecg" / "ecg_database.csv", dtype={"patient_id": str})
    assert len(index) == int((rich["ecg_format"] == "wfdb").sum())
    for rel in index["filename_hr"]:
        assert (tiny_cohort / "ecg" / f"{rel}.hea").exists()
    assert len(list((tiny_cohort / "ecg" / "dicom").glob("*.dcm"))) == int(
        (rich["ecg_format"] == "dicom").sum()
    )
    assert len(list((tiny_cohort / "mobile").glob("mob_0*.hea"))) == 16
    filelist = pd.read_csv(tiny_cohort / "echo" / "echonet" / "FileList.csv")
    assert len(filelist) == int(rich["echonet"].sum()) > 0
    for name in filelist["FileName"]:
        assert (tiny_cohort / "echo" / "echonet" / "Videos" / f"{name}.avi").exists()


def test_every_good_file_opens_with_the_fields_readers(tiny_cohort: Path) -> None:
    corrupt = set(pd.read_csv(tiny_cohort / "truth" / "corrupt.csv")["path"])
    recordings = pd.read_parquet(tiny_cohort / "truth" / "recordings.parquet")
    beats = pd.read_parquet(tiny_cohort / "truth" / "beats.parquet")
    for rec in recordings.itertuples():
        path = tiny_cohort / rec.path
        if rec.kind in {"ecg12", "mobile_ecg"} and path.suffix != ".dcm":
            record = wfdb.rdrecord(str(path))
            assert record.p_signal.shape[1] in (1, 6, 12)
            assert np.isfinite(record.p_signal).all()
        elif path.suffix == ".dcm":
            ds = pydicom.dcmread(path)
            if rec.kind == "echo":
                frames = ds.pixel_array
                assert frames.ndim == 3 and frames.shape[1] >= 112
            else:
                assert ds.waveform_array(0).shape[1] == 12
        n_beats = (beats["recording_id"] == rec.recording_id).sum()
        if rec.kind != "echo":
            assert n_beats >= 5
        assert rec.path not in corrupt


def test_timeline_has_labs_after_the_label_time() -> None:
    settings = CohortSettings(seed=5)
    after = before = 0
    for i in range(60):
        state = sample_patient(settings, i)
        for row in lab_rows(state, patient_rng(5, i, "labs")):
            if pd.Timestamp(row["draw_time"]) > pd.Timestamp(state.label_time):
                after += 1
            else:
                before += 1
    assert after > 0 and before > after


def test_labs_use_known_loinc_and_mixed_creatinine_units(tiny_cohort: Path) -> None:
    labs = pd.read_csv(tiny_cohort / "labs" / "labs.csv", dtype=str)
    corrupt_rows = set(pd.read_csv(tiny_cohort / "truth" / "corrupt.csv")["row_id"].dropna())
    good = labs[~labs["specimen_id"].isin(corrupt_rows)]
    assert set(good["loinc"]) <= set(ANALYTES)
    assert {"mg/dL", "umol/L"} <= set(good[good["loinc"] == "2160-0"]["unit"])


def test_corrupt_corpus_lists_every_defect_and_each_is_really_broken(tiny_cohort: Path) -> None:
    corrupt = pd.read_csv(tiny_cohort / "truth" / "corrupt.csv", dtype=str, keep_default_na=False)
    assert set(corrupt["defect"]) == set(DEFECTS)
    labs = pd.read_csv(tiny_cohort / "labs" / "labs.csv", dtype=str)
    labels = pd.read_csv(tiny_cohort / "labels" / "labels.csv", dtype=str)
    mrns = set(pd.read_csv(tiny_cohort / "patients.csv", dtype=str)["mrn"])
    for row in corrupt.itertuples():
        path = tiny_cohort / row.path
        if row.defect == "truncated_dat":
            with pytest.raises(Exception):  # noqa: B017 - wfdb raises several types
                wfdb.rdrecord(str(path.with_suffix("")))
        elif row.defect == "sample_count_mismatch":
            header = wfdb.rdheader(str(path.with_suffix("")))
            held = path.with_suffix(".dat").stat().st_size // (2 * header.n_sig)
            assert held == 2 * header.sig_len
        elif row.defect == "wrong_gain":
            assert np.abs(wfdb.rdrecord(str(path.with_suffix(""))).p_signal).max() > 50  # mV
        elif row.defect == "not_dicom":
            with pytest.raises(pydicom.errors.InvalidDicomError):
                pydicom.dcmread(path)
        elif row.defect == "dicom_pixel_truncated":
            with pytest.raises(Exception):  # noqa: B017 - pydicom raises ValueError variants
                pydicom.dcmread(path).pixel_array  # noqa: B018
        elif row.defect == "nonmonotone_frame_times":
            ds = pydicom.dcmread(path)
            assert min(float(v) for v in ds.FrameTimeVector[1:]) < 0
        elif row.defect == "duplicate_file":
            assert path.read_bytes() == (tiny_cohort / row.source).read_bytes()
        elif row.defect == "lab_impossible_value":
            assert float(labs[labs["specimen_id"] == row.row_id]["value"].iloc[0]) > 20
        elif row.defect == "lab_unknown_loinc":
            assert labs[labs["specimen_id"] == row.row_id]["loinc"].iloc[0] not in ANALYTES
        elif row.defect == "label_unknown_patient":
            assert labels[labels["label_id"] == row.row_id]["mrn"].iloc[0] not in mrns


def test_same_seed_gives_byte_identical_files_at_any_worker_count(tmp_path: Path) -> None:
    base = dict(patients=4, seed=21, corrupt_fraction=1.0, echonet_fraction=0.5)
    generate_cohort(CohortSettings(**base, workers=1), tmp_path / "a")  # type: ignore[arg-type]
    generate_cohort(CohortSettings(**base, workers=2), tmp_path / "b")  # type: ignore[arg-type]
    a, b = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) > 20
    assert a == b


def test_describe_and_plot(tiny_cohort: Path, tmp_path: Path) -> None:
    summary = describe_cohort(tiny_cohort)
    assert summary.counts["patients"] == 16
    assert summary.counts["corrupt_inputs"] >= len(DEFECTS)
    assert 0 <= summary.prevalence["urgent_latent_all"] <= 1
    truth = pd.read_parquet(tiny_cohort / "truth" / "patients.parquet")
    patient = truth[~truth["mobile_only"]]["patient_id"].iloc[0]
    png = plot_patient(tiny_cohort, patient, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    with pytest.raises(KeyError):
        plot_patient(tiny_cohort, "CL999999", tmp_path / "missing.png")


def test_plot_shows_no_identifiers(tiny_cohort: Path, tmp_path: Path) -> None:
    # The title is built from the study id only; the MRN given on the command line stays out.
    truth = pd.read_parquet(tiny_cohort / "truth" / "patients.parquet")
    row = truth[~truth["mobile_only"]].iloc[0]
    import matplotlib.pyplot as plt

    captured: list[str] = []
    original = plt.Figure.suptitle

    def spy(self, t, **kw):  # type: ignore[no-untyped-def]
        captured.append(t)
        return original(self, t, **kw)

    plt.Figure.suptitle = spy  # type: ignore[method-assign]
    try:
        plot_patient(tiny_cohort, row["mrn"], tmp_path / "p.png")
    finally:
        plt.Figure.suptitle = original  # type: ignore[method-assign]
    assert captured and row["mrn"] not in captured[0] and row["patient_id"] in captured[0]


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy not installed (dicom3tools)")
def test_every_generated_dicom_passes_dciodvfy(tiny_cohort: Path) -> None:
    corrupt = set(pd.read_csv(tiny_cohort / "truth" / "corrupt.csv")["path"])
    checked = 0
    for path in sorted(tiny_cohort.rglob("*.dcm")):
        if path.relative_to(tiny_cohort).as_posix() in corrupt:
            continue
        out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
        errors = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("Error")]
        assert errors == [], f"{path.name}: {errors}"
        checked += 1
    assert checked >= 10


def test_every_cli_command_has_help() -> None:
    from typer.testing import CliRunner

    from cardiolake.cli import app

    runner = CliRunner()
    for args in (
        ["--help"],
        ["cohort", "--help"],
        *(["cohort", c, "--help"] for c in ("generate", "describe", "plot")),
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "Usage" in result.output


def test_cli_generate_dry_run_writes_nothing(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cardiolake.cli import app

    config = tmp_path / "c.yaml"
    config.write_text("cohort:\n  patients: 3\n  seed: 4\n")
    result = CliRunner().invoke(
        app,
        ["cohort", "generate", "--out", str(tmp_path / "x"), "--config", str(config), "--dry-run"],
    )
    assert result.exit_code == 0, result.output
    assert "patients=3" in result.output and not (tmp_path / "x").exists()
