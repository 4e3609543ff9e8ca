"""Unit checks of the hostile-input defences: memory guard, CSV sniffing, index rows, WFDB
header whitelist, landing-scan problems."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pipelines.csv_format import BadRow, read_rows, sniff_csv
from pipelines.ecg_source import whitelisted_fields
from pipelines.landing import scan_landing
from pipelines.readers.limits import memory_guard


def test_memory_guard_turns_a_runaway_allocation_into_memory_error() -> None:
    with pytest.raises(MemoryError), memory_guard(64 * 1024**2):
        np.ones(512 * 1024**2 // 8)  # 512 MB against a 64 MB budget
    np.ones(256 * 1024**2 // 8)  # the limit is lifted again afterwards


@pytest.mark.parametrize(
    ("encoding", "delimiter"),
    [("utf-8", ","), ("utf-8-sig", ";"), ("cp1252", ";"), ("utf-16", "\t"), ("utf-8", "|")],
)
def test_csv_dialects_are_sniffed_and_malformed_rows_set_aside(
    tmp_path: Path, encoding: str, delimiter: str
) -> None:
    path = tmp_path / "patients.csv"
    lines = ["mrn,name,birth_date", "123,\"Núñez, José\",1950-01-02", "456,Smith", ",x,y",
             "789,Ólafsdóttir,1960-03-04"]  # fmt: skip
    text = "\n".join(ln.replace(",", delimiter) if '"' not in ln else
                     ln.replace(",1950", f"{delimiter}1950").replace("123,", f"123{delimiter}")
                     for ln in lines) + "\n"  # fmt: skip
    path.write_bytes(text.encode(encoding))
    dialect = sniff_csv(path)
    assert dialect.delimiter == delimiter
    rows = [r for _, r in read_rows(path, ("mrn",))]
    good = [r for r in rows if isinstance(r, dict)]
    bad = [r for r in rows if isinstance(r, BadRow)]
    assert [r["mrn"] for r in good] == ["123", "789"]
    assert good[0]["name"] == "Núñez, José" and good[1]["name"] == "Ólafsdóttir"
    assert [b.line for b in bad] == [3, 4]
    assert all("Smith" not in b.problem for b in bad)  # never the content


def test_wfdb_header_comments_are_whitelisted() -> None:
    fields = {"age": "93", "sex": "F", "Name": "Jane Roe", "device": "kardia john smith",
              "dx": "164889003, I48.0, Roe, 12345678", "address": "1 Main St"}  # fmt: skip
    comments = ("age: 93", "Jane Roe called 555-0134", "69 M 1085 1629 x1")
    out = whitelisted_fields(fields, comments, mrn="12345678")
    assert out == {"age": "90", "sex": "female", "dx": "164889003,I48.0"}
    assert whitelisted_fields({"device": "PageWriter TC70"}, (), None) == {
        "device": "PageWriter TC70"
    }
    assert whitelisted_fields({}, ("69 M 1085 1629 x1",), None) == {"age": "69", "sex": "male"}


def test_landing_scan_reports_loops_dangling_links_fifos_and_unreadable_folders(
    tmp_path: Path,
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.dcm").write_bytes(b"not really")
    os.symlink("loop", tmp_path / "a" / "loop")
    os.symlink("..", tmp_path / "a" / "up")
    os.symlink("nowhere", tmp_path / "a" / "gone.hea")
    os.symlink(tmp_path / "a" / "x.dcm", tmp_path / "alias.dcm")  # a good link is followed
    os.mkfifo(tmp_path / "a" / "fifo.csv")
    inventory = scan_landing(tmp_path)
    problems = {Path(s.uri).name: s.problem for s in inventory.unknown if s.problem}
    assert problems == {
        "loop": "symlink_loop", "up": "symlink_loop", "gone.hea": "broken_symlink",
        "fifo.csv": "unreadable_path",
    }  # fmt: skip
    assert [Path(r.uri).name for r in inventory.records] == ["x.dcm"]
