"""Picture of one synthetic patient: 12-lead strip with true R peaks over the echo LV-area curve.

Both panels share the ECG's time axis, so one can see each end-diastole follow its R peak by
the electromechanical delay and each end-systole sit at the end of the T wave.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: plots are files, never windows
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pydicom
import wfdb

from cardiolake.domain import STANDARD_LEADS


def _find_patient(truth: pd.DataFrame, patient: str) -> pd.Series:
    """Accept the study id (CL000001), the 1-based patient number or the MRN."""
    match = truth[(truth["patient_id"] == patient) | (truth["mrn"] == patient)]
    if match.empty and patient.isdigit():
        match = truth[truth["index"] == int(patient) - 1]
    if match.empty:
        raise KeyError(f"no patient {patient!r} in this cohort")
    return match.iloc[0]


def _read_12lead(path: Path) -> tuple[np.ndarray, float, list[str]]:
    if path.suffix == ".dcm":
        ds = pydicom.dcmread(path)
        signals = ds.waveform_array(0)
        group = ds.WaveformSequence[0]
        names = [ch.ChannelSourceSequence[0].CodeMeaning for ch in group.ChannelDefinitionSequence]
        names = [n.replace("Lead ", "").strip() for n in names]
        unit = group.ChannelDefinitionSequence[0].ChannelSensitivityUnitsSequence[0].CodeValue
        scale = 1e-3 if unit == "uV" else 1.0
        return signals * scale, float(group.SamplingFrequency), names
    record = wfdb.rdrecord(str(path))
    return record.p_signal, float(record.fs), list(record.sig_name)


def plot_patient(
    cohort_dir: Path, patient: str, out: Path, *, leads: tuple[str, ...] = STANDARD_LEADS
) -> Path:
    """Draw the patient's 12-lead ECG with true R peaks above the echo LV-area curve.

    Args:
        cohort_dir: a generated cohort folder.
        patient: study id, 1-based patient number or MRN (the MRN never appears on the plot).
        out: PNG path to write.
        leads: leads to draw, top to bottom.

    Returns:
        The written PNG path.

    Raises:
        KeyError: when the patient is unknown or has no 12-lead ECG and echo (mobile only).
    """
    truth_dir = cohort_dir / "truth"
    truth = pd.read_parquet(truth_dir / "patients.parquet")
    row = _find_patient(truth, patient)
    recordings = pd.read_parquet(truth_dir / "recordings.parquet")
    mine = recordings[recordings["patient_id"] == row["patient_id"]]
    ecg_rec = mine[mine["kind"] == "ecg12"]
    echo_rec = mine[(mine["kind"] == "echo") & mine["path"].str.endswith(".dcm")]
    if ecg_rec.empty or echo_rec.empty:
        raise KeyError(f"patient {row['patient_id']} has no 12-lead ECG and echo (mobile only)")
    ecg_rec, echo_rec = ecg_rec.iloc[0], echo_rec.iloc[0]
    path = cohort_dir / ecg_rec["path"]
    signals, fs, names = _read_12lead(path if path.suffix == ".dcm" else path.with_suffix(""))
    beats = pd.read_parquet(truth_dir / "beats.parquet")
    r_peaks = beats[beats["recording_id"] == ecg_rec["recording_id"]]["r_peak_s"].to_numpy()
    frames = pd.read_parquet(truth_dir / "echo_frames.parquet")
    frames = frames[frames["recording_id"] == echo_rec["recording_id"]]
    keyframes = pd.read_parquet(truth_dir / "echo_beats.parquet")
    keyframes = keyframes[keyframes["recording_id"] == echo_rec["recording_id"]]
    shift = float(echo_rec["true_start_offset_s"])  # echo clip start on the ECG's axis

    t = np.arange(signals.shape[0]) / fs
    fig, axes = plt.subplots(
        len(leads) + 1, 1, figsize=(14, 1.0 * len(leads) + 3), sharex=True,
        gridspec_kw={"height_ratios": [1] * len(leads) + [2.5]},
    )  # fmt: skip
    for ax, lead in zip(axes, leads, strict=False):
        col = names.index(lead)
        ax.plot(t, signals[:, col], lw=0.6, color="black")
        ax.vlines(r_peaks, *ax.get_ylim(), color="tab:red", lw=0.5, alpha=0.6)
        ax.set_ylabel(lead, rotation=0, ha="right", va="center")
        ax.set_yticks([])
        ax.axvspan(shift, shift + frames["t_s"].max(), color="tab:blue", alpha=0.05)
    area = axes[-1]
    area.plot(frames["t_s"] + shift, frames["lv_area_px"], color="tab:blue", label="LV area (px)")
    area.vlines(
        r_peaks,
        frames["lv_area_px"].min(),
        frames["lv_area_px"].max(),
        color="tab:red",
        lw=0.6,
        label="R peak",
    )
    for column, colour, name in (("ed_s", "tab:green", "ED"), ("es_s", "tab:orange", "ES")):
        times = keyframes[column].dropna().to_numpy() + shift
        vals = np.interp(times, frames["t_s"] + shift, frames["lv_area_px"])
        area.scatter(times, vals, color=colour, zorder=3, label=name)
    area.set_xlabel("seconds from the 12-lead ECG start (ECG clock)")
    area.set_ylabel("LV area")
    area.legend(loc="upper right", ncols=4, fontsize=8)
    fig.suptitle(
        f"{row['patient_id']}: HR {row['hr_bpm']:.0f} bpm, QRS {row['qrs_ms']:.0f} ms, "
        f"{row['conduction']}, AF={bool(row['af'])}, LVEF {row['lvef']:.0f} %, "
        f"echo {row['echo_fps']} fps, true clock offset {row['echo_clock_offset_s']:+.3f} s"
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
