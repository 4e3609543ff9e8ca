"""R-peak detection on real MIT-BIH beats and on the synthetic cohort's true beats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import wfdb

from cardiolake.cohort.ecg_model import simulate_12lead, simulate_mobile
from cardiolake.cohort.latent import patient_rng, sample_patient
from cardiolake.cohort.settings import MOBILE_LEAD_SETS, CohortSettings
from pipelines.signal.rpeaks import detect_rpeaks, detect_rpeaks_multilead, match_beats

BEAT_SYMBOLS = set("NLRBAaJSVrFejnE/fQ?")


def test_mitdb_100_both_leads_reach_99_5(shared_data: Path) -> None:
    stem = str(shared_data / "wfdb" / "mitdb" / "100")
    record, ann = wfdb.rdrecord(stem), wfdb.rdann(stem, "atr")
    reference = np.array(
        [s for s, c in zip(ann.sample, ann.symbol, strict=True) if c in BEAT_SYMBOLS]
    )
    assert reference.size == 2273
    for lead in range(2):
        found = detect_rpeaks(record.p_signal[:, lead], record.fs)
        m = match_beats(found / record.fs, reference / record.fs, 0.15)
        assert m.sensitivity >= 0.995 and m.ppv >= 0.995, (record.sig_name[lead], m)


def test_synthetic_12lead_and_mobile_beats() -> None:
    totals = {"12": [0, 0, 0], "mobile": [0, 0, 0]}
    for i in range(60):
        state = sample_patient(CohortSettings(seed=8), i)
        for kind, sim in (
            ("12", simulate_12lead(state, patient_rng(8, i, "ecg12"))),
            (
                "mobile",
                simulate_mobile(
                    state, patient_rng(8, i, "mobile"), leads=MOBILE_LEAD_SETS[state.mobile_leads]
                ),
            ),
        ):
            m = match_beats(detect_rpeaks_multilead(sim.signals_mv, sim.fs) / sim.fs, sim.r_peaks_s)
            totals[kind] = [a + b for a, b in zip(totals[kind], (m.tp, m.fp, m.fn), strict=True)]
    for kind, (tp, fp, fn) in totals.items():
        assert tp / (tp + fn) >= 0.995 and tp / (tp + fp) >= 0.995, (kind, tp, fp, fn)


def test_flat_noise_and_short_inputs_give_no_beats() -> None:
    rng = np.random.default_rng(0)
    assert detect_rpeaks(np.zeros(5000), 500).size == 0
    assert detect_rpeaks(rng.normal(0, 0.1, 5000), 500).size == 0
    assert detect_rpeaks(np.sin(np.arange(400) / 10.0), 500).size == 0


def test_cli_prints_only_a_json_list(shared_data: Path) -> None:
    from typer.testing import CliRunner

    from cardiolake.cli import app

    result = CliRunner().invoke(
        app, ["ecg", "rpeaks", str(shared_data / "wfdb" / "mitdb" / "100"), "--lead", "0", "--json"]
    )
    assert result.exit_code == 0, result.output
    peaks = json.loads(result.stdout)
    assert (
        isinstance(peaks, list)
        and 2260 <= len(peaks) <= 2290
        and all(isinstance(p, int) for p in peaks)
    )
    mimic = CliRunner().invoke(
        app, ["ecg", "rpeaks", str(shared_data / "wfdb" / "mimic" / "03700181"), "--json"]
    )
    assert mimic.exit_code == 0, mimic.output
    beats = json.loads(mimic.stdout)
    minutes = 600 / 60  # 10-minute record at its own 500 Hz ECG rate
    assert 40 * minutes <= len(beats) <= 150 * minutes and max(beats) < 300_000


@pytest.mark.parametrize("name", ["ptb/s0010_re", "mitdb/100"])
def test_real_records_give_plausible_heart_rates(shared_data: Path, name: str) -> None:
    from pipelines.ecg_source import read_ecg_source

    src = read_ecg_source(str(shared_data / "wfdb" / f"{name}.hea"), "wfdb")
    peaks = detect_rpeaks_multilead(src.signals_mv, src.fs)
    hr = 60.0 / np.median(np.diff(peaks) / src.fs)
    assert 40 <= hr <= 150
