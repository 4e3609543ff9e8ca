"""Real public records (../shared/data and pydicom's own files) through bronze and silver."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from deltalake import DeltaTable
from pydicom.data import get_testdata_file

from cardiolake import tables
from pipelines.job import run_ingest
from pipelines.settings import IngestSettings

pytestmark = [pytest.mark.spark, pytest.mark.integration]


@pytest.fixture(scope="module")
def real_lake(spark, shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("real")
    landing = work / "landing"
    shutil.copytree(shared_data / "wfdb", landing / "wfdb")
    for name in ("waveform_ecg.dcm", "examples_ybr_color.dcm"):
        shutil.copy(get_testdata_file(name), landing / name)
    settings = IngestSettings(landing=landing, lake_root=work / "lake", task_slices=2)
    run_ingest(spark, settings, stages=("bronze", "silver"))  # no ECG/echo pairs for gold
    return work / "lake"


def _frame(root: Path, table: tables.Table):
    return DeltaTable(str(table.path(root))).to_pandas()


def test_every_real_record_reaches_silver(real_lake: Path) -> None:
    ecg = _frame(real_lake, tables.ECG)
    names = {Path(u).name: row for u, row in zip(ecg["source_uri"], ecg.itertuples(), strict=True)}
    assert {"100.hea", "s0010_re.hea", "03700181.hea", "waveform_ecg.dcm"} <= set(names)
    assert names["s0010_re.hea"].leads.tolist() == [
        "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6",
    ]  # fmt: skip
    assert list(names["100.hea"].leads) == ["II", "V5"]  # MLII stands in for lead II
    assert list(names["03700181.hea"].leads) == ["V1"]  # MCL1 at its true 500 Hz
    assert names["03700181.hea"].source_fs == 500.0 and names["s0010_re.hea"].source_fs == 1000.0
    for row in names.values():
        assert row.fs == 500 and 40 <= row.heart_rate_bpm <= 150
    echo = _frame(real_lake, tables.ECHO)
    assert list(map(lambda u: Path(u).name, echo["source_uri"])) == ["examples_ybr_color.dcm"]
    assert (
        echo["size"].iloc[0] == 112
        and len(echo["frames"].iloc[0]) == 112 * 112 * echo["n_frames"].iloc[0]
    )
    q = (
        DeltaTable(str(tables.QUARANTINE.path(real_lake))).to_pandas()
        if (tables.QUARANTINE.path(real_lake)).exists()
        else None
    )
    assert q is None or q.empty


def test_bronze_keeps_only_whitelisted_wfdb_header_fields(real_lake: Path) -> None:
    raw = _frame(real_lake, tables.ECG_RAW)
    ptb = raw[raw["source_uri"].str.endswith("s0010_re.hea")].iloc[0]
    fields = dict(ptb["header_fields"])
    assert fields["age"] == "81" and fields["sex"] == "female"
    # free-text comments (admission reason, dates, history) are dropped, not stored
    assert set(fields) <= {"age", "sex", "device", "leads", "dx"}
    assert "Myocardial" not in ptb["header_json"] and "1990" not in ptb["header_json"]
    mitdb = raw[raw["source_uri"].str.endswith("100.hea")].iloc[0]
    assert dict(mitdb["header_fields"]) == {"age": "69", "sex": "male"}
    header = json.loads(ptb["header_json"])
    assert header["all_channels"][-3:] == ["vx", "vy", "vz"]
    mimic = raw[raw["source_uri"].str.endswith("03700181.hea")].iloc[0]
    assert (
        json.loads(mimic["header_json"])["all_channels"] == ["MCL1", "ABP", "RESP"]
        or "ABP" in mimic["header_json"]
    )
