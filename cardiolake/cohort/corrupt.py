"""The bad-input corpus: broken files and rows added beside a good cohort.

Every defect is one hospitals really send (a transfer cut short, a header edited by hand, a
mis-set gain, a file renamed to .dcm, a re-sent file under a new name, ...). Each is listed
in ``truth/corrupt.csv`` with its defect, so ingestion can be checked to quarantine exactly
these, for the right reason, while the rest of the batch lands.
"""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cardiolake.cohort.clinical import LAB_COLUMNS, LABEL_COLUMNS
from cardiolake.cohort.latent import patient_rng
from cardiolake.cohort.settings import CohortSettings
from cardiolake.domain import FINDINGS

logger = logging.getLogger(__name__)

#: Defect kinds, in the order they are cycled through.
DEFECTS: tuple[str, ...] = (
    "truncated_dat",
    "sample_count_mismatch",
    "wrong_gain",
    "not_dicom",
    "dicom_pixel_truncated",
    "nonmonotone_frame_times",
    "lab_impossible_value",
    "lab_unknown_loinc",
    "label_unknown_patient",
    "duplicate_file",
)
CORRUPT_COLUMNS = ("path", "row_id", "defect", "source")


def corrupt_count(settings: CohortSettings) -> int:
    """How many defects a cohort gets: the fraction of patients, and every kind at least once."""
    if settings.corrupt_fraction <= 0:
        return 0
    return max(len(DEFECTS), round(settings.corrupt_fraction * settings.patients))


def _copy_wfdb(
    src_stem: Path, dst_stem: Path, *, sample_factor: float = 1.0, gain: str | None = None
) -> None:
    """Copy a single-file WFDB record under a new name, optionally editing its header."""
    lines = src_stem.with_suffix(".hea").read_text().splitlines()
    head = lines[0].split()
    head[0] = dst_stem.name
    head[3] = str(int(int(head[3]) * sample_factor))
    out = [" ".join(head)]
    for line in lines[1:]:
        if line.startswith("#") or not line.strip():
            out.append(line)
            continue
        fields = line.split()
        fields[0] = f"{dst_stem.name}.dat"
        if gain is not None:
            unit = fields[2].split("/", 1)[1] if "/" in fields[2] else "mV"
            fields[2] = f"{gain}(0)/{unit}"
        out.append(" ".join(fields))
    dst_stem.with_suffix(".hea").write_text("\n".join(out) + "\n")
    shutil.copyfile(src_stem.with_suffix(".dat"), dst_stem.with_suffix(".dat"))


def _load_uncompressed(src: Path, seed: int, tag: str) -> pydicom.Dataset:
    ds = pydicom.dcmread(src)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    uid = generate_uid(entropy_srcs=[str(seed), "corrupt", tag])
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def add_corrupt_corpus(settings: CohortSettings, out_dir: Path) -> int:
    """Add ``corrupt_count(settings)`` broken inputs to a generated cohort.

    Args:
        settings: the cohort settings (seed, corrupt fraction).
        out_dir: the landing zone the good cohort was just written to.

    Returns:
        The number of defects added (rows of ``truth/corrupt.csv``).
    """
    n = corrupt_count(settings)
    truth_path = out_dir / "truth" / "corrupt.csv"
    truth_path.parent.mkdir(parents=True, exist_ok=True)
    rng = patient_rng(settings.seed, settings.patients, "corrupt")  # index past every patient
    mobiles = sorted((out_dir / "mobile").glob("mob_*.hea"))
    echoes = sorted((out_dir / "echo" / "dicom").glob("echo_*.dcm"))
    mrns = [row["mrn"] for row in csv.DictReader((out_dir / "patients.csv").open())]
    rows: list[dict[str, str]] = []
    lab_rows: list[dict[str, object]] = []
    label_rows: list[dict[str, object]] = []
    for k in range(n):
        defect = DEFECTS[k % len(DEFECTS)]
        tag = f"{k:04d}"
        if defect in {"truncated_dat", "sample_count_mismatch", "wrong_gain"}:
            if not mobiles:
                continue
            src = mobiles[int(rng.integers(len(mobiles)))].with_suffix("")
            dst = src.parent / f"mob_x{tag}"
            if defect == "truncated_dat":
                _copy_wfdb(src, dst)
                data = dst.with_suffix(".dat").read_bytes()
                dst.with_suffix(".dat").write_bytes(data[: len(data) * 2 // 5])
            elif defect == "sample_count_mismatch":
                _copy_wfdb(src, dst, sample_factor=0.5)  # the .dat holds twice what it says
            else:
                _copy_wfdb(src, dst, gain="1")  # 1 adu/mV: every amplitude 1000x too large
            rows.append(_row(dst.with_suffix(".hea"), out_dir, "", defect, src.with_suffix(".hea")))
        elif defect == "not_dicom":
            dst = out_dir / "echo" / "dicom" / f"echo_x{tag}.dcm"
            dst.parent.mkdir(parents=True, exist_ok=True)
            noise = rng.integers(0, 256, size=2048, dtype=np.uint8).tobytes()
            dst.write_bytes(b"exported report, not an image\n" + noise)
            rows.append(_row(dst, out_dir, "", defect, None))
        elif defect in {"dicom_pixel_truncated", "nonmonotone_frame_times", "duplicate_file"}:
            if not echoes:
                continue
            src = echoes[int(rng.integers(len(echoes)))]
            dst = out_dir / "echo" / "dicom" / f"echo_x{tag}.dcm"
            if defect == "duplicate_file":
                shutil.copyfile(src, dst)  # the same bytes re-sent under a new name
            else:
                ds = _load_uncompressed(src, settings.seed, tag)
                if defect == "dicom_pixel_truncated":
                    data = ds.PixelData
                    ds.PixelData = data[: (len(data) // 2) & ~1]
                else:
                    frames = int(ds.NumberOfFrames)
                    step = float(ds.FrameTime)
                    vector = [0.0] + [step] * (frames - 1)
                    for j in rng.choice(
                        np.arange(2, frames), size=min(3, frames - 2), replace=False
                    ):
                        vector[int(j)] = -step  # a frame stamped before its predecessor
                    del ds.FrameTime
                    ds.FrameTimeVector = vector
                    ds.FrameIncrementPointer = pydicom.tag.Tag(0x0018, 0x1065)
                ds.save_as(dst, enforce_file_format=True)
            rows.append(_row(dst, out_dir, "", defect, src))
        elif defect in {"lab_impossible_value", "lab_unknown_loinc"}:
            mrn = mrns[int(rng.integers(len(mrns)))]
            specimen = f"SX{tag}"
            loinc, value, unit = (
                ("2823-3", 42.0, "mmol/L")
                if defect == "lab_impossible_value"
                else ("99999-9", 1.0, "mg/dL")
            )
            lab_rows.append(
                {
                    "specimen_id": specimen, "mrn": mrn, "loinc": loinc, "test_name": "Potassium",
                    "value": value, "unit": unit, "draw_time": "2024-06-01T09:00:00",
                }
            )  # fmt: skip
            rows.append(
                {"path": "labs/labs.csv", "row_id": specimen, "defect": defect, "source": ""}
            )
        elif defect == "label_unknown_patient":
            label_id = f"LX{tag}"
            label_rows.append(
                {
                    "label_id": label_id, "mrn": f"{90_000_000 + k:08d}",
                    "exam_time": "2024-06-01T09:00:00", "label_time": "2024-06-02T09:00:00",
                    "reader": "adjudicated", "triage": "urgent", **dict.fromkeys(FINDINGS, 0),
                }
            )  # fmt: skip
            rows.append(
                {"path": "labels/labels.csv", "row_id": label_id, "defect": defect, "source": ""}
            )
    _append_csv(out_dir / "labs" / "labs.csv", LAB_COLUMNS, lab_rows)
    _append_csv(out_dir / "labels" / "labels.csv", LABEL_COLUMNS, label_rows)
    with truth_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(CORRUPT_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    logger.info("added %d corrupt inputs", len(rows))
    return len(rows)


def _row(path: Path, root: Path, row_id: str, defect: str, source: Path | None) -> dict[str, str]:
    return {
        "path": path.relative_to(root).as_posix(),
        "row_id": row_id,
        "defect": defect,
        "source": source.relative_to(root).as_posix() if source else "",
    }


def _append_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, object]]) -> None:
    if not rows:
        return
    with path.open("a", newline="", encoding="utf-8") as fh:
        csv.DictWriter(fh, fieldnames=list(columns), lineterminator="\n").writerows(rows)
