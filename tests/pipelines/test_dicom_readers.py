"""DICOM ECG/echo and EchoNet readers: round trips, real files, broken inputs, no PHI out."""

from __future__ import annotations

import csv
import io
import json
import logging
import pickle
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.tag import Tag

from cardiolake.cohort.corrupt import _load_uncompressed
from cardiolake.cohort.echo_phantom import simulate_echo
from cardiolake.cohort.latent import PatientState, sample_patient
from cardiolake.cohort.settings import CohortSettings
from cardiolake.cohort.signals import EcgSimulation
from cardiolake.cohort.writers.dicom_common import INSTITUTION, accession_number
from cardiolake.cohort.writers.dicom_ecg import SENSITIVITY_UV, write_dicom_ecg
from cardiolake.cohort.writers.dicom_echo import write_dicom_echo
from cardiolake.cohort.writers.echonet import (
    FILELIST_COLUMNS,
    VOLUME_TRACING_COLUMNS,
    echonet_file_name,
    filelist_row,
    keyframes,
    volume_tracing_rows,
    write_echonet_avi,
)
from cardiolake.domain import STANDARD_LEADS
from pipelines.readers import (
    PHI_TAGS,
    DicomEcg,
    EchoClip,
    InputError,
    acquisition_datetime,
    deidentified_header,
    entry_key,
    load_echonet_index,
    read_dicom,
    read_echonet_avi,
)
from pipelines.readers.dicom_reader import lead_name
from pipelines.readers.limits import ReadLimits

COMPRESSIONS = ("none", "jpeg2000", "rle")
FPS = 40.0


def _beats(state: PatientState, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    rr = state.rr_s * np.clip(1.0 + state.hrv_sd * rng.standard_normal(40), 0.6, 1.4)
    r = np.cumsum(rr) - 0.4 * state.rr_s
    r = r[(r >= 0) & (r < 10.0)]
    return r, r + state.qt_ms / 1000.0


@pytest.fixture(scope="module")
def clip() -> tuple:
    state = sample_patient(CohortSettings(), 3)
    r, te = _beats(state, np.random.default_rng(103))
    echo = simulate_echo(
        state, np.random.default_rng(3), r_peaks_s=r, t_end_s=te,
        clip_start_s=state.echo_start_offset_s, duration_s=2.5, fps=FPS,
    )  # fmt: skip
    return state, echo


@pytest.fixture(scope="module")
def ecg_sim() -> EcgSimulation:
    fs, n = 500, 5000
    t = np.arange(n) / fs
    rng = np.random.default_rng(7)
    signals = 1.2 * np.sin(2 * np.pi * 1.1 * t[:, None] + rng.uniform(0, 6.3, 12)) ** 15
    signals += 0.05 * rng.standard_normal((n, 12))
    r_peaks = np.arange(0.3, 10.0, 0.9)
    return EcgSimulation(
        signals_mv=signals.astype(np.float32), lead_names=STANDARD_LEADS, fs=fs,
        r_peaks_s=r_peaks, t_end_s=r_peaks + 0.38,
    )  # fmt: skip


@pytest.fixture(scope="module")
def echo_files(clip, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    state, echo = clip
    out = tmp_path_factory.mktemp("echo")
    return {
        c: write_dicom_echo(
            echo,
            out / f"echo_{c}.dcm",
            state=state,
            seed=0,
            compression=c,
            include_r_wave_vector=True,
            synchronized=c != "rle",
        )  # fmt: skip
        for c in COMPRESSIONS
    }


@pytest.fixture(scope="module")
def ecg_file(clip, ecg_sim, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dicom_ecg(
        ecg_sim, tmp_path_factory.mktemp("ecg") / "ecg.dcm", state=clip[0], seed=0
    )


def _phi(state: PatientState) -> list[str]:
    """The fake PHI strings of the patient; none may leave a reader."""
    return [
        state.mrn, state.name, *state.name.split("^"), state.birth_date.strftime("%Y%m%d"),
        state.birth_date.isoformat(), accession_number(0, state), INSTITUTION,
    ]  # fmt: skip


def _assert_no_phi(record: DicomEcg | EchoClip, state: PatientState) -> None:
    dumped = json.dumps(record.header) + repr(record)
    for secret in _phi(state):
        assert secret not in dumped, secret
    assert not PHI_TAGS & set(record.header)


# --- echo DICOM ----------------------------------------------------------------------------


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_echo_roundtrip(clip, echo_files, compression: str) -> None:
    state, echo = clip
    record = read_dicom(echo_files[compression])
    assert isinstance(record, EchoClip) and record.source_format == "dicom"
    assert record.frames.dtype == np.uint8
    assert np.array_equal(record.frames, echo.frames)  # lossless codecs: exact
    assert record.frames_112.shape == (echo.frames.shape[0], 112, 112)
    expected_112 = cv2.resize(echo.frames[5], (112, 112), interpolation=cv2.INTER_AREA)
    assert np.array_equal(record.frames_112[5], expected_112)
    np.testing.assert_allclose(record.frame_times_s, np.arange(record.n_frames) / FPS, atol=1e-9)
    assert record.fps == pytest.approx(FPS)
    assert record.r_wave_times_s is not None
    np.testing.assert_allclose(record.r_wave_times_s, echo.r_wave_s, atol=1e-3)
    assert record.synchronized is (compression != "rle")
    assert record.acquisition_datetime == state.echo_start_time  # microseconds kept
    assert record.mrn == state.mrn
    assert record.header["TransferSyntaxUID"] == str(
        pydicom.dcmread(
            echo_files[compression], stop_before_pixels=True
        ).file_meta.TransferSyntaxUID
    )
    _assert_no_phi(record, state)


def test_echo_without_optional_modules(clip, tmp_path: Path) -> None:
    state, echo = clip
    path = write_dicom_echo(
        echo, tmp_path / "e.dcm", state=state, seed=0, compression="none",
        include_r_wave_vector=False, synchronized=False,
    )  # fmt: skip
    record = read_dicom(path)
    assert record.r_wave_times_s is None and record.synchronized is False


def test_echo_from_bytes_and_frame_time_vector(echo_files, tmp_path: Path) -> None:
    ds = _load_uncompressed(echo_files["jpeg2000"], 0, "ftv")
    steps = [0.0] + [25.0, 26.0] * ((int(ds.NumberOfFrames) - 1) // 2)
    steps += [25.0] * (int(ds.NumberOfFrames) - len(steps))
    del ds.FrameTime
    ds.FrameTimeVector = steps
    ds.FrameIncrementPointer = Tag(0x0018, 0x1065)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    record = read_dicom(buffer, uri="mem://ftv.dcm")
    assert record.uri == "mem://ftv.dcm"
    np.testing.assert_allclose(record.frame_times_s, np.cumsum(steps) / 1000.0)
    assert record.fps == pytest.approx((len(steps) - 1) / (sum(steps) / 1000.0))


# --- ECG DICOM -----------------------------------------------------------------------------


def test_ecg_roundtrip(clip, ecg_sim, ecg_file) -> None:
    state = clip[0]
    record = read_dicom(ecg_file)
    assert isinstance(record, DicomEcg)
    assert record.lead_names == STANDARD_LEADS
    assert record.fs == ecg_sim.fs
    assert record.signals_mv.dtype == np.float32
    assert record.signals_mv.shape == ecg_sim.signals_mv.shape
    error = np.abs(record.signals_mv - ecg_sim.signals_mv).max()
    assert error <= SENSITIVITY_UV / 1000 / 2 + 1e-6  # half a quantisation step
    assert record.acquisition_datetime == state.exam_time
    assert record.synchronized is state.synchronized
    assert record.mrn == state.mrn
    _assert_no_phi(record, state)


def test_real_waveform_ecg() -> None:
    path = get_testdata_file("waveform_ecg.dcm")
    record = read_dicom(path)
    assert isinstance(record, DicomEcg)
    assert record.lead_names == STANDARD_LEADS  # "Lead I (Einthoven)" -> "I"
    assert record.fs == 1000.0  # a Mortara ELI 250 at 1 kHz, 10 s rhythm strip
    assert record.signals_mv.shape == (10000, 12)
    assert record.header["SelectedWaveform"] == "RHYTHM"  # not the median beat
    reference = pydicom.dcmread(path).waveform_array(0) / 1000.0  # µV -> mV
    np.testing.assert_allclose(record.signals_mv, reference, atol=1e-6)
    assert 0.3 < np.abs(record.signals_mv).max() < 5.0
    assert record.mrn == "642341"
    dumped = json.dumps(record.header)
    assert "642341" not in dumped and "Anonymous" not in dumped


def _twelve_bit_copy(src: Path, out: Path) -> Path:
    """The clip stored at 12 of 16 bits: the streamed decode must scale all frames alike."""
    ds = pydicom.dcmread(src)
    frames = ds.pixel_array.astype(np.uint16) * 16
    frames[-1] //= 4  # one darker frame: a per-frame bit depth would brighten it
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelData = frames.tobytes()
    ds.save_as(out)
    return out


@pytest.mark.parametrize("source", [*COMPRESSIONS, "ybr", "twelve_bit"])
def test_streamed_and_header_reads_match_the_full_decode(echo_files, source: str,
                                                         tmp_path: Path) -> None:  # fmt: skip
    if source == "ybr":
        path = Path(get_testdata_file("examples_ybr_color.dcm"))
    elif source == "twelve_bit":
        path = _twelve_bit_copy(echo_files["none"], tmp_path / "twelve.dcm")
    else:
        path = echo_files[source]
    full = read_dicom(path)
    streamed = read_dicom(path, pixels="stream")
    header = read_dicom(path, pixels="header")
    assert isinstance(full, EchoClip) and isinstance(streamed, EchoClip)
    assert isinstance(header, EchoClip)
    assert full.frames is not None and streamed.frames is None and header.frames is None
    assert np.array_equal(streamed.frames_112, full.frames_112)
    assert header.frames_112 is None
    assert full.shape == streamed.shape == header.shape == full.frames.shape
    np.testing.assert_array_equal(header.frame_times_s, full.frame_times_s)
    assert header.header == full.header and header.mrn == full.mrn


def test_streamed_read_bounds_memory_by_frame_not_clip(echo_files) -> None:
    # a cap below the whole decoded clip but above one frame plus the 112x112 output
    frames, rows, cols = read_dicom(echo_files["none"], pixels="header").shape
    cap = ReadLimits(max_decoded_bytes=rows * cols * 2 + frames * 112 * 112)
    with pytest.raises(InputError) as caught:
        read_dicom(echo_files["none"], limits=cap)
    assert caught.value.reason == "size_limit_exceeded"
    assert read_dicom(echo_files["none"], limits=cap, pixels="stream").n_frames == frames


def test_header_read_still_catches_missing_pixel_bytes(echo_files, tmp_path: Path) -> None:
    data = echo_files["none"].read_bytes()
    (tmp_path / "short.dcm").write_bytes(data[: len(data) - 5000])
    with pytest.raises(InputError) as caught:
        read_dicom(tmp_path / "short.dcm", pixels="header")
    assert caught.value.reason == "pixel_data_truncated"


def test_real_ybr_ultrasound() -> None:
    path = get_testdata_file("examples_ybr_color.dcm")
    record = read_dicom(path)
    assert isinstance(record, EchoClip)
    assert record.frames.shape == (30, 240, 320) and record.frames.dtype == np.uint8
    assert record.frames_112.shape == (30, 112, 112)
    rgb = pydicom.dcmread(path).pixel_array.astype(np.float64)  # pydicom converts YBR->RGB
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    assert np.abs(record.frames.astype(np.float64) - luma).max() <= 1.0
    np.testing.assert_allclose(np.diff(record.frame_times_s), 0.033333, atol=1e-9)
    assert record.r_wave_times_s is None and record.synchronized is False


@pytest.mark.parametrize(
    ("code", "scheme", "meaning", "expected"),
    [
        ("5.6.3-9-1", "SCPECG", "Lead I (Einthoven)", "I"),
        ("5.6.3-9-64", "SCPECG", "Lead aVF", "aVF"),
        ("2:61", "MDC", "Lead III", "III"),
        ("131335", "MDC", "MDC_ECG_LEAD_V5", "V5"),
        ("X", "99LOCAL", "Lead V2", "V2"),
        ("X", "99LOCAL", "lead avr", "aVR"),
        ("X", "99LOCAL", "Pleth", "Pleth"),
    ],
)
def test_lead_name(code: str, scheme: str, meaning: str, expected: str) -> None:
    source = Dataset()
    source.CodeValue, source.CodingSchemeDesignator, source.CodeMeaning = code, scheme, meaning
    channel = Dataset()
    channel.ChannelSourceSequence = [source]
    assert lead_name(channel) == expected


# --- broken inputs (built as cardiolake.cohort.corrupt builds them) -------------------------


def _reason(path: Path) -> str:
    with pytest.raises(InputError) as info:
        read_dicom(path)
    assert str(path) in str(info.value) and info.value.reason in str(info.value)
    return info.value.reason


def test_broken_echo_files(clip, echo_files, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    state = clip[0]
    rng = np.random.default_rng(0)

    not_dicom = tmp_path / "report.dcm"
    noise = rng.integers(0, 256, size=2048, dtype=np.uint8).tobytes()
    not_dicom.write_bytes(b"exported report, not an image\n" + noise)
    assert _reason(not_dicom) == "not_dicom"

    ds = _load_uncompressed(echo_files["rle"], 0, "0001")
    ds.PixelData = ds.PixelData[: (len(ds.PixelData) // 2) & ~1]
    ds.save_as(tmp_path / "short.dcm", enforce_file_format=True)
    assert _reason(tmp_path / "short.dcm") == "pixel_data_truncated"

    ds = _load_uncompressed(echo_files["jpeg2000"], 0, "0002")
    frames, step = int(ds.NumberOfFrames), float(ds.FrameTime)
    vector = [0.0] + [step] * (frames - 1)
    for j in rng.choice(np.arange(2, frames), size=3, replace=False):
        vector[int(j)] = -step
    del ds.FrameTime
    ds.FrameTimeVector = vector
    ds.FrameIncrementPointer = Tag(0x0018, 0x1065)
    ds.save_as(tmp_path / "nonmono.dcm", enforce_file_format=True)
    # decodes: frame times out of order are the echo gate's to catch, not the reader's
    clip = read_dicom(tmp_path / "nonmono.dcm")
    assert int(np.sum(np.diff(clip.frame_times_s) <= 0)) == 3
    assert clip.frames.shape[0] == frames

    raw = echo_files["jpeg2000"].read_bytes()  # a transfer cut short mid pixel data
    (tmp_path / "cut.dcm").write_bytes(raw[: len(raw) * 2 // 3])
    assert _reason(tmp_path / "cut.dcm") == "pixel_data_truncated"

    for compression in ("jpeg2000", "rle"):  # one garbled frame in the encapsulated data
        ds = pydicom.dcmread(echo_files[compression])
        fragments = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
        fragments[3] = fragments[3][:4] + bytes(16)
        ds.PixelData = encapsulate(fragments)
        ds.save_as(tmp_path / f"garbled_{compression}.dcm", enforce_file_format=True)
        assert _reason(tmp_path / f"garbled_{compression}.dcm") == "decode_failed"

    assert _reason(tmp_path / "absent.dcm") == "missing_file"
    assert _reason(Path(get_testdata_file("CT_small.dcm"))) == "unsupported_sop_class"

    duplicate = tmp_path / "dup.dcm"  # re-sent file: reads identically (dedup is by SHA-256)
    shutil.copyfile(echo_files["none"], duplicate)
    assert np.array_equal(read_dicom(duplicate).frames, read_dicom(echo_files["none"]).frames)

    for secret in _phi(state):
        assert secret not in caplog.text


def test_broken_ecg_files(ecg_file, tmp_path: Path) -> None:
    ds = pydicom.dcmread(ecg_file)
    data = ds.WaveformSequence[0].WaveformData
    ds.WaveformSequence[0].WaveformData = data[: len(data) // 2]
    ds.save_as(tmp_path / "short.dcm", enforce_file_format=True)
    assert _reason(tmp_path / "short.dcm") == "truncated_signal"

    ds = pydicom.dcmread(ecg_file)
    for channel in ds.WaveformSequence[0].ChannelDefinitionSequence:
        channel.ChannelSensitivity = "2500"  # mis-set gain: every amplitude 1000x
    ds.save_as(tmp_path / "gain.dcm", enforce_file_format=True)
    # decodes: a wrong gain is the ECG gate's to catch (ecg_amplitude_in_bounds)
    scaled, clean = read_dicom(tmp_path / "gain.dcm"), read_dicom(ecg_file)
    ratio = np.abs(scaled.signals_mv).max() / np.abs(clean.signals_mv).max()
    assert ratio == pytest.approx(1000.0, rel=0.05)


def test_input_error_pickles_and_formats() -> None:
    error = InputError("not_dicom", "no DICM prefix", "/landing/x.dcm")
    assert str(error) == "/landing/x.dcm: not_dicom: no DICM prefix"
    clone = pickle.loads(pickle.dumps(error))  # Spark ships exceptions between processes
    assert (clone.reason, clone.detail, clone.uri) == (
        "not_dicom",
        "no DICM prefix",
        "/landing/x.dcm",
    )
    assert isinstance(clone, ValueError)


# --- header helpers ------------------------------------------------------------------------


def test_header_redacts_phi_in_free_text(clip, echo_files) -> None:
    state = clip[0]
    ds = pydicom.dcmread(echo_files["none"], stop_before_pixels=True)
    ds.SeriesDescription = f"A4C {state.mrn} {state.name.split('^')[0]}"
    ds.ProtocolName = "Echo for Dr. Jane Roe, call 555-0134"
    ds.Manufacturer = f"Acme {state.name.split('^')[0]}"
    ds.OperatorsName = "Roe^Jane"
    ds.add_new((0x0009, 0x1010), "LO", f"private {state.mrn}")  # a private tag
    ds.ImageType = ["ORIGINAL", "PRIMARY", state.name.split("^")[0].upper()]
    header = deidentified_header(ds)
    # free text never passes: only the view, in a closed vocabulary
    assert header["view"] == "A4C"
    for keyword in ("SeriesDescription", "ProtocolName", "Manufacturer", "OperatorsName"):
        assert keyword not in header
    assert header["ImageType"] == ["ORIGINAL", "PRIMARY"]
    text = json.dumps(header)  # JSON-able
    for secret in (state.mrn, state.name.split("^")[0], "Roe", "Jane", "555"):
        assert secret.lower() not in text.lower()


def test_malformed_patient_values_stay_out_of_logs(clip, echo_files, tmp_path, caplog) -> None:
    state = clip[0]
    ds = pydicom.dcmread(echo_files["none"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.PatientBirthDate = state.birth_date.isoformat()  # invalid DA: pydicom would log it
        ds.PatientID = state.mrn + "-" * 70  # longer than LO allows
    ds.save_as(tmp_path / "messy.dcm")
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    record = read_dicom(tmp_path / "messy.dcm")
    assert record.mrn is not None and record.mrn.startswith(state.mrn)
    assert state.birth_date.isoformat() not in caplog.text and state.mrn not in caplog.text
    _assert_no_phi(record, state)


def test_acquisition_datetime_fallbacks() -> None:
    ds = Dataset()
    assert acquisition_datetime(ds) is None
    ds.StudyDate, ds.StudyTime = "20240105", "0930"
    assert acquisition_datetime(ds).isoformat() == "2024-01-05T09:30:00"
    ds.ContentDate, ds.ContentTime = "20240105", "093512.25"
    assert acquisition_datetime(ds).isoformat() == "2024-01-05T09:35:12.250000"
    ds.AcquisitionDateTime = "20240105093510.123456+0100"
    assert acquisition_datetime(ds).isoformat() == "2024-01-05T09:35:10.123456"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns on assigning an invalid DT
        ds.AcquisitionDateTime = "garbage"
    assert acquisition_datetime(ds).isoformat() == "2024-01-05T09:35:12.250000"


# --- EchoNet -------------------------------------------------------------------------------


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def test_echonet_roundtrip(clip, tmp_path: Path) -> None:
    state, echo = clip
    name = echonet_file_name(0, state)
    video = write_echonet_avi(echo, tmp_path / "Videos" / f"{name}.avi")
    _write_csv(tmp_path / "FileList.csv", FILELIST_COLUMNS, [filelist_row(echo, name, state=state)])
    _write_csv(
        tmp_path / "VolumeTracings.csv", VOLUME_TRACING_COLUMNS, volume_tracing_rows(echo, name)
    )

    index = load_echonet_index(tmp_path)
    entry = index[entry_key(video)]
    assert entry.mrn == state.mrn  # leading zeros kept: read as text
    assert (entry.ed_frame, entry.es_frame) == keyframes(echo)
    record = read_echonet_avi(video, entry)
    assert record.source_format == "echonet_avi" and record.n_frames == echo.frames.shape[0]
    assert record.frames.shape[1:] == (112, 112) and record.frames_112.shape[1:] == (112, 112)
    truth = np.stack([cv2.resize(f, (112, 112), interpolation=cv2.INTER_AREA) for f in echo.frames])
    assert np.abs(record.frames.astype(int) - truth).mean() < 3.0  # MJPEG is lossy
    np.testing.assert_allclose(record.frame_times_s, np.arange(record.n_frames) / FPS)
    assert record.r_wave_times_s is None and record.synchronized is False
    assert (record.ed_frame, record.es_frame) == keyframes(echo)
    assert abs(record.acquisition_datetime - state.echo_start_time).total_seconds() < 1e-3
    assert record.mrn == state.mrn and record.header["EF"] == round(state.lvef, 2)
    _assert_no_phi(record, state)

    with pytest.raises(InputError, match="not_in_index"):
        read_echonet_avi(tmp_path / "Videos" / "0XUNKNOWN.avi", index.get("0XUNKNOWN"))
    garbage = tmp_path / "Videos" / "0XBROKEN.avi"
    garbage.write_bytes(b"RIFF" + bytes(300))
    with pytest.raises(InputError) as info:
        read_echonet_avi(garbage, entry)
    assert info.value.reason == "unreadable_video"
    with pytest.raises(InputError) as info:
        load_echonet_index(tmp_path / "Videos")
    assert info.value.reason == "missing_file"
