"""`cardiolake score`, `monitor` and `lineage` on Spark with a registered device model."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import wfdb

from cardiolake import lake, tables
from tests.serving.helpers import cli

pytestmark = [pytest.mark.spark, pytest.mark.integration]


def _sha256(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.read_bytes())
    return digest.hexdigest()


def _record_files(uri: str) -> list[Path]:
    """A raw input's files as ingestion hashes them: a WFDB header then its signal files."""
    path = Path(uri)
    if path.suffix != ".hea":
        return [path]
    lines = [ln.split() for ln in path.read_text().splitlines()[1:] if ln and ln[0] != "#"]
    return [path, *(path.with_name(n) for n in dict.fromkeys(f[0] for f in lines if f))]


@pytest.fixture(scope="module")
def cohort(external_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A fresh cohort's mobile recordings, one truncated and one flat-line recording beside
    them, and the same cohort again with every recording's gain doubled."""
    base = tmp_path_factory.mktemp("scoring")
    fresh = base / "fresh"
    shutil.copytree(external_cohort / "mobile", fresh)
    heads = sorted(fresh.glob("*.hea"))
    good = len(heads)
    shutil.copyfile(heads[0], fresh / "cut.hea")
    (fresh / "cut.hea").write_text(heads[0].read_text().replace(heads[0].stem, "cut"))
    data = heads[0].with_suffix(".dat").read_bytes()
    (fresh / "cut.dat").write_bytes(data[: len(data) // 3])
    wfdb.wrsamp("flat", fs=300, units=["mV"], sig_name=["I"], p_signal=np.zeros((9000, 1)),
                fmt=["16"], adc_gain=[1000.0], baseline=[0], write_dir=str(fresh))  # fmt: skip
    doubled = base / "doubled"
    shutil.copytree(external_cohort / "mobile", doubled)
    for hea in doubled.glob("*.hea"):  # half the ADC gain: twice the millivolts
        lines = hea.read_text().splitlines()
        for i, line in enumerate(lines[1:], start=1):
            if line and not line.startswith("#"):
                lines[i] = re.sub(
                    r"^(\S+ \S+ )([\d.]+)", lambda m: f"{m.group(1)}{float(m.group(2)) / 2:g}", line
                )
        hea.write_text("\n".join(lines) + "\n")
    return {"fresh": fresh, "doubled": doubled, "good": good}


def _predictions(root: Path) -> object:
    return lake.read_pandas(tables.PREDICTIONS, lake_root=root)


def test_scoring_is_idempotent_quarantines_bad_recordings_and_watches_drift(
    served: dict, bundle: Path, cohort: dict
) -> None:
    root = served["lake"]
    v1, v2 = served["first"]["version"], served["again"]["version"]
    code, out = cli("score", "--lake", str(root), "--alias", v1, "--landing", str(cohort["fresh"]))
    assert code == 0, out
    preds = _predictions(root)
    mine = preds[preds["model_version"] == v1]
    assert len(mine) == cohort["good"] and mine["recording_key"].is_unique
    assert set(mine["decision"]) <= {"urgent", "routine"} and mine["score"].between(0, 1).all()
    assert mine["patient_key"].notna().all()
    q = lake.read_pandas(tables.QUARANTINE, lake_root=root)
    reasons = dict(zip(q.loc[q["stage"] == "scoring", "source_uri"].map(lambda u: Path(u).stem),
                       q.loc[q["stage"] == "scoring", "reason"], strict=True))  # fmt: skip
    assert reasons["cut"] in {"truncated_signal", "header_mismatch"}
    assert reasons["flat"] == "signal_quality_flat_line"
    # a fresh cohort from the same generator: no drift
    code, out = cli("monitor", "--lake", str(root))
    assert code == 0, out
    # a re-run adds nothing; a new model version scores the same cohort into its own rows
    code, out = cli("score", "--lake", str(root), "--alias", v1, "--landing", str(cohort["fresh"]))
    assert code == 0 and "0 new predictions" in out, out
    assert len(_predictions(root)) == len(preds)
    code, out = cli("score", "--lake", str(root), "--alias", v2, "--landing", str(cohort["fresh"]))
    assert code == 0, out
    after = _predictions(root)
    assert len(after[after["model_version"] == v2]) == cohort["good"]
    assert len(after) == len(preds) + cohort["good"]
    # twice the gain: the monitor trips, on the input amplitude
    code, out = cli("score", "--lake", str(root), "--alias", v1, "--landing",
                    str(cohort["doubled"]))  # fmt: skip
    assert code == 0, out
    code, out = cli("monitor", "--lake", str(root))
    assert code == 1 and "rms_mv" in out, out
    drift = lake.read_pandas(tables.MONITORING, lake_root=root)
    assert drift["run_id"].nunique() >= 3 and {"ks", "psi", "tvd"} <= set(drift["statistic"])


def test_device_script_and_batch_agree_and_lineage_reaches_raw_files(
    served: dict, bundle: Path, cohort: dict
) -> None:
    root = served["lake"]
    v1 = served["first"]["version"]
    preds = _predictions(root)
    row = preds[(preds["model_version"] == v1)
                & preds["source_uri"].str.startswith(str(cohort["fresh"]))].iloc[0]  # fmt: skip
    record = str(row["source_uri"]).removesuffix(".hea")
    proc = subprocess.run([sys.executable, str(bundle / "score_recording.py"), record, "--json"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    device = json.loads(proc.stdout)
    assert abs(device["probability"] - row["score"]) <= 1e-4
    assert device["decision"] == row["decision"]
    code, out = cli("lineage", row["prediction_key"], "--lake", str(root), "--json")
    assert code == 0, out
    chain = json.loads(out)
    assert chain["prediction"]["source_sha256"] == _sha256(_record_files(row["source_uri"]))
    assert chain["model"]["version"] == v1
    stages = [r["stage"] for r in chain["runs"]]
    assert stages[:2] == ["export", "student"] and {"teacher", "align", "pretrain"} <= set(stages)
    raw = next(v for k, v in chain["raw_files"].items() if k.startswith("gold.examples_pretrain"))
    assert raw
    for entry in raw[:3]:
        assert entry["sha256"] == _sha256(_record_files(entry["uri"]))
    code, out = cli("lineage", f"v{v1}", "--lake", str(root))
    assert code == 0 and "pretrain run" in out
    assert cli("lineage", "nonsense", "--lake", str(root))[0] == 2


def test_scoring_benchmark_smoke(served: dict, cohort: dict, tmp_path: Path) -> None:
    out = tmp_path / "scoring.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/scoring.py", "--lake", str(served["lake"]), "--landing",
         str(cohort["fresh"]), "--alias", served["first"]["version"], "--base", "6", "--sizes",
         "1", "2", "--out", str(out)],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["results"]) == {"1x", "2x"}
    for r in result["results"].values():
        assert r["spark_rps"] > 0 and r["loop_rps"] > 0 and r["ratio"] == r["loop_s"] / r["spark_s"]
    assert result["results"]["2x"]["recordings"] == 12


def test_scoring_a_silver_table(served: dict, bundle: Path) -> None:
    root = served["lake"]
    weak = served["weak"]["version"]
    code, out = cli("score", "--lake", str(root), "--alias", weak, "--table", "silver.ecg")
    assert code == 0, out
    silver = lake.read_pandas(tables.ECG, lake_root=root, columns=["record_key", "patient_key"])
    preds = _predictions(root)
    mine = preds[preds["model_version"] == weak]
    assert len(mine) > 0 and set(mine["recording_key"]) <= set(silver["record_key"])
    by_key = dict(zip(silver["record_key"], silver["patient_key"], strict=True))
    assert all(by_key[k] == p for k, p in zip(mine["recording_key"], mine["patient_key"],
                                               strict=True))  # fmt: skip
    assert {"I", "I,II,III,aVR,aVL,aVF"} & set(mine["lead_set"])
