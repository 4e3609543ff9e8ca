"""R-peak detection and WFDB reading on real PhysioNet records and on the synthetic cohort.

Real records come from ../shared/data (MIT-BIH 100 with expert beats, PTB s0010_re, MIMIC
03700181); the synthetic cohort supplies what those lack: wide QRS, AF, tall T waves,
500 Hz 12-leads and 300 Hz mobile recordings, all with exact R-peak times.
"""

from __future__ import annotations

import dataclasses
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import wfdb

from cardiolake.cohort.ecg_model import simulate_12lead, simulate_mobile
from cardiolake.cohort.latent import patient_rng, sample_patient
from cardiolake.cohort.settings import CohortSettings
from cardiolake.domain import MOBILE_LEAD_SETS
from pipelines.signal.rpeaks import (
    BeatMatch,
    RPeakSettings,
    detect_rpeaks,
    detect_rpeaks_multilead,
    match_beats,
)
from pipelines.signal.wfdb_reader import (
    normalise_lead,
    parse_comments,
    read_wfdb,
    select_ecg_channel,
)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
BEAT_SYMBOLS = set("NLRBAaJSVrFejnE/fQ?")


@pytest.fixture(scope="module")
def wfdb_dir() -> Path:
    """The shared WFDB records (skips when the shared data folder is absent)."""
    folder = (DATA / "wfdb").resolve()
    if not (folder / "mitdb" / "100.hea").exists():
        pytest.skip(f"shared WFDB records not found under {folder} (see ../shared/data/README.md)")
    return folder


@pytest.fixture(scope="module")
def mitdb_100(wfdb_dir: Path) -> tuple[np.ndarray, float, np.ndarray]:
    """Record 100's two leads (mV), its rate and its reference beat samples."""
    stem = wfdb_dir / "mitdb" / "100"
    record = read_wfdb(stem)
    ann = wfdb.rdann(str(stem), "atr")
    beats = [s for s, c in zip(ann.sample, ann.symbol, strict=True) if c in BEAT_SYMBOLS]
    signals, _, fs = record.ecg_matrix()
    return signals.astype(np.float64), fs, np.asarray(beats, dtype=np.int64)


# --- (a) accuracy on MIT-BIH 100 -------------------------------------------------------------


@pytest.mark.parametrize("lead", [0, 1], ids=["MLII", "V5"])
def test_mitdb_100_each_lead_reaches_99_5(mitdb_100, lead: int) -> None:
    signals, fs, reference = mitdb_100
    assert reference.size == 2273
    found = detect_rpeaks(signals[:, lead], fs)
    m = match_beats(found / fs, reference / fs, 0.15)
    assert m.sensitivity >= 0.995 and m.ppv >= 0.995, m


def test_mitdb_peaks_sit_on_the_annotated_r_peak(mitdb_100) -> None:
    signals, fs, reference = mitdb_100
    found = detect_rpeaks(signals[:, 0], fs)
    nearest = np.abs(found[None, :] - reference[:, None]).min(axis=1)
    assert np.median(nearest) <= 1 and np.percentile(nearest, 95) <= 3  # samples at 360 Hz


def test_inverted_lead_marks_the_negative_extreme(mitdb_100) -> None:
    signals, fs, reference = mitdb_100
    x = -signals[: int(120 * fs), 0]
    found = detect_rpeaks(x, fs)
    ref = reference[reference < x.size]
    m = match_beats(found / fs, ref / fs)
    assert m.sensitivity >= 0.995 and m.ppv >= 0.995, m
    assert np.median(x[found] - np.median(x)) < -0.5  # the inverted R, not a small S or T


@pytest.mark.parametrize("fs_out", [250, 300, 500])
def test_mitdb_resampled_to_other_rates(mitdb_100, fs_out: int) -> None:
    from scipy.signal import resample_poly

    signals, fs, reference = mitdb_100
    x = resample_poly(signals[: int(300 * fs), 0], fs_out, int(fs))
    found = detect_rpeaks(x, fs_out)
    ref = reference[reference < 300 * fs] / fs
    m = match_beats(found / fs_out, ref)
    assert m.sensitivity >= 0.995 and m.ppv >= 0.995, m


@pytest.mark.parametrize("bad", ["noise", "flat"])
def test_multilead_survives_a_bad_lead(mitdb_100, bad: str) -> None:
    signals, fs, reference = mitdb_100
    n = int(300 * fs)
    other = np.random.default_rng(0).normal(0, 1.0, n) if bad == "noise" else np.zeros(n)
    found = detect_rpeaks_multilead(np.c_[signals[:n, 0], other], fs)
    m = match_beats(found / fs, reference[reference < n] / fs)
    assert m.sensitivity >= 0.995 and m.ppv >= 0.995, m


def test_noise_burst_inside_a_record_gives_no_beats_there(mitdb_100) -> None:
    signals, fs, reference = mitdb_100
    x = signals[: int(120 * fs), 0].copy()
    burst = slice(int(60 * fs), int(80 * fs))
    x[burst] = np.random.default_rng(3).normal(0, 0.3, burst.stop - burst.start)
    found = detect_rpeaks(x, fs)
    inside = (found >= burst.start) & (found < burst.stop)
    assert inside.sum() == 0
    ref = reference[reference < x.size]
    ref = ref[(ref < burst.start) | (ref >= burst.stop)]
    m = match_beats(found[~inside] / fs, ref / fs)
    assert m.sensitivity >= 0.99 and m.ppv >= 0.99, m


# --- synthetic cohort: conduction, rhythm, rate and device ------------------------------------


def _match_interior(found_s: np.ndarray, truth_s: np.ndarray, duration_s: float) -> BeatMatch:
    """Match beats away from the record's edges, where a cut QRS has no defined R peak.

    Reference beats count within 0.5 s of the edges; detections count a tolerance wider,
    except those that belong to a reference beat left out.
    """
    margin, tol = 0.5, 0.15
    inner = (truth_s >= margin) & (truth_s <= duration_s - margin)
    left_out = truth_s[~inner]
    near_left_out = (
        np.abs(found_s[:, None] - left_out[None, :]).min(axis=1) <= tol
        if left_out.size
        else np.zeros(found_s.size, dtype=bool)
    )
    keep = (found_s >= margin - tol) & (found_s <= duration_s - margin + tol) & ~near_left_out
    return match_beats(found_s[keep], truth_s[inner], tol)


_CASES = {
    "as_drawn": {},
    "lbbb_af": {"conduction": "LBBB", "qrs_ms": 175.0, "af": True, "hrv_sd": 0.18, "hr_bpm": 120},
    "rbbb_slow": {"conduction": "RBBB", "qrs_ms": 150.0, "hr_bpm": 42.0},
    "af_145": {"af": True, "hrv_sd": 0.18, "hr_bpm": 145.0},
    "tall_t_slow": {"hr_bpm": 45.0, "t_amp_mv": 1.2},
}  # fmt: skip


@pytest.mark.parametrize("case", list(_CASES))
@pytest.mark.parametrize("device", ["12lead_500hz", "mobile1_300hz", "mobile6_300hz"])
def test_synthetic_recordings(case: str, device: str) -> None:
    tp = fp = fn = 0
    for i in range(8):
        state = dataclasses.replace(sample_patient(CohortSettings(seed=8), i), **_CASES[case])
        if device == "12lead_500hz":
            sim = simulate_12lead(state, patient_rng(8, i, "ecg12"))
        else:
            leads = MOBILE_LEAD_SETS[1 if device.startswith("mobile1") else 6]
            sim = simulate_mobile(state, patient_rng(8, i, "mobile"), leads=leads)
        duration = sim.signals_mv.shape[0] / sim.fs
        found = detect_rpeaks_multilead(sim.signals_mv, sim.fs) / sim.fs
        m = _match_interior(found, sim.r_peaks_s, duration)
        tp, fp, fn = tp + m.tp, fp + m.fp, fn + m.fn
    total = BeatMatch(tp, fp, fn)
    assert total.sensitivity >= 0.995 and total.ppv >= 0.995, total


def test_synthetic_single_leads_including_negative_ones() -> None:
    tp = fp = fn = 0
    for i in range(6):
        sim = simulate_12lead(sample_patient(CohortSettings(seed=9), i), patient_rng(9, i, "e"))
        for j in range(12):  # aVR and V1 are mostly negative
            found = detect_rpeaks(sim.signals_mv[:, j], sim.fs) / sim.fs
            m = _match_interior(found, sim.r_peaks_s, 10.0)
            tp, fp, fn = tp + m.tp, fp + m.fp, fn + m.fn
    total = BeatMatch(tp, fp, fn)
    assert total.sensitivity >= 0.995 and total.ppv >= 0.995, total


# --- (c) no beats for flat lines, noise and short records -----------------------------------


@pytest.mark.parametrize("fs", [250, 300, 360, 500, 1000])
def test_flat_noise_and_short_inputs_give_no_beats(fs: int) -> None:
    rng = np.random.default_rng(fs)
    n = 20 * fs
    t = np.arange(n) / fs
    inputs = {
        "zeros": np.zeros(n),
        "offset": np.full(n, 1.7),
        "quantisation": np.round(rng.normal(0, 0.002, n) / 0.005) * 0.005,
        "white": rng.normal(0, 0.3, n),
        "emg": np.convolve(rng.normal(0, 0.2, n), np.ones(3) / 3, "same"),
        "random_walk": np.cumsum(rng.normal(0, 0.01, n)),
        "mains": 0.2 * np.sin(2 * np.pi * 50 * t) + rng.normal(0, 0.01, n),
        "spikes": rng.normal(0, 0.05, n) + (rng.uniform(size=n) < 0.002) * rng.normal(0, 2, n),
        "nan": np.full(n, np.nan),
        "short": np.sin(np.arange(int(1.9 * fs)) / 10.0),
        "empty": np.zeros(0),
    }
    for name, x in inputs.items():
        out = detect_rpeaks(x, fs)
        assert out.dtype == np.int64 and out.size == 0, name
    assert detect_rpeaks_multilead(np.zeros((n, 3)), fs).size == 0
    assert detect_rpeaks_multilead(rng.normal(0, 0.5, (n, 12)), fs).size == 0


def test_short_but_long_enough_record_still_gives_beats(mitdb_100) -> None:
    signals, fs, _ = mitdb_100
    assert detect_rpeaks(signals[: int(1.9 * fs), 0], fs).size == 0
    assert detect_rpeaks(signals[: int(3.0 * fs), 0], fs).size >= 2


def test_invalid_rate_or_shape_raises() -> None:
    with pytest.raises(ValueError, match="at least 50 Hz"):
        detect_rpeaks(np.zeros(1000), 25.0)
    with pytest.raises(ValueError, match="shape"):
        detect_rpeaks_multilead(np.zeros((1000, 2, 2)), 500.0)


def test_settings_are_honoured(mitdb_100) -> None:
    signals, fs, _ = mitdb_100
    x = signals[: int(30 * fs), 0]
    assert detect_rpeaks(x, fs, settings=RPeakSettings(min_duration_s=60.0)).size == 0


def test_match_beats_is_one_to_one() -> None:
    m = match_beats(np.array([1.0, 1.01, 2.0, 5.0]), np.array([1.0, 2.05, 3.0]), 0.15)
    assert (m.tp, m.fp, m.fn) == (2, 2, 1)
    assert m.sensitivity == pytest.approx(2 / 3) and m.ppv == pytest.approx(0.5)
    assert match_beats(np.array([]), np.array([])).f1 == 1.0


# --- (b) the reader on PTB and MIMIC, and the detector on them -------------------------------


def test_ptb_record_reads_with_standard_lead_names(wfdb_dir: Path) -> None:
    record = read_wfdb(wfdb_dir / "ptb" / "s0010_re")
    assert record.lead_names == (
        "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6", "vx", "vy", "vz",
    )  # fmt: skip
    assert {c.fs for c in record.channels} == {1000.0}
    assert all(c.units == "mV" and c.signal.dtype == np.float32 for c in record.channels)
    assert record.channels[0].signal.shape == (38400,)
    assert record.header_fields["age"] == "81"
    assert record.header_fields["sex"] == "female"
    assert record.header_fields["Reason for admission"] == "Myocardial infarction"
    assert "Diagnose:" in record.comments and "Diagnose" not in record.header_fields
    assert record.checksum_errors == ()
    assert select_ecg_channel(record, "ii").name == "II"
    assert select_ecg_channel(record).name == "I"

    signals, names, fs = record.ecg_matrix()
    peaks = detect_rpeaks_multilead(signals[:, :12], fs)
    hr = 60.0 * fs / np.median(np.diff(peaks))
    assert 40 <= hr <= 150
    assert 40 * 38.4 / 60 <= peaks.size <= 150 * 38.4 / 60


def test_mimic_record_picks_mcl1_at_500_hz(wfdb_dir: Path) -> None:
    record = read_wfdb(wfdb_dir / "mimic" / "03700181")
    by_name = {c.name: c for c in record.channels}
    assert record.frame_fs == 125.0 and record.n_frames == 75000
    assert record.lead_names == ("MCL1",)
    assert by_name["MCL1"].fs == 500.0 and by_name["MCL1"].signal.shape == (300000,)
    assert not by_name["ABP"].is_ecg and by_name["ABP"].units == "mmHg"
    assert by_name["ABP"].fs == 125.0
    assert not by_name["RESP"].is_ecg and by_name["RESP"].fs == 125.0  # units say mV, name says no
    assert record.base_datetime == datetime(1994, 8, 15, 17, 27, 45)

    ecg = select_ecg_channel(record)
    assert (ecg.name, ecg.fs) == ("MCL1", 500.0)
    with pytest.raises(ValueError, match="no ECG lead 'II'"):
        select_ecg_channel(record, "II")

    peaks = detect_rpeaks(ecg.signal, ecg.fs)
    minutes = ecg.duration_s / 60
    assert 40 * minutes <= peaks.size <= 150 * minutes
    assert peaks.max() < ecg.signal.size
    assert 40 <= 60.0 * ecg.fs / np.median(np.diff(peaks)) <= 150


def test_mitdb_record_reads(wfdb_dir: Path) -> None:
    record = read_wfdb(str(wfdb_dir / "mitdb" / "100") + ".hea")
    assert record.lead_names == ("MLII", "V5")
    assert {c.fs for c in record.channels} == {360.0}
    assert record.comments[1] == "69 M 1085 1629 x1" and record.header_fields == {}
    assert record.base_datetime is None


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [("i", "I"), ("avr", "aVR"), ("AVL", "aVL"), ("v1", "V1"), ("MLII", "MLII"), ("mcl1", "MCL1"),
     ("ECG lead II", "II"), ("Lead aVF", "aVF"), ("ECG1", "ECG1"), ("CM5", "CM5"), ("vx", "vx"),
     ("ABP", None), ("RESP", None), ("PLETH", None), ("SpO2", None), ("CVP", None)],
)  # fmt: skip
def test_lead_name_normalisation(raw: str, canonical: str | None) -> None:
    assert normalise_lead(raw) == canonical


def test_parse_comments_keeps_key_value_lines_only() -> None:
    fields = parse_comments(
        ["age: 81", "Diagnose:", "69 M 1085", "Start (hh.mm): 19:45", "age: 99"]
    )
    assert fields == {"age": "81", "Start (hh.mm)": "19:45"}


# --- (d) broken records raise a ValueError naming the file -----------------------------------


def _copy_record(wfdb_dir: Path, tmp_path: Path, name: str = "100") -> Path:
    for suffix in (".hea", ".dat"):
        shutil.copyfile(wfdb_dir / "mitdb" / f"100{suffix}", tmp_path / f"{name}{suffix}")
    return tmp_path / name


def test_truncated_dat_raises(wfdb_dir: Path, tmp_path: Path) -> None:
    stem = _copy_record(wfdb_dir, tmp_path)
    data = stem.with_suffix(".dat")
    data.write_bytes(data.read_bytes()[:1_000_000])
    with pytest.raises(ValueError, match=r"100\.dat.*truncated"):
        read_wfdb(stem)


@pytest.mark.parametrize(("declared", "problem"), [(700000, "truncated"), (600000, "mismatch")])
def test_header_with_wrong_sample_count_raises(
    wfdb_dir: Path, tmp_path: Path, declared: int, problem: str
) -> None:
    stem = _copy_record(wfdb_dir, tmp_path)
    header = stem.with_suffix(".hea")
    header.write_text(header.read_text().replace("100 2 360 650000", f"100 2 360 {declared}"))
    with pytest.raises(ValueError, match=rf"100\.dat.*{problem}.*100\.hea"):
        read_wfdb(stem)


def test_missing_files_raise(wfdb_dir: Path, tmp_path: Path) -> None:
    stem = _copy_record(wfdb_dir, tmp_path)
    stem.with_suffix(".dat").unlink()
    with pytest.raises(ValueError, match=r"100\.dat.*missing"):
        read_wfdb(stem)
    with pytest.raises(ValueError, match=r"nothere\.hea.*not found"):
        read_wfdb(tmp_path / "nothere")


def test_garbage_header_raises(tmp_path: Path) -> None:
    (tmp_path / "junk.hea").write_text("this is not a header\n\x00\x01")
    with pytest.raises(ValueError, match=r"junk\.hea"):
        read_wfdb(tmp_path / "junk")
