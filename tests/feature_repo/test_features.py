"""The Feast repository on a real lake: pinned snapshots, point-in-time joins, SQLite and Redis."""

from __future__ import annotations

import math
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from deltalake import write_deltalake
from typer.testing import CliRunner

from cardiolake import lake, tables
from expectations.runner import run_gates
from feature_repo.snapshot import (
    ECG_MEASUREMENTS,
    EMBEDDING_SCHEMA,
    LAB_ANALYTES,
    ecg_measurements,
    labs_features,
    write_features,
)
from feature_repo.store import (
    VERSION_TAG,
    FeatureSettings,
    apply,
    get_online,
    materialize,
    open_store,
    training_set,
)
from pipelines.job import run_ingest
from pipelines.quarantine import gate_failed_keys
from pipelines.settings import IngestSettings

pytestmark = [pytest.mark.spark, pytest.mark.integration]

#: Online features compared with the offline latest row.
SCALAR_REFS = [
    *(f"labs_latest:{c}" for c in LAB_ANALYTES.values()),
    "labs_window:ntprobnp_max_30d",
    "labs_window:draws_30d",
    "labs_window:draws_total",
    "ecg_measurements:heart_rate_bpm",
    "ecg_measurements:rr_sdnn_ms",
    "ecg_measurements:n_beats",
    "ecg_measurements:quality_ok",
    "ecg_measurements:device_kind",
    "ecg_measurements:pr_ms",
    "ecg_measurements:qrs_ms",
    "ecg_measurements:qtc_ms",
    "ecg_measurements:axis_deg",
]
EMBEDDING_DIM = 8


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway Debian redis-server on a free local port, no persistence."""
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(exe).exists():
        pytest.skip("redis-server is not installed")
    import redis

    port = _free_port()
    work = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(work)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        for _ in range(100):
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                time.sleep(0.05)
        else:
            pytest.fail("redis-server did not answer PING")
        yield f"127.0.0.1:{port}"
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def lake_with_silver(spark, tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny cohort ingested to silver and gated once, plus a small ECG embedding table."""
    work = tmp_path_factory.mktemp("features")
    landing = work / "landing"
    shutil.copytree(tiny_cohort, landing / "site_a")
    root = work / "lake"
    run_ingest(
        spark,
        IngestSettings(landing=landing, lake_root=root, task_slices=2),
        stages=("bronze", "silver"),
    )
    run_gates(spark, root, layer="silver", data_docs=False)  # features read only what passed
    ecg = lake.read_pandas(tables.ECG, lake_root=root, columns=["patient_key", "acquisition_time"])
    rng = np.random.default_rng(0)
    emb = ecg.drop_duplicates("patient_key")
    rows = pa.table(
        {
            "patient_key": emb["patient_key"].tolist(),
            "event_time": pd.to_datetime(emb["acquisition_time"], utc=True),
            "embedding": [
                rng.normal(size=EMBEDDING_DIM).astype(np.float32) for _ in range(len(emb))
            ],
            "model_version": ["test-1"] * len(emb),
        },
        schema=EMBEDDING_SCHEMA,
    )
    write_deltalake(str(tables.ECG_EMBEDDING.path(root)), rows)
    return root


@pytest.fixture(scope="module")
def sqlite_store(spark, lake_with_silver: Path):
    settings = FeatureSettings(lake_root=lake_with_silver)
    store = open_store(settings)
    snapshots = apply(store, settings, spark=spark)
    materialize(store)
    return store, snapshots


@pytest.fixture(scope="module")
def redis_store(sqlite_store, lake_with_silver: Path, redis_url: str):
    settings = FeatureSettings(lake_root=lake_with_silver, online="redis", redis_url=redis_url)
    store = open_store(settings)
    apply(store, settings, build=False)
    materialize(store)
    return store


def _snapshot_frame(snapshots, table) -> pd.DataFrame:
    return pd.read_parquet(snapshots[table].path)


def test_views_read_a_pinned_delta_version(sqlite_store, lake_with_silver: Path) -> None:
    store, snapshots = sqlite_store
    for view in store.list_feature_views():
        table = tables.get_table(view.tags["delta_table"])
        snap = snapshots[table]
        assert view.tags[VERSION_TAG] == snap.tag
        assert view.batch_source.path == str(snap.path)
        if snap.version is not None:
            assert snap.path.name.split("-")[0] == f"v{snap.version}"
            assert snap.version == lake.table_version(table, lake_root=lake_with_silver)
            delta_rows = lake.read_arrow(table, lake_root=lake_with_silver).num_rows
            assert snap.rows == delta_rows > 0
    assert {s.name for s in store.list_feature_services()} == {
        "teacher_training",
        "cohort_scoring",
    }


def test_labs_features_windows_are_point_in_time() -> None:
    t0 = pd.Timestamp("2025-01-01", tz="UTC")
    labs = pd.DataFrame(
        {
            "patient_key": ["p"] * 4,
            "loinc": ["33762-6", "33762-6", "2951-2", "33762-6"],
            "value": [900.0, 100.0, 140.0, 300.0],
            "draw_time": [t0, t0 + pd.Timedelta(days=40), t0 + pd.Timedelta(days=40),
                          t0 + pd.Timedelta(days=50)],
        }
    )  # fmt: skip
    out = labs_features(labs)
    assert out["event_time"].tolist() == sorted(set(labs["draw_time"]))
    assert out["ntprobnp_pg_ml"].tolist() == [900.0, 100.0, 300.0]
    assert math.isnan(out["sodium_mmol_l"].iloc[0]) and out["sodium_mmol_l"].iloc[2] == 140.0
    assert out["ntprobnp_max_30d"].tolist() == [900.0, 100.0, 300.0]  # 900 left the window
    assert out["draws_30d"].tolist() == [1, 1, 2]
    assert out["draws_total"].tolist() == [1, 2, 3]


def test_training_set_never_sees_a_later_lab(spark, lake_with_silver: Path, tmp_path: Path) -> None:
    root = tmp_path / "lake"
    shutil.copytree(lake_with_silver / "silver", root / "silver")
    label_time = pd.Timestamp("2025-03-01 12:00", tz="UTC")
    hand = pd.DataFrame(
        {
            "patient_key": ["pit"] * 3,
            "loinc": ["33762-6"] * 3,
            "value": [900.0, 100.0, 5000.0],
            "draw_time": [
                label_time - pd.Timedelta(days=40),  # before, outside the 30-day window
                label_time - pd.Timedelta(days=10),  # before: reaches the row
                label_time + pd.Timedelta(hours=1),  # after: must never reach it
            ],
        }
    )
    v0 = write_features(labs_features(hand), tables.LABS_FEATURES, root)
    ecg = lake.read_pandas(tables.ECG, lake_root=root)
    write_features(ecg_measurements(ecg), ECG_MEASUREMENTS, root)
    settings = FeatureSettings(lake_root=root)
    store = open_store(settings)
    apply(store, settings, build=False)
    refs = ["labs_latest:ntprobnp_pg_ml", "labs_window:ntprobnp_max_30d",
            "labs_window:draws_total"]  # fmt: skip
    labels = pd.DataFrame(
        {
            "patient_key": ["pit", "pit"],
            "label_time": [label_time, label_time + pd.Timedelta(hours=2)],
            "triage_urgent": [False, True],
        }
    )
    rows = training_set(store, labels, features=refs)
    assert rows["ntprobnp_pg_ml"].tolist() == [100.0, 5000.0]
    assert rows["ntprobnp_max_30d"].tolist() == [100.0, 5000.0]
    assert rows["draws_total"].tolist() == [2, 3]
    assert rows["triage_urgent"].tolist() == [False, True]

    # a new Delta version changes nothing until it is pinned by a new apply
    moved = hand.assign(draw_time=hand["draw_time"] - pd.Timedelta(days=1))
    v1 = write_features(labs_features(moved.iloc[[2]]), tables.LABS_FEATURES, root)
    assert v1 > v0
    assert training_set(store, labels, features=refs)["ntprobnp_pg_ml"].tolist() == [100.0, 5000.0]
    apply(store, settings, build=False)
    assert store.get_feature_view("labs_latest").tags[VERSION_TAG] == str(v1)
    assert training_set(store, labels, features=refs)["ntprobnp_pg_ml"].tolist() == [5000.0] * 2


def test_training_set_matches_silver_as_of_label_time(sqlite_store, lake_with_silver) -> None:
    store, _ = sqlite_store
    labels = lake.read_pandas(tables.LABELS, lake_root=lake_with_silver)
    labels = labels[["patient_key", "label_time", "triage_urgent"]]
    rows = training_set(store, labels, features="teacher_training")
    assert len(rows) == len(labels) > 0
    silver = lake.read_pandas(tables.LABS, lake_root=lake_with_silver)
    nt = silver[silver["loinc"] == "33762-6"].copy()
    nt["draw_time"] = pd.to_datetime(nt["draw_time"], utc=True)
    checked = 0
    for row in rows.itertuples():
        before = nt[
            (nt["patient_key"] == row.patient_key) & (nt["draw_time"] <= row.event_timestamp)
        ]
        before = before[before["draw_time"] > row.event_timestamp - pd.Timedelta(days=365)]
        if before.empty:
            assert pd.isna(row.ntprobnp_pg_ml)
            continue
        last = before[before["draw_time"] == before["draw_time"].max()]["value"].mean()
        assert row.ntprobnp_pg_ml == pytest.approx(last)
        checked += 1
    assert checked > 0


def _offline_latest(snapshots) -> pd.DataFrame:
    labs = _snapshot_frame(snapshots, tables.LABS_FEATURES)
    ecg = _snapshot_frame(snapshots, ECG_MEASUREMENTS)
    labs = labs.sort_values("event_time").groupby("patient_key").tail(1)
    ecg = ecg.sort_values("event_time").groupby("patient_key").tail(1)
    return labs.drop(columns="event_time").merge(
        ecg.drop(columns="event_time"), on="patient_key", how="outer"
    )


def _assert_online_matches(store, snapshots) -> None:
    expected = _offline_latest(snapshots).set_index("patient_key")
    online = get_online(store, list(expected.index), features=SCALAR_REFS).set_index("patient_key")
    assert len(online) == len(expected) > 0
    for key in expected.index:
        for ref in SCALAR_REFS:
            col = ref.split(":")[1]
            want, got = expected.at[key, col], online.at[key, col]
            if pd.isna(want):
                assert got is None or pd.isna(got), (key, col, got)
            elif isinstance(want, float):
                assert got == pytest.approx(want), (key, col)
            else:
                assert got == want, (key, col)


def test_features_leave_out_rows_the_gates_held_back(sqlite_store, lake_with_silver) -> None:
    _, snapshots = sqlite_store
    silver = lake.read_pandas(tables.LABS, lake_root=lake_with_silver)
    held = gate_failed_keys(lake_with_silver, tables.LABS)
    potassium = silver[silver["loinc"] == "2823-3"]
    assert (potassium["value"] > 10).sum() >= 1  # the corpus's 42 mmol/L reached silver ...
    assert set(potassium.loc[potassium["value"] > 10, "record_key"]) <= held  # ... held back
    labs = _snapshot_frame(snapshots, tables.LABS_FEATURES)
    assert labs[LAB_ANALYTES["2823-3"]].max() <= 10  # ... and never became a feature
    ecg = _snapshot_frame(snapshots, ECG_MEASUREMENTS)
    twelve = ecg[ecg["device_kind"] == "resting_12lead"]
    assert len(twelve) > 5 and twelve["qrs_ms"].between(60, 200).all()
    assert twelve["axis_deg"].notna().all() and twelve["qtc_ms"].between(300, 550).all()


def test_online_equals_offline_latest_sqlite(sqlite_store) -> None:
    store, snapshots = sqlite_store
    _assert_online_matches(store, snapshots)


def test_online_equals_offline_latest_redis(sqlite_store, redis_store) -> None:
    _, snapshots = sqlite_store
    _assert_online_matches(redis_store, snapshots)


def test_embedding_is_served_as_float32_array(sqlite_store, redis_store, lake_with_silver) -> None:
    store, _ = sqlite_store
    emb = lake.read_pandas(tables.ECG_EMBEDDING, lake_root=lake_with_silver)
    key, vector = emb["patient_key"].iloc[0], np.asarray(emb["embedding"].iloc[0])
    for s in (store, redis_store):
        got = get_online(s, [key], features=["ecg_embedding:ecg_embedding"])
        np.testing.assert_allclose(np.asarray(got["ecg_embedding"].iloc[0]), vector, rtol=1e-6)
    absent = get_online(store, [key], features=["echo_embedding:echo_embedding"])
    assert absent["echo_embedding"].iloc[0] is None


def test_cli_apply_materialize_get(sqlite_store, lake_with_silver: Path) -> None:
    from cardiolake.cli.features import app

    runner = CliRunner()
    lake_arg = ["--lake", str(lake_with_silver)]
    result = runner.invoke(app, ["apply", *lake_arg, "--no-build"])
    assert result.exit_code == 0, result.output
    assert "features.labs_features" in result.output
    result = runner.invoke(app, ["materialize", *lake_arg])
    assert result.exit_code == 0, result.output
    key = _offline_latest(sqlite_store[1])["patient_key"].iloc[0]
    result = runner.invoke(app, ["get", *lake_arg, "--patient", key])
    assert result.exit_code == 0, result.output
    assert "ntprobnp_pg_ml" in result.output and key in result.output


def test_feast_cli_sees_the_registry_cardiolake_applied(
    sqlite_store, lake_with_silver: Path, tmp_path: Path
) -> None:
    """``feast plan`` on a copy of feature_repo/, through the lake's runtime config."""
    from tests.feature_repo.test_feast_cli import _copy_repo, _feast

    repo = _copy_repo(tmp_path)
    config = lake_with_silver / "_feast" / "feature_store.sqlite.yaml"
    result = _feast(repo, "-f", str(config), "plan")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No changes to registry" in result.stdout, result.stdout
    # (infrastructure may differ: the redis fixture applied the same registry with Redis)


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, list):
        return np.allclose(a, b)
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_online_reader_returns_feasts_values(request, kind: str) -> None:
    """The serving path (one round trip, resolved once) reads exactly what Feast serves."""
    from feature_repo.online import OnlineReader

    store = request.getfixturevalue("sqlite_store")[0] if kind == "sqlite" else None
    store = store or request.getfixturevalue("redis_store")
    keys = _offline_latest(request.getfixturevalue("sqlite_store")[1])["patient_key"].tolist()
    keys = [*keys, "no-such-patient"]
    for service in ("teacher_training", "cohort_scoring"):
        want = store.get_online_features(
            features=store.get_feature_service(service),
            entity_rows=[{"patient_key": k} for k in keys],
        ).to_dict()
        got = OnlineReader(store, service).read(keys)
        assert set(got) == set(want)
        bad = [(c, k) for c in want for i, k in enumerate(keys) if not _same(want[c][i], got[c][i])]
        assert not bad, bad[:5]
        assert all(got[c][-1] is None for c in got if c != "patient_key")
