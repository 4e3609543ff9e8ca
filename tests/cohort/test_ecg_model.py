"""ECG model: detectable beats, physiological ranges, morphology, determinism, WFDB round trip."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import neurokit2 as nk
import numpy as np
import pytest
import wfdb
from wfdb import processing

from cardiolake.cohort.ecg_model import (
    BeatTimes,
    simulate_12lead,
    simulate_beats,
    simulate_mobile,
)
from cardiolake.cohort.latent import PatientState, patient_rng, sample_patient
from cardiolake.cohort.settings import CohortSettings
from cardiolake.cohort.signals import EcgSimulation
from cardiolake.cohort.writers.wfdb_writer import write_wfdb
from cardiolake.domain import MOBILE_LEAD_SETS, STANDARD_LEADS

SEEDS = (0, 1, 2)
TOLERANCE_S = 0.15
EDGE_S = 0.5  # beats this close to a record edge are cut by it and not scored


@dataclass(frozen=True)
class _Case:
    seed: int
    state: PatientState
    ecg12: EcgSimulation
    mobile: EcgSimulation


def _patients(seed: int) -> list[PatientState]:
    """The first 20 patients of a cohort, plus its first LBBB, RBBB, AF and LVH patients."""
    settings = CohortSettings(seed=seed)
    chosen = [sample_patient(settings, i) for i in range(20)]
    wanted = {
        "LBBB": lambda p: p.conduction == "LBBB",
        "RBBB": lambda p: p.conduction == "RBBB",
        "AF": lambda p: p.af,
        "LVH": lambda p: p.lvh,
    }
    index = 20
    while wanted and index < 3000:
        state = sample_patient(settings, index)
        hits = [name for name, test in wanted.items() if test(state)]
        if hits:
            chosen.append(state)
            for name in hits:
                del wanted[name]
        index += 1
    assert not wanted, f"no {sorted(wanted)} patient in seed {seed}"
    return chosen


@pytest.fixture(scope="module")
def cases() -> list[_Case]:
    out = []
    for seed in SEEDS:
        for state in _patients(seed):
            ecg12 = simulate_12lead(state, patient_rng(seed, state.index, "ecg12"))
            mobile = simulate_mobile(
                state,
                patient_rng(seed, state.index, "mobile"),
                leads=MOBILE_LEAD_SETS[state.mobile_leads],
            )
            out.append(_Case(seed, state, ecg12, mobile))
    return out


def _match(true_s: np.ndarray, found_s: np.ndarray, duration_s: float) -> np.ndarray:
    """Greedy one-to-one matching within the tolerance.

    Returns:
        [true peaks found, true peaks, detections that are true, detections], each counted
        only away from the record edges (matching itself uses every peak).
    """
    used = np.zeros(len(found_s), dtype=bool)
    hit = np.zeros(len(true_s), dtype=bool)
    for k, r in enumerate(true_s):
        dist = np.abs(found_s - r)
        dist[used] = np.inf
        if len(dist) and dist.min() <= TOLERANCE_S:
            used[np.argmin(dist)] = hit[k] = True
    in_true = (true_s >= EDGE_S) & (true_s < duration_s - EDGE_S)
    in_found = (found_s >= EDGE_S) & (found_s < duration_s - EDGE_S)
    return np.array([hit[in_true].sum(), in_true.sum(), used[in_found].sum(), in_found.sum()])


def _neurokit_peaks(x: np.ndarray, fs: int) -> np.ndarray:
    _, info = nk.ecg_peaks(nk.ecg_clean(x, sampling_rate=fs), sampling_rate=fs)
    return np.asarray(info["ECG_R_Peaks"], dtype=float) / fs


def _xqrs_peaks(x: np.ndarray, fs: int) -> np.ndarray:
    xqrs = processing.XQRS(sig=x.astype(np.float64), fs=fs)
    xqrs.detect(verbose=False)
    return np.asarray(xqrs.qrs_inds, dtype=float) / fs


def _assert_detected(counts: list[np.ndarray], label: str) -> None:
    total = np.sum(counts, axis=0)
    se, ppv = total[0] / total[1], total[2] / total[3]
    print(f"{label}: Se {se:.4f} PPV {ppv:.4f} over {total[1]} beats, {len(counts)} records")
    assert se >= 0.99 and ppv >= 0.99, (label, se, ppv)
    for c in counts:
        assert c[0] >= 0.95 * c[1] and c[2] >= 0.95 * c[3], (label, c)


def test_neurokit_finds_the_true_r_peaks_in_lead_ii(cases: list[_Case]) -> None:
    counts = []
    for case in cases:
        sim = case.ecg12
        found = _neurokit_peaks(sim.signals_mv[:, STANDARD_LEADS.index("II")], sim.fs)
        counts.append(_match(sim.r_peaks_s, found, sim.duration_s))
    _assert_detected(counts, "12-lead II, neurokit2")


def test_xqrs_finds_the_true_r_peaks_in_mobile_lead_i(cases: list[_Case]) -> None:
    # XQRS, not neurokit2: neurokit2 counts the T waves of slow (<55 bpm) single-lead records
    # as beats once the T peak falls more than its 0.3 s refractory window after the R.
    counts = []
    for case in cases:
        sim = case.mobile
        found = _xqrs_peaks(sim.signals_mv[:, sim.lead_names.index("I")], sim.fs)
        counts.append(_match(sim.r_peaks_s, found, sim.duration_s))
    _assert_detected(counts, "mobile I, XQRS")


def _r_height_mv(sim: EcgSimulation) -> float:
    """Tallest lead's median R height above the PR segment."""
    x, fs = sim.signals_mv.astype(np.float64), sim.fs
    heights = []
    for r in sim.r_peaks_s:
        i = round(r * fs)
        pr = i - round(0.12 * fs)
        if pr - round(0.02 * fs) < 0 or i + round(0.06 * fs) > len(x):
            continue
        base = np.median(x[pr - round(0.02 * fs) : pr + round(0.02 * fs)], axis=0)
        heights.append(x[i - round(0.06 * fs) : i + round(0.06 * fs)].max(axis=0) - base)
    return float(np.median(heights, axis=0).max())


def test_beats_and_voltages_are_physiological(cases: list[_Case]) -> None:
    for case in cases:
        state, sim = case.state, case.ecg12
        beats = simulate_beats(
            state, patient_rng(case.seed, state.index, "ecg12"), duration_s=sim.duration_s
        )
        inside = beats.inside(sim.duration_s)
        # simulate_beats is the first draw of a simulation: same seed, same beats.
        np.testing.assert_array_equal(beats.r_s[inside], sim.r_peaks_s)
        np.testing.assert_array_equal(beats.t_end_s[inside], sim.t_end_s)
        rr = np.diff(sim.r_peaks_s)
        assert 40 <= 60 / rr.mean() <= 150
        qrs_ms = 1000 * (beats.qrs_off_s - beats.qrs_on_s)[inside]
        assert np.all((qrs_ms >= 70) & (qrs_ms <= 180))
        qtc_ms = 1000 * ((beats.t_end_s - beats.qrs_on_s) / np.sqrt(beats.rr_s))[inside]
        assert np.all((qtc_ms >= 350) & (qtc_ms <= 520))
        assert np.all(sim.t_end_s > sim.r_peaks_s + 0.15)
        assert 0.3 <= _r_height_mv(sim) <= 3.0
        # AF is irregularly irregular; sinus rhythm varies only a few per cent.
        cv = rr.std() / rr.mean()
        assert cv > 0.08 if state.af else cv < 0.1
        if not state.af:
            assert np.isnan(beats.p_on_s).sum() == 0
            assert np.allclose(1000 * (beats.qrs_on_s - beats.p_on_s), state.pr_ms)


def _measured_axis_deg(sim: EcgSimulation, beats: BeatTimes) -> float:
    """Frontal axis from the net QRS areas of leads I and II (hexaxial reference)."""
    x, t = sim.signals_mv.astype(np.float64), np.arange(sim.signals_mv.shape[0]) / sim.fs
    areas = []
    for on, off in zip(beats.qrs_on_s, beats.qrs_off_s, strict=True):
        if on - 0.02 >= 0 and off < t[-1]:
            base = x[(t >= on - 0.02) & (t < on)].mean(axis=0)
            areas.append((x[(t >= on) & (t <= off)] - base).sum(axis=0))
    net = np.median(areas, axis=0)
    lead_i, lead_ii = net[STANDARD_LEADS.index("I")], net[STANDARD_LEADS.index("II")]
    return math.degrees(math.atan2((2 * lead_ii - lead_i) / math.sqrt(3), lead_i))


def test_frontal_axis_matches_the_patient(cases: list[_Case]) -> None:
    errors = []
    for case in cases:
        state, sim = case.state, case.ecg12
        beats = simulate_beats(
            state, patient_rng(case.seed, state.index, "ecg12"), duration_s=sim.duration_s
        )
        measured = _measured_axis_deg(sim, beats)
        errors.append(abs((measured - state.axis_deg + 180) % 360 - 180))
    assert max(errors) < 20 and np.median(errors) < 3, errors


def test_lateral_st_deviation_matches_the_patient(cases: list[_Case]) -> None:
    checked = 0
    for case in cases:
        state, sim = case.state, case.ecg12
        # LVH strain and bundle branch blocks add their own secondary ST-T changes.
        if state.conduction != "none" or state.lvh or state.st_shift_mv > -0.05:
            continue
        beats = simulate_beats(
            state, patient_rng(case.seed, state.index, "ecg12"), duration_s=sim.duration_s
        )
        x, fs = sim.signals_mv.astype(np.float64), sim.fs
        st = []
        for on, off in zip(beats.qrs_on_s, beats.qrs_off_s, strict=True):
            if on - 0.03 >= 0 and off + 0.06 < sim.duration_s:  # J + 60 ms against PR segment
                st.append(
                    x[round((off + 0.06) * fs)]
                    - x[round((on - 0.03) * fs) : round(on * fs)].mean(0)
                )
        lateral = np.median(st, axis=0)[[STANDARD_LEADS.index(name) for name in ("I", "V5", "V6")]]
        assert abs(lateral.mean() - state.st_shift_mv) < 0.04, (state.index, lateral)
        checked += 1
    assert checked > 0


def _median_beat(sim: EcgSimulation, lead: str, start_s: float, stop_s: float) -> np.ndarray:
    x = sim.signals_mv[:, sim.lead_names.index(lead)].astype(np.float64)
    t = np.arange(len(x)) / sim.fs
    grid = np.arange(start_s, stop_s, 1 / 500)
    beats = [
        np.interp(r + grid, t, x) for r in sim.r_peaks_s if 0 <= r + start_s < r + stop_s < t[-1]
    ]
    beat = np.median(beats, axis=0)
    return beat - beat[0]


def test_qrs_morphology_follows_conduction(cases: list[_Case]) -> None:
    seen = set()
    for case in cases:
        state, sim = case.state, case.ecg12
        q = state.qrs_ms / 1000
        v1 = _median_beat(sim, "V1", -0.6 * q, 0.6 * q)
        v6 = _median_beat(sim, "V6", -0.6 * q, 0.6 * q)
        late = slice(int(0.6 * len(v1)), None)
        if state.conduction == "none":  # rS in V1
            assert v1.min() < -abs(v1.max())
        elif state.conduction == "LBBB":  # QS/rS in V1, broad R in V6
            assert v1.min() < -abs(v1.max()) and v6.max() > abs(v6.min())
        else:  # terminal R' in V1, terminal S in V6
            assert v1[late].max() > 0.1 and v6[late].min() < -0.05
        seen.add(state.conduction)
    assert seen == {"none", "LBBB", "RBBB"}


def test_limb_leads_obey_einthoven_and_goldberger(cases: list[_Case]) -> None:
    for sim in (cases[0].ecg12, *(c.mobile for c in cases if len(c.mobile.lead_names) == 6)):
        lead = {
            name: sim.signals_mv[:, k].astype(np.float64) for k, name in enumerate(sim.lead_names)
        }
        np.testing.assert_allclose(lead["III"], lead["II"] - lead["I"], atol=1e-5)
        np.testing.assert_allclose(lead["aVR"], -(lead["I"] + lead["II"]) / 2, atol=1e-5)
        np.testing.assert_allclose(lead["aVF"], lead["II"] - lead["I"] / 2, atol=1e-5)


def test_mobile_records_show_the_same_heart_with_new_beats(cases: list[_Case]) -> None:
    for case in cases[:20]:
        ecg12, mobile = case.ecg12, case.mobile
        assert mobile.signals_mv.shape == (9000, len(mobile.lead_names))
        assert not np.isin(np.round(mobile.r_peaks_s, 6), np.round(ecg12.r_peaks_s, 6)).all()
        a = _median_beat(ecg12, "I", -0.08, 0.08)
        b = _median_beat(mobile, "I", -0.08, 0.08)
        assert np.corrcoef(a, b)[0, 1] > 0.9, case.state.index


def test_same_seed_same_record_and_shapes() -> None:
    state = sample_patient(CohortSettings(seed=5), 3)
    a = simulate_12lead(state, patient_rng(5, 3, "ecg12"))
    b = simulate_12lead(state, patient_rng(5, 3, "ecg12"))
    c = simulate_12lead(state, patient_rng(5, 3, "ecg12-repeat"))
    np.testing.assert_array_equal(a.signals_mv, b.signals_mv)
    np.testing.assert_array_equal(a.r_peaks_s, b.r_peaks_s)
    assert not np.array_equal(a.signals_mv, c.signals_mv)
    assert a.signals_mv.dtype == np.float32 and a.signals_mv.shape == (5000, 12)
    assert a.lead_names == STANDARD_LEADS and a.fs == 500
    assert np.all((a.r_peaks_s >= 0) & (a.r_peaks_s < 10.0))
    m1 = simulate_mobile(state, patient_rng(5, 3, "mobile"), leads=("I",))
    m2 = simulate_mobile(state, patient_rng(5, 3, "mobile"), leads=("I",))
    np.testing.assert_array_equal(m1.signals_mv, m2.signals_mv)
    assert m1.signals_mv.shape == (9000, 1) and m1.fs == 300
    with pytest.raises(ValueError):
        simulate_mobile(state, patient_rng(5, 3, "mobile"), leads=("V7",))


def test_wfdb_round_trip_is_exact_and_byte_stable(tmp_path: Path) -> None:
    state = sample_patient(CohortSettings(seed=0), 4)
    sim = simulate_mobile(state, patient_rng(0, 4, "mobile"), leads=MOBILE_LEAD_SETS[6])
    start = datetime(2024, 3, 5, 14, 7, 9, 250_900)
    comments = ["mrn: 12345678", "device: kardia-6l"]
    paths = write_wfdb(sim, tmp_path / "a", "mob_000004", base_datetime=start, comments=comments)
    assert [p.suffix for p in paths] == [".hea", ".dat"] and all(p.exists() for p in paths)
    record = wfdb.rdrecord(str(tmp_path / "a" / "mob_000004"))
    assert record.fs == 300 and tuple(record.sig_name) == sim.lead_names
    assert record.units == ["mV"] * 6 and record.comments == comments
    assert record.base_datetime == datetime(2024, 3, 5, 14, 7, 9, 250_000)
    np.testing.assert_allclose(record.p_signal, sim.signals_mv, atol=0.5 / 1000 + 1e-6)
    again = write_wfdb(sim, tmp_path / "b", "mob_000004", base_datetime=start, comments=comments)
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]
    small = write_wfdb(
        sim, tmp_path / "c", "m212", base_datetime=start, comments=[], fmt="212", adc_gain=200.0
    )
    record = wfdb.rdrecord(str(small[0].with_suffix("")))
    np.testing.assert_allclose(record.p_signal, sim.signals_mv, atol=0.5 / 200 + 1e-6)
    with pytest.raises(ValueError):
        write_wfdb(sim, tmp_path, "bad", base_datetime=start, comments=[], fmt="8")
