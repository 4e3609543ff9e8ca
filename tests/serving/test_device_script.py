"""The device script's own WFDB reader and resampler against wfdb, scipy and training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wfdb

from serving import device_script as dev
from training.transforms import resample as training_resample


@pytest.mark.parametrize(("record", "fmt"), [("mitdb/100", "212"), ("ptb/s0010_re", "16")])
def test_reader_matches_wfdb_on_real_records(shared_data: Path, record: str, fmt: str) -> None:
    path = shared_data / "wfdb" / record
    ours = dev.read_wfdb(path)
    ref = wfdb.rdrecord(str(path), physical=True)
    assert ref.fmt[0] == fmt
    assert ours.fs == ref.fs and ours.signal.shape == (ref.n_sig, ref.sig_len)
    np.testing.assert_allclose(ours.signal, ref.p_signal.T, atol=1e-5, equal_nan=True)


def test_reader_names_limb_leads_whatever_the_spelling(shared_data: Path) -> None:
    ours = dev.read_wfdb(shared_data / "wfdb" / "ptb" / "s0010_re")
    assert ours.leads[:6] == ("I", "II", "III", "aVR", "aVL", "aVF")
    assert [dev.lead_name(n) for n in ("lead II", "DIII", "avf", "MLII")] == [
        "II", "III", "aVF", "MLII"]  # fmt: skip


@pytest.mark.parametrize("fmt", ["16", "212", "80", "24", "32"])
def test_reader_round_trips_every_supported_format(tmp_path: Path, fmt: str) -> None:
    rng = np.random.default_rng(1)
    signal = np.round(rng.uniform(-1.5, 1.5, (3000, 2)), 2)
    gain = 50.0 if fmt == "80" else 100.0  # 8-bit samples
    wfdb.wrsamp("rec", fs=300, units=["mV", "mV"], sig_name=["I", "II"], p_signal=signal,
                fmt=[fmt, fmt], adc_gain=[gain, gain], baseline=[0, 0],
                write_dir=str(tmp_path))  # fmt: skip
    ref = wfdb.rdrecord(str(tmp_path / "rec"))
    ours = dev.read_wfdb(tmp_path / "rec")
    np.testing.assert_allclose(ours.signal, ref.p_signal.T, atol=1e-5)


def test_reader_reads_big_endian_format_61(tmp_path: Path) -> None:
    values = np.array([[10, -20], [300, -4000], [-32767, 32767]], dtype=">i2")
    (tmp_path / "be.dat").write_bytes(values.tobytes())
    (tmp_path / "be.hea").write_text("be 2 250 3\nbe.dat 61 200(0)/mV 16 0 0 0 0 I\n"
                                     "be.dat 61 200(0)/mV 16 0 0 0 0 II\n")  # fmt: skip
    ours = dev.read_wfdb(tmp_path / "be")
    np.testing.assert_allclose(ours.signal, values.T.astype(np.float64) / 200, atol=1e-6)


def test_resampler_is_trainings_and_keeps_amplitude() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3000)).astype(np.float32)
    for fs_in, fs_out in [(500, 300), (257, 300), (1000, 300), (360, 300), (300, 300)]:
        np.testing.assert_allclose(dev.resample(x, fs_in, fs_out),
                                   training_resample(x, fs_in, fs_out), atol=1e-5)  # fmt: skip
    t = np.arange(5000) / 500
    tone = np.sin(2 * np.pi * 5 * t)[None].astype(np.float32)
    assert abs(np.abs(dev.resample(tone, 500, 300)).max() - 1.0) < 0.01  # no gain


def test_preprocess_windows_pads_and_masks() -> None:
    spec = {"leads": ["I", "II", "III", "aVR", "aVL", "aVF"], "rate_hz": 300, "window_s": 10.0,
            "clip_mv": 5.0, "resampler": {"taps_per_phase": 4, "kaiser_beta": 5.0}}  # fmt: skip
    rec = dev.Recording("r", 500.0, ("II", "V1"), np.full((2, 500 * 25), 9.0, np.float32))
    windows, mask = dev.preprocess(rec, spec)
    assert windows.shape == (2, 6, 3000)  # 25 s -> two whole 10 s windows
    assert mask.tolist() == [0, 1, 0, 0, 0, 0]
    assert windows[:, 1, 100:-100].max() == 5.0 and not windows[:, 0].any()
    short = dev.Recording("s", 300.0, ("I",), np.ones((1, 900), np.float32))
    w, _ = dev.preprocess(short, spec)
    assert w.shape == (1, 6, 3000) and not w[0, 0, 900:].any()
    with pytest.raises(dev.RecordError, match="none of the leads"):
        dev.preprocess(dev.Recording("v", 300.0, ("V1",), np.ones((1, 900), np.float32)), spec)


def _write(tmp_path: Path, header: str, data: bytes) -> Path:
    (tmp_path / "bad.hea").write_text(header)
    (tmp_path / "bad.dat").write_bytes(data)
    return tmp_path / "bad"


@pytest.mark.parametrize(
    ("header", "data", "message"),
    [
        ("bad 1 300 3000\nbad.dat 16 1000/mV 16 0 0 0 0 I\n", b"\0" * 100, "bytes hold fewer"),
        ("bad 1 300 999999999\nbad.dat 16 1000/mV 16 0 0 0 0 I\n", b"\0" * 100, "outside"),
        ("bad 2 300 10\nbad.dat 16 1000/mV 16 0 0 0 0 I\n", b"\0" * 40, "described"),
        ("bad 1 300 10\nbad.dat 311 1000/mV 16 0 0 0 0 I\n", b"\0" * 40, "not supported"),
        ("bad one 300 10\n", b"", "malformed"),
    ],
)
def test_reader_refuses_broken_or_oversized_records(tmp_path: Path, header: str, data: bytes,
                                                    message: str) -> None:  # fmt: skip
    with pytest.raises(dev.RecordError, match=message) as info:
        dev.read_wfdb(_write(tmp_path, header, data))
    assert "bad" in str(info.value)  # the error names the file
