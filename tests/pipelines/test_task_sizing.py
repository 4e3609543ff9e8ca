"""Per-file tasks are sized by bytes: partitions by input bytes, output batches by payload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
from pyspark.sql.types import BinaryType, StringType, StructField, StructType

from pipelines.readers import InputError
from pipelines.settings import IngestSettings
from pipelines.silver_signals import _task, row_bytes

MIB = 1024 * 1024


def test_partitions_follow_input_bytes_above_the_minimum(tmp_path: Path) -> None:
    s = IngestSettings(landing=tmp_path, lake_root=tmp_path / "lake", task_slices=8,
                       partition_bytes=100 * MIB)  # fmt: skip
    assert s.partitions_for(3, 10 * MIB) == 3  # never more partitions than records
    assert s.partitions_for(500, 10 * MIB) == 8  # small inputs: the configured minimum
    assert s.partitions_for(500, 2_000 * MIB) == 20  # 2 GB: one partition per 100 MB
    assert s.partitions_for(500, 0) == 8  # sizes unknown (an older lake): by rows
    assert s.partitions_for(0, 0) == 1


def test_output_batches_are_cut_by_payload_bytes_and_keep_every_row() -> None:
    schema = StructType([StructField(n, t) for n, t in (
        ("record_key", StringType()), ("source_uri", StringType()), ("frames", BinaryType()),
        ("target", StringType()), ("sha256", StringType()), ("reason", StringType()),
        ("detail", StringType()))])  # fmt: skip

    def process(item: dict[str, Any]) -> dict[str, Any]:
        if item["record_key"] == "k3":
            raise InputError("decode_failed", "garbled", item["source_uri"])
        return {"frames": b"\0" * MIB}

    inputs = pa.RecordBatch.from_pylist(
        [{"record_key": f"k{i}", "source_uri": f"/x/{i}.dcm"} for i in range(10)]
    )
    out = list(_task(process, schema, 3 * MIB)(iter([inputs])))
    # 9 rows of ~1 MiB (one quarantined, tiny) cut at ~3 MiB, although they came as one batch
    assert [b.num_rows for b in out] == [3, 4, 3]
    rows = [r for b in out for r in b.to_pylist()]
    assert [r["record_key"] for r in rows] == [f"k{i}" for i in range(10)]
    assert [r["target"] for r in rows].count("quarantine") == 1
    assert row_bytes({"frames": b"\0" * 100, "n": 3}) == 108
