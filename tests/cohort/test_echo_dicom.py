"""Echo phantom, echo/ECG DICOM writers and the EchoNet export: truth, validity, determinism."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from scipy import ndimage

from cardiolake.cohort.echo_phantom import LV_SEED, PhantomEcho, simulate_echo
from cardiolake.cohort.latent import PatientState, sample_patient
from cardiolake.cohort.settings import CohortSettings
from cardiolake.cohort.signals import EcgSimulation
from cardiolake.cohort.writers.dicom_ecg import SCPECG_LEADS, write_dicom_ecg
from cardiolake.cohort.writers.dicom_echo import write_dicom_echo
from cardiolake.cohort.writers.echonet import (
    FILELIST_COLUMNS,
    VOLUME_TRACING_COLUMNS,
    echonet_file_name,
    filelist_row,
    volume_tracing_rows,
    write_echonet_avi,
)
from cardiolake.domain import STANDARD_LEADS

COMPRESSIONS = ("none", "jpeg2000", "rle")
TRANSFER_SYNTAX = {
    "none": "1.2.840.10008.1.2.1",
    "jpeg2000": "1.2.840.10008.1.2.4.90",
    "rle": "1.2.840.10008.1.2.5",
}
# dicom3tools evaluates this 1C condition (Acquisition Time Synchronized == Y) inside the
# Waveform Sequence item instead of the top-level dataset, so it reports the attribute that
# PS3.3 C.10.9.1 *requires* for synchronised acquisitions as unexpected.


def _beats(state: PatientState, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """R peaks with mild beat-to-beat variability over a 10 s ECG, and their T ends."""
    rr = state.rr_s * np.clip(1.0 + state.hrv_sd * rng.standard_normal(40), 0.6, 1.4)
    r = np.cumsum(rr) - 0.4 * state.rr_s
    r = r[(r >= 0) & (r < 10.0)]
    return r, r + state.qt_ms / 1000.0


def _simulate(index: int, *, fps: float = 40.0, duration_s: float = 3.0) -> tuple:
    state = sample_patient(CohortSettings(), index)
    r, te = _beats(state, np.random.default_rng(100 + index))
    echo = simulate_echo(
        state,
        np.random.default_rng(index),
        r_peaks_s=r,
        t_end_s=te,
        clip_start_s=state.echo_start_offset_s,
        duration_s=duration_s,
        fps=fps,
    )
    return state, echo, r, te


def _segment_lv_area(frames: np.ndarray) -> np.ndarray:
    """Threshold the smoothed image and keep the dark component under the LV seed."""
    size = frames.shape[1]
    seed = (int(LV_SEED[1] * size), int(LV_SEED[0] * size))
    areas = []
    for frame in frames:
        smooth = cv2.GaussianBlur(frame.astype(np.float32), (0, 0), 1.5)
        labels, _ = ndimage.label(smooth < 55)
        areas.append(np.sum(labels == labels[seed]) if labels[seed] else 0)
    return np.asarray(areas, dtype=float)


def _dciodvfy_errors(path: Path) -> list[str]:
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    lines = (out.stdout + out.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]


needs_dciodvfy = pytest.mark.skipif(
    shutil.which("dciodvfy") is None,
    reason="dciodvfy not installed (apt-get install dicom3tools)",
)


@pytest.fixture(scope="module")
def clip() -> tuple:
    return _simulate(3)


@pytest.fixture(scope="module")
def ecg_sim() -> EcgSimulation:
    fs, n = 500, 5000
    t = np.arange(n) / fs
    rng = np.random.default_rng(7)
    phases = rng.uniform(0, 2 * np.pi, 12)
    signals = 1.2 * np.sin(2 * np.pi * 1.1 * t[:, None] + phases) ** 15  # spiky "QRS"
    signals += 0.05 * rng.standard_normal((n, 12))
    r_peaks = np.arange(0.3, 10.0, 0.9)
    return EcgSimulation(
        signals_mv=signals.astype(np.float32),
        lead_names=STANDARD_LEADS,
        fs=fs,
        r_peaks_s=r_peaks,
        t_end_s=r_peaks + 0.38,
    )


# --- phantom -------------------------------------------------------------------------------


def test_phantom_shapes_and_clip_relative_truth(clip) -> None:
    state, echo, r, _ = clip
    n = echo.frames.shape[0]
    assert isinstance(echo, PhantomEcho)
    assert echo.frames.dtype == np.uint8 and echo.frames.shape == (n, 128, 128)
    assert n == round(3.0 * 40.0)
    np.testing.assert_allclose(echo.frame_times_s, np.arange(n) / 40.0)
    assert echo.lv_area_px.shape == (n,)
    for times in (echo.ed_s, echo.es_s, echo.r_wave_s):
        assert times.size >= 1 and np.all((times >= 0) & (times < 3.0))
    inside = r[(r >= state.echo_start_offset_s) & (r < state.echo_start_offset_s + 3.0)]
    np.testing.assert_allclose(echo.r_wave_s, inside - state.echo_start_offset_s)
    # ED lags each R by the electromechanical delay.
    lag = echo.ed_s[:, None] - echo.r_wave_s[None, :]
    assert np.min(np.abs(lag - state.emd_ms / 1000.0), axis=1).max() < 1e-9


def test_phantom_is_deterministic_and_fast() -> None:
    state = sample_patient(CohortSettings(), 5)
    r = np.arange(0.0, 10.0, state.rr_s)
    kwargs = dict(r_peaks_s=r, t_end_s=r + 0.4, clip_start_s=2.0, duration_s=3.0, fps=50.0)
    a = simulate_echo(state, np.random.default_rng(1), **kwargs)
    start = time.perf_counter()
    b = simulate_echo(state, np.random.default_rng(1), **kwargs)
    elapsed = time.perf_counter() - start
    c = simulate_echo(state, np.random.default_rng(2), **kwargs)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.lv_area_px, b.lv_area_px)
    assert not np.array_equal(a.frames, c.frames)  # speckle follows the generator
    # Anatomy does not, up to rasterisation of the (random-phase) respiratory sway.
    assert np.abs(a.lv_area_px - c.lv_area_px).max() < 0.01 * a.lv_area_px.max()
    assert elapsed < 1.0  # ~0.1 s on a laptop core for these 150 frames; generous for CI


def test_area_ratio_follows_ejection_fraction() -> None:
    for index in range(6):
        state, echo, _, _ = _simulate(index, fps=60.0)
        expected = (1.0 - state.lvef / 100.0) ** (2.0 / 3.0)
        ratio = echo.lv_area_px.min() / echo.lv_area_px.max()
        assert ratio == pytest.approx(expected, abs=0.03), (index, state.lvef)


def test_segmentation_recovers_area_curve() -> None:
    for index in (0, 3, 20):  # includes an AF patient with reduced EF
        _, echo, _, _ = _simulate(index)
        measured = _segment_lv_area(echo.frames)
        assert np.corrcoef(measured, echo.lv_area_px)[0, 1] > 0.9


def test_ed_and_es_frames_are_area_extrema_of_their_beat() -> None:
    """Between consecutive ES (ED) times, the largest (smallest) area sits at the true ED (ES).

    Pixel counts jitter by a few pixels (rasterisation of the respiratory sway) on the flat
    top and bottom of the curve, so the frame nearest the keyframe must be within 0.5 % of
    the extreme and the extreme within two frames of the keyframe.
    """
    for index in range(8):
        _, echo, _, _ = _simulate(index, fps=50.0, duration_s=4.0)
        t, area = echo.frame_times_s, echo.lv_area_px
        slack = 0.005 * area.max()
        for key, bounds, pick in ((echo.ed_s, echo.es_s, 1), (echo.es_s, echo.ed_s, -1)):
            for k in key:
                before, after = bounds[bounds < k], bounds[bounds > k]
                if not (before.size and after.size):
                    continue
                window = np.flatnonzero((t > before[-1]) & (t < after[0]))
                nearest = int(np.argmin(np.abs(t - k)))
                extreme = window[np.argmax(pick * area[window])]
                assert pick * area[nearest] >= pick * area[extreme] - slack, (index, k)
                assert abs(t[extreme] - k) <= 2.0 / echo.fps, (index, k)


def test_beats_are_extrapolated_beyond_the_ecg() -> None:
    state = sample_patient(CohortSettings(), 1)
    r = np.array([4.0, 4.0 + state.rr_s])  # the ECG only saw two beats
    echo = simulate_echo(
        state, np.random.default_rng(0), r_peaks_s=r, t_end_s=r + 0.4,
        clip_start_s=2.0, duration_s=5.0, fps=30.0,
    )  # fmt: skip
    np.testing.assert_allclose(np.diff(echo.r_wave_s), state.rr_s)
    assert echo.r_wave_s[0] < 2.0 and echo.r_wave_s[-1] > 5.0 - 2 * state.rr_s


# --- echo DICOM ----------------------------------------------------------------------------


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_echo_dicom_roundtrip(clip, tmp_path: Path, compression: str) -> None:
    state, echo, _, _ = clip
    path = write_dicom_echo(
        echo, tmp_path / "echo.dcm", state=state, seed=0, compression=compression,
        include_r_wave_vector=True, synchronized=True,
    )  # fmt: skip
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == TRANSFER_SYNTAX[compression]
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.3.1"
    assert np.array_equal(ds.pixel_array, echo.frames)  # lossless
    assert int(ds.NumberOfFrames) == echo.frames.shape[0]
    assert float(ds.FrameTime) == pytest.approx(1000.0 / echo.fps)
    assert ds.FrameIncrementPointer == 0x00181063
    np.testing.assert_allclose(ds.RWaveTimeVector, echo.r_wave_s * 1000.0, atol=1e-3)
    assert ds.AcquisitionTimeSynchronized == "Y"
    assert (ds.PatientName, ds.PatientID, ds.PatientSex) == (state.name, state.mrn, state.sex)
    assert ds.AcquisitionDateTime == state.echo_start_time.strftime("%Y%m%d%H%M%S.%f")


def test_echo_dicom_optional_attributes(clip, tmp_path: Path) -> None:
    state, echo, _, _ = clip
    path = write_dicom_echo(
        echo, tmp_path / "echo.dcm", state=state, seed=0, compression="none",
        include_r_wave_vector=False, synchronized=False,
    )  # fmt: skip
    ds = pydicom.dcmread(path)
    assert "RWaveTimeVector" not in ds
    assert "AcquisitionTimeSynchronized" not in ds
    assert "FrameTime" in ds


def test_echo_dicom_rejects_jpeg_baseline(clip, tmp_path: Path) -> None:
    state, echo, _, _ = clip
    with pytest.raises(ValueError, match="JPEG Baseline"):
        write_dicom_echo(
            echo, tmp_path / "echo.dcm", state=state, seed=0, compression="jpeg_baseline",
            include_r_wave_vector=True, synchronized=False,
        )  # fmt: skip


@needs_dciodvfy
@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("synchronized", [False, True])
def test_echo_dicom_passes_dciodvfy(clip, tmp_path: Path, compression, synchronized) -> None:
    state, echo, _, _ = clip
    path = write_dicom_echo(
        echo, tmp_path / "echo.dcm", state=state, seed=0, compression=compression,
        include_r_wave_vector=not synchronized, synchronized=synchronized,
    )  # fmt: skip
    assert _dciodvfy_errors(path) == []


def test_dicom_outputs_are_byte_identical(clip, ecg_sim, tmp_path: Path) -> None:
    state, echo, _, _ = clip
    for compression in COMPRESSIONS:
        paths = [
            write_dicom_echo(
                echo,
                tmp_path / f"{compression}_{i}.dcm",
                state=state,
                seed=0,
                compression=compression,
                include_r_wave_vector=True,
                synchronized=False,
            )  # fmt: skip
            for i in range(2)
        ]
        assert paths[0].read_bytes() == paths[1].read_bytes(), compression
    ecg = [write_dicom_ecg(ecg_sim, tmp_path / f"ecg_{i}.dcm", state=state, seed=0) for i in (0, 1)]
    assert ecg[0].read_bytes() == ecg[1].read_bytes()
    other = write_dicom_ecg(ecg_sim, tmp_path / "ecg_seed1.dcm", state=state, seed=1)
    assert pydicom.dcmread(other).SOPInstanceUID != pydicom.dcmread(ecg[0]).SOPInstanceUID


def test_echo_and_ecg_share_patient_and_study(clip, ecg_sim, tmp_path: Path) -> None:
    state, echo, _, _ = clip
    us = pydicom.dcmread(
        write_dicom_echo(
            echo,
            tmp_path / "echo.dcm",
            state=state,
            seed=0,
            compression="none",
            include_r_wave_vector=True,
            synchronized=False,
        )  # fmt: skip
    )
    ecg = pydicom.dcmread(write_dicom_ecg(ecg_sim, tmp_path / "ecg.dcm", state=state, seed=0))
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "StudyInstanceUID"):
        assert us[keyword].value == ecg[keyword].value
    assert us.SeriesInstanceUID != ecg.SeriesInstanceUID
    assert us.SOPInstanceUID != ecg.SOPInstanceUID


# --- ECG DICOM -----------------------------------------------------------------------------


def test_ecg_dicom_waveform_roundtrip(clip, ecg_sim, tmp_path: Path) -> None:
    state = clip[0]
    ds = pydicom.dcmread(write_dicom_ecg(ecg_sim, tmp_path / "ecg.dcm", state=state, seed=0))
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.9.1.1"
    assert ds.Modality == "ECG"
    assert ds.AcquisitionDateTime.startswith(state.exam_time.strftime("%Y%m%d%H%M%S"))
    group = ds.WaveformSequence[0]
    assert float(group.SamplingFrequency) == ecg_sim.fs
    assert group.WaveformSampleInterpretation == "SS"
    codes = [ch.ChannelSourceSequence[0].CodeValue for ch in group.ChannelDefinitionSequence]
    assert codes == [SCPECG_LEADS[lead][0] for lead in STANDARD_LEADS]
    assert codes[0] == "5.6.3-9-1"
    units = group.ChannelDefinitionSequence[0].ChannelSensitivityUnitsSequence[0]
    assert (units.CodeValue, units.CodingSchemeDesignator) == ("uV", "UCUM")
    recovered_mv = ds.waveform_array(0) / 1000.0  # sensitivity applied: microvolts
    sensitivity_mv = float(group.ChannelDefinitionSequence[0].ChannelSensitivity) / 1000.0
    assert recovered_mv.shape == ecg_sim.signals_mv.shape
    assert np.abs(recovered_mv - ecg_sim.signals_mv).max() <= sensitivity_mv / 2 + 1e-6


@needs_dciodvfy
@pytest.mark.parametrize("synchronized", [False, True])
def test_ecg_dicom_passes_dciodvfy(clip, ecg_sim, tmp_path: Path, synchronized: bool) -> None:
    state = dataclasses.replace(clip[0], synchronized=synchronized)
    path = write_dicom_ecg(ecg_sim, tmp_path / "ecg.dcm", state=state, seed=0)
    assert _dciodvfy_errors(path) == []
    if not synchronized:
        assert _dciodvfy_errors(path) == []


# --- EchoNet -------------------------------------------------------------------------------


def test_echonet_avi(clip, tmp_path: Path) -> None:
    state, echo, _, _ = clip
    name = echonet_file_name(0, state)
    paths = [write_echonet_avi(echo, tmp_path / f"v{i}" / f"{name}.avi") for i in (0, 1)]
    assert paths[0].read_bytes() == paths[1].read_bytes()
    capture = cv2.VideoCapture(str(paths[0]))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(echo.fps)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) == echo.frames.shape[0]
    assert frames[0].shape == (112, 112, 3)


def test_echonet_rows(clip) -> None:
    state, echo, _, _ = clip
    name = echonet_file_name(0, state)
    assert name.startswith("0X") and len(name) == 18
    row = filelist_row(echo, name, state=state)
    assert tuple(row) == FILELIST_COLUMNS
    assert row["EF"] == round(state.lvef, 2)
    assert 100 * (row["EDV"] - row["ESV"]) / row["EDV"] == pytest.approx(state.lvef, abs=0.05)
    assert (row["FrameHeight"], row["FrameWidth"]) == (112, 112)
    assert row["NumberOfFrames"] == echo.frames.shape[0] and row["PatientID"] == state.mrn
    assert row["Split"] in {"TRAIN", "VAL", "TEST"}

    rows = volume_tracing_rows(echo, name)
    assert all(tuple(r) == VOLUME_TRACING_COLUMNS for r in rows)
    assert len(rows) == 42 and {r["FileName"] for r in rows} == {f"{name}.avi"}
    es_frame, ed_frame = rows[0]["Frame"], rows[21]["Frame"]
    assert echo.lv_area_px[es_frame] < echo.lv_area_px[ed_frame]
    coords = np.array([[r["X1"], r["Y1"], r["X2"], r["Y2"]] for r in rows])
    assert coords.min() >= 0 and coords.max() < 112

    def disc_volume(block: list[dict]) -> float:  # EchoNet's method of discs, in px³
        axis = block[0]
        length = np.hypot(axis["X2"] - axis["X1"], axis["Y2"] - axis["Y1"])
        d = np.array([np.hypot(r["X2"] - r["X1"], r["Y2"] - r["Y1"]) for r in block[1:]])
        return float(np.sum(np.pi * (d / 2) ** 2) * length / len(d))

    traced_ef = 1 - disc_volume(rows[:21]) / disc_volume(rows[21:])
    assert traced_ef * 100 == pytest.approx(state.lvef, abs=3.0)  # frames sit near ED/ES
