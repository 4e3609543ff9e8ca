"""Write a synthetic hospital landing zone: every modality of every patient, plus ground truth.

Patients are independent (each has private random streams), so they are generated in worker
processes and the per-patient rows are assembled in patient order afterwards: the output is
byte-identical for a given seed whatever the number of workers.

Layout of the output directory::

    patients.csv                      master patient index (the only list of names / DOBs)
    ecg/records500/00000/00001_hr.*   12-lead WFDB, PTB-XL-like, indexed by ecg/ecg_database.csv
    ecg/dicom/ecg_00001.dcm           12-lead ECGs delivered as DICOM waveforms instead
    mobile/mob_00001.*                1- or 6-lead mobile ECG (WFDB, device in header comments)
    echo/dicom/echo_00001.dcm         ultrasound multi-frame cine (some compressed)
    echo/echonet/                     EchoNet-Dynamic copy of a share of the echoes
    labs/labs.csv  notes/notes.csv  labels/labels.csv
    truth/                            latent state, true beats, keyframes, clock offsets
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cardiolake.cohort import clinical
from cardiolake.cohort.ecg_model import simulate_12lead, simulate_mobile
from cardiolake.cohort.echo_phantom import simulate_echo
from cardiolake.cohort.latent import (
    PatientState,
    echo_duration_s,
    patient_rng,
    sample_patient,
    truth_row,
)
from cardiolake.cohort.settings import CohortSettings
from cardiolake.cohort.writers.dicom_ecg import write_dicom_ecg
from cardiolake.cohort.writers.dicom_echo import write_dicom_echo
from cardiolake.cohort.writers.echonet import (
    FILELIST_COLUMNS,
    VOLUME_TRACING_COLUMNS,
    echonet_file_name,
    filelist_row,
    volume_tracing_rows,
    write_echonet_avi,
)
from cardiolake.cohort.writers.wfdb_writer import write_wfdb
from cardiolake.domain import MOBILE_LEAD_SETS

logger = logging.getLogger(__name__)

ECG_DATABASE_COLUMNS = (
    "ecg_id", "patient_id", "age", "sex", "recording_date", "device", "site", "filename_hr",
)  # fmt: skip
ProgressCallback = Callable[[int], None]


@dataclass
class PatientOutput:
    """Rows one patient contributes to the cohort's index and truth tables."""

    index: int
    ecg_database: list[dict[str, Any]] = field(default_factory=list)
    labs: list[dict[str, Any]] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)
    labels: list[dict[str, Any]] = field(default_factory=list)
    patient: dict[str, Any] = field(default_factory=dict)
    truth: dict[str, Any] = field(default_factory=dict)
    recordings: list[dict[str, Any]] = field(default_factory=list)
    beats: list[dict[str, Any]] = field(default_factory=list)
    echo_beats: list[dict[str, Any]] = field(default_factory=list)
    echo_frames: list[dict[str, Any]] = field(default_factory=list)
    echonet_files: list[dict[str, Any]] = field(default_factory=list)
    echonet_tracings: list[dict[str, Any]] = field(default_factory=list)


def _ecg_dir_for(ecg_id: int) -> str:
    # PTB-XL groups records into folders of 1000: records500/00000/00001_hr
    return f"records500/{(ecg_id // 1000) * 1000:05d}"


def generate_patient(settings: CohortSettings, index: int, out_dir: Path) -> PatientOutput:
    """Simulate one patient, write its files under ``out_dir`` and return its rows.

    Args:
        settings: cohort settings.
        index: zero-based patient number.
        out_dir: the landing-zone root.

    Returns:
        The rows this patient adds to the CSV indexes and the truth tables.
    """
    state = sample_patient(settings, index)
    out = PatientOutput(index=index, patient=clinical.patient_row(state), truth=truth_row(state))
    number = index + 1
    seed = settings.seed

    # mobile ECG: everyone has one (the point-of-care device)
    leads = MOBILE_LEAD_SETS[state.mobile_leads]
    mobile = simulate_mobile(
        state, patient_rng(seed, index, "mobile"), leads=leads, fs=settings.mobile_fs,
        duration_s=settings.mobile_seconds,
    )  # fmt: skip
    device = "kardia-mobile-1l" if state.mobile_leads == 1 else "kardia-6l"
    stem = f"mob_{number:05d}"
    write_wfdb(
        mobile, out_dir / "mobile", stem, base_datetime=state.mobile_time,
        comments=[f"mrn: {state.mrn}", f"device: {device}", f"leads: {len(leads)}"],
    )  # fmt: skip
    out.recordings.append(
        _recording(state, stem, "mobile_ecg", f"mobile/{stem}", state.mobile_time)
    )
    out.beats += _beat_rows(stem, mobile.r_peaks_s, mobile.t_end_s)

    if state.mobile_only:
        out.labs = clinical.lab_rows(state, patient_rng(seed, index, "labs"))
        return out

    ecg = simulate_12lead(
        state, patient_rng(seed, index, "ecg12"), fs=settings.ecg_fs,
        duration_s=settings.ecg_seconds,
    )  # fmt: skip
    if state.ecg_format == "wfdb":
        stem = f"{number:05d}_hr"
        rel = f"{_ecg_dir_for(number)}/{stem}"
        write_wfdb(
            ecg, out_dir / "ecg" / _ecg_dir_for(number), stem, base_datetime=state.exam_time,
            comments=[f"device: {_ecg_device(state)}"],
        )  # fmt: skip
        out.ecg_database.append(
            {
                "ecg_id": number, "patient_id": state.mrn, "age": round(state.age),
                "sex": 1 if state.sex == "F" else 0,  # PTB-XL codes female as 1
                "recording_date": state.exam_time.strftime("%Y-%m-%d %H:%M:%S"),
                "device": _ecg_device(state), "site": index % 7, "filename_hr": rel,
            }
        )  # fmt: skip
        out.recordings.append(_recording(state, stem, "ecg12", f"ecg/{rel}", state.exam_time))
    else:
        stem = f"ecg_{number:05d}"
        write_dicom_ecg(ecg, out_dir / "ecg" / "dicom" / f"{stem}.dcm", state=state, seed=seed)
        out.recordings.append(
            _recording(state, stem, "ecg12", f"ecg/dicom/{stem}.dcm", state.exam_time)
        )
    out.beats += _beat_rows(stem, ecg.r_peaks_s, ecg.t_end_s)
    ecg_stem = stem

    echo = simulate_echo(
        state, patient_rng(seed, index, "echo"), r_peaks_s=ecg.r_peaks_s, t_end_s=ecg.t_end_s,
        clip_start_s=state.echo_start_offset_s, duration_s=echo_duration_s(state, settings),
        fps=state.echo_fps, size=settings.echo_size,
    )  # fmt: skip
    stem = f"echo_{number:05d}"
    write_dicom_echo(
        echo, out_dir / "echo" / "dicom" / f"{stem}.dcm", state=state, seed=seed,
        compression=state.echo_compression, include_r_wave_vector=state.has_r_wave_vector,
        synchronized=state.synchronized,
    )  # fmt: skip
    rec = _recording(state, stem, "echo", f"echo/dicom/{stem}.dcm", state.echo_start_time)
    rec.update(paired_ecg=ecg_stem, true_start_offset_s=state.echo_start_offset_s)
    out.recordings.append(rec)
    out.echo_beats += [
        {"recording_id": stem, "beat": i, "ed_s": float(ed), "es_s": float(es)}
        for i, (ed, es) in enumerate(_pair_keyframes(echo.ed_s, echo.es_s))
    ]
    out.echo_frames += [
        {"recording_id": stem, "frame": i, "t_s": float(t), "lv_area_px": float(a)}
        for i, (t, a) in enumerate(zip(echo.frame_times_s, echo.lv_area_px, strict=True))
    ]
    if state.echonet:
        name = echonet_file_name(seed, state)
        write_echonet_avi(echo, out_dir / "echo" / "echonet" / "Videos" / f"{name}.avi")
        out.echonet_files.append(filelist_row(echo, name, state=state))
        out.echonet_tracings += volume_tracing_rows(echo, name, size=settings.echo_size)
        out.echo_beats += [
            {"recording_id": name, "beat": i, "ed_s": float(ed), "es_s": float(es)}
            for i, (ed, es) in enumerate(_pair_keyframes(echo.ed_s, echo.es_s))
        ]
        rec = _recording(
            state, name, "echo", f"echo/echonet/Videos/{name}.avi", state.echo_start_time
        )
        rec.update(paired_ecg=ecg_stem, true_start_offset_s=state.echo_start_offset_s)
        out.recordings.append(rec)

    out.labs = clinical.lab_rows(state, patient_rng(seed, index, "labs"))
    out.notes = clinical.note_rows(state, patient_rng(seed, index, "notes"))
    out.labels = clinical.label_rows(state, patient_rng(seed, index, "labels"))
    return out


def _ecg_device(state: PatientState) -> str:
    return ("CS-12", "MAC5500", "PageWriter TC70")[state.index % 3]


def _recording(
    state: PatientState, recording_id: str, kind: str, path: str, start: datetime
) -> dict[str, Any]:
    return {
        "recording_id": recording_id,
        "patient_id": state.patient_id,
        "mrn": state.mrn,
        "kind": kind,
        "path": path,
        "device_start_time": start,
        "clock_offset_s": state.echo_clock_offset_s if kind == "echo" else 0.0,
        "paired_ecg": None,
        "true_start_offset_s": 0.0,
    }


def _beat_rows(
    recording_id: str, r_peaks_s: np.ndarray, t_end_s: np.ndarray
) -> list[dict[str, Any]]:
    return [
        {"recording_id": recording_id, "beat": i, "r_peak_s": float(r), "t_end_s": float(t)}
        for i, (r, t) in enumerate(zip(r_peaks_s, t_end_s, strict=True))
    ]


def _pair_keyframes(ed_s: np.ndarray, es_s: np.ndarray) -> Iterable[tuple[float, float]]:
    """Pair each ED with the first ES after it inside the clip (NaN ES when the clip ends)."""
    for ed in ed_s:
        later = es_s[es_s > ed]
        yield float(ed), float(later[0]) if later.size else float("nan")


def _write_csv(path: Path, columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
            n += 1
    return n


def _write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path, index=False)


def _run_workers(
    settings: CohortSettings, out_dir: Path, progress: ProgressCallback | None
) -> list[PatientOutput]:
    indices = range(settings.patients)
    if settings.workers == 1:
        outputs = []
        for i in indices:
            outputs.append(generate_patient(settings, i, out_dir))
            if progress:
                progress(1)
        return outputs
    chunk = max(1, min(16, settings.patients // (settings.workers * 4)))
    outputs = []
    with ProcessPoolExecutor(max_workers=settings.workers) as pool:
        for result in pool.map(
            generate_patient,
            [settings] * settings.patients,
            indices,
            [out_dir] * settings.patients,
            chunksize=chunk,
        ):
            outputs.append(result)
            if progress:
                progress(1)
    return outputs


def generate_cohort(
    settings: CohortSettings, out_dir: Path, *, progress: ProgressCallback | None = None
) -> dict[str, int]:
    """Generate a whole cohort landing zone under ``out_dir``.

    Args:
        settings: cohort settings (size, seed, shares, workers).
        out_dir: destination folder; created when missing. Existing cohort files are
            overwritten, so re-running with the same settings reproduces the same bytes.
        progress: called with the number of patients just finished.

    Returns:
        Counts of what was written (patients, files per kind, rows per table).
    """
    from cardiolake.cohort.corrupt import add_corrupt_corpus  # needs the good files first

    out_dir.mkdir(parents=True, exist_ok=True)
    logger.info(
        "generating %d patients (seed %d) into %s", settings.patients, settings.seed, out_dir
    )
    outputs = sorted(_run_workers(settings, out_dir, progress), key=lambda o: o.index)

    def rows(attr: str) -> list[dict[str, Any]]:
        return [row for o in outputs for row in getattr(o, attr)]

    tables = (
        (
            "patients",
            out_dir / "patients.csv",
            clinical.PATIENT_COLUMNS,
            [o.patient for o in outputs],
        ),
        (
            "ecg_database",
            out_dir / "ecg" / "ecg_database.csv",
            ECG_DATABASE_COLUMNS,
            rows("ecg_database"),
        ),
        ("labs", out_dir / "labs" / "labs.csv", clinical.LAB_COLUMNS, rows("labs")),
        ("notes", out_dir / "notes" / "notes.csv", clinical.NOTE_COLUMNS, rows("notes")),
        ("labels", out_dir / "labels" / "labels.csv", clinical.LABEL_COLUMNS, rows("labels")),
    )
    counts = {name: _write_csv(path, columns, table) for name, path, columns, table in tables}
    if rows("echonet_files"):
        echonet = out_dir / "echo" / "echonet"
        counts["echonet"] = _write_csv(
            echonet / "FileList.csv", FILELIST_COLUMNS, rows("echonet_files")
        )
        _write_csv(echonet / "VolumeTracings.csv", VOLUME_TRACING_COLUMNS, rows("echonet_tracings"))
    truth = out_dir / "truth"
    _write_parquet(truth / "patients.parquet", [o.truth for o in outputs])
    _write_parquet(truth / "recordings.parquet", rows("recordings"))
    _write_parquet(truth / "beats.parquet", rows("beats"))
    _write_parquet(truth / "echo_beats.parquet", rows("echo_beats"))
    _write_parquet(truth / "echo_frames.parquet", rows("echo_frames"))
    recs = pd.DataFrame(rows("recordings"))
    echo_recs = recs[recs["kind"] == "echo"]
    _write_parquet(
        truth / "clock_offsets.parquet",
        echo_recs[
            ["recording_id", "paired_ecg", "mrn", "clock_offset_s", "true_start_offset_s"]
        ].to_dict("records"),
    )
    counts["recordings"] = len(recs)
    counts["corrupt"] = add_corrupt_corpus(settings, out_dir)
    counts["bytes"] = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    logger.info("cohort written: %s", counts)
    return counts


def file_digest(path: Path) -> str:
    """SHA-256 of a file (used to check byte-identical regeneration)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


__all__ = [
    "PatientOutput",
    "generate_cohort",
    "generate_patient",
    "file_digest",
]
