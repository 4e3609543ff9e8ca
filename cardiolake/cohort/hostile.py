"""Hostile inputs and planted identifiers, added to a generated landing zone.

Where :mod:`cardiolake.cohort.corrupt` adds the honest mistakes hospitals make, this module
adds what a careless or hostile export does: files that *declare* gigabytes (billions of
frames, a deflate bomb, a WFDB header with 10^9 samples), a patient index in Windows-1252
with a truncated row, CSVs with a BOM and semicolons, symbolic-link loops and a FIFO, an echo
with burned-in annotation, an R-wave vector shifted against its frames, a finding-level
reader disagreement nobody adjudicated; and identifiers planted in every free-text place
(WFDB comments, DICOM descriptions, names, private tags, notes in many forms).

Each hostile input is listed in ``truth/hostile.csv`` with the quarantine reason it must
get; each planted identifier in ``truth/planted_phi.csv`` (they must appear nowhere in the
lake). No stage imports this module.
"""

from __future__ import annotations

import copy
import csv
import os
import zlib
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_file_meta_info
from pydicom.sequence import Sequence
from pydicom.uid import UID, generate_uid

#: People and contact details that appear only in planted free text.
RELATIVE = ("Jane", "Okonkwo-Smith")
CLINICIAN = ("Alice", "Wakefield")
STREET, CITY, ZIP = "1742 Evergreen Terrace", "Springfield", "62704"
PHONE, PHONE_INTL = "555-867-5309", "+44 20 7946 0958"
EMAIL, URL, IP = "jane.os@example.org", "https://portal.example.org/p/88231", "10.23.45.67"
ACCOUNT, SERIAL = "4455-8899-1123", "AB12-77Q9X"
#: Diacritics, an apostrophe and a hyphen: the forms a name scrubber misses.
PATIENT_NAME = ("O'Brien-Núñez", "María-José")


def _fields(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def _write(path: Path, columns: list[str], rows: list[dict[str, str]], **kw: str) -> None:
    encoding = kw.get("encoding", "utf-8")
    with path.open("w", newline="", encoding=encoding) as fh:
        writer = csv.DictWriter(
            fh, fieldnames=columns, delimiter=kw.get("delimiter", ","), lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(rows)


def _deflate_bomb(path: Path, inflated_mb: int) -> None:
    """A DICOM file whose deflated data set inflates to ``inflated_mb`` MB of zeros."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.3.1")
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.1.99")  # Deflated Explicit VR Little Endian
    meta.ImplementationClassUID = generate_uid()
    with path.open("wb") as fh:
        fh.write(b"\0" * 128 + b"DICM")
        out = DicomFileLike(fh)
        out.is_little_endian, out.is_implicit_VR = True, False
        write_file_meta_info(out, meta, enforce_standard=True)
        squeeze = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        block = b"\0" * (1 << 20)
        for _ in range(inflated_mb):
            fh.write(squeeze.compress(block))
        fh.write(squeeze.flush())


def _wfdb_header(path: Path, record: str, n_samples: int, comments: list[str]) -> None:
    lines = [f"{record} 1 500 {n_samples}", f"{record}.dat 16 1000/mV 16 0 0 0 0 I"]
    path.write_text("\n".join(lines + [f"# {c}" for c in comments]) + "\n")


def add_hostile_corpus(out_dir: Path) -> list[dict[str, str]]:
    """Add hostile files to a generated landing zone; list them with their expected reason.

    Args:
        out_dir: a landing zone written by :func:`cardiolake.cohort.generate.generate_cohort`
            (with at least two echo DICOMs and one mobile WFDB record).

    Returns:
        Rows ``path`` (relative), ``reason`` (the quarantine reason), ``what``; also written
        to ``truth/hostile.csv``.
    """
    rows: list[dict[str, str]] = []

    def note(path: Path, reason: str, what: str) -> None:
        rows.append({"path": os.path.relpath(path, out_dir), "reason": reason, "what": what})

    echoes = sorted((out_dir / "echo" / "dicom").glob("echo_*.dcm"))
    folder = out_dir / "echo" / "dicom"
    src = pydicom.dcmread(echoes[0])

    ds = copy.deepcopy(src)
    ds.NumberOfFrames = 2_000_000_000
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(folder / "echo_h_frames.dcm")
    note(folder / "echo_h_frames.dcm", "size_limit_exceeded", "declares 2e9 frames")

    ds = copy.deepcopy(src)
    ds.Rows, ds.Columns = 65000, 65000  # decoded: gigabytes per frame
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(folder / "echo_h_pixels.dcm")
    note(folder / "echo_h_pixels.dcm", "size_limit_exceeded", "decodes to gigabytes")

    _deflate_bomb(folder / "echo_h_deflate.dcm", inflated_mb=400)
    note(folder / "echo_h_deflate.dcm", "size_limit_exceeded", "deflate bomb")

    ds = copy.deepcopy(src)
    ds.BurnedInAnnotation = "YES"
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(folder / "echo_h_burned.dcm")
    note(folder / "echo_h_burned.dcm", "burned_in_annotation", "text burned into pixels")

    ecgs = sorted((out_dir / "ecg" / "dicom").glob("*.dcm"))
    if ecgs:
        ds = pydicom.dcmread(ecgs[0])
        ds.WaveformSequence[0].NumberOfWaveformSamples = 1_000_000_000
        ds.SOPInstanceUID = generate_uid()
        ds.save_as(out_dir / "ecg" / "dicom" / "ecg_h_samples.dcm")
        note(out_dir / "ecg" / "dicom" / "ecg_h_samples.dcm", "size_limit_exceeded",
             "waveform declares 1e9 samples")  # fmt: skip

    mobile = out_dir / "mobile"
    for name, samples, reason in (
        ("mob_h_huge", 1_000_000_000, "size_limit_exceeded"),
        ("mob_h_lie", 20_000_000, "header_mismatch"),
    ):
        (mobile / f"{name}.dat").write_bytes(b"\0" * 20_000)
        _wfdb_header(mobile / f"{name}.hea", name, samples, ["device: kardia-mobile-1l"])
        note(mobile / f"{name}.hea", reason, f"header declares {samples:,} samples")
    (mobile / "mob_h_big.dat").write_bytes(b"\0" * 2000)
    _wfdb_header(mobile / "mob_h_big.hea", "mob_h_big", 1000, ["x" * 200] * 12_000)
    note(mobile / "mob_h_big.hea", "size_limit_exceeded", "2.4 MB header")

    links = out_dir / "links"
    links.mkdir(exist_ok=True)
    os.symlink("self_loop", links / "self_loop")
    note(links / "self_loop", "symlink_loop", "link to itself")
    os.symlink("..", links / "parent_loop")
    note(links / "parent_loop", "symlink_loop", "link to an ancestor folder")
    os.symlink("missing_target.dcm", links / "dangling.dcm")
    note(links / "dangling.dcm", "broken_symlink", "link to nothing")
    os.mkfifo(links / "pipe.csv")
    note(links / "pipe.csv", "unreadable_path", "a FIFO")

    # the patient index in Windows-1252 with a truncated row: the rest must still be used
    columns, patients = _fields(out_dir / "patients.csv")
    text = (out_dir / "patients.csv").read_text(encoding="utf-8")
    (out_dir / "patients.csv").write_text(text + '1234567,"Trunc\n', encoding="cp1252")
    note(out_dir / "patients.csv", "malformed_index_row", "a truncated row")

    # labs with a BOM and semicolons: must be read as labs, not quarantined as unknown
    columns, labs = _fields(out_dir / "labs" / "labs.csv")
    _write(out_dir / "labs" / "labs.csv", columns, labs, encoding="utf-8-sig", delimiter=";")

    with (out_dir / "truth" / "hostile.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "reason", "what"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return rows


def shift_r_wave(out_dir: Path, shift_ms: float = 200.0) -> str:
    """Shift the R Wave Time Vector of the first unsynchronised echo that has one.

    Returns:
        The echo's path relative to ``out_dir``.
    """
    for path in sorted((out_dir / "echo" / "dicom").glob("echo_0*.dcm")):
        ds = pydicom.dcmread(path)
        if "RWaveTimeVector" in ds and str(ds.get("AcquisitionTimeSynchronized", "")) != "Y":
            ds.RWaveTimeVector = [float(t) + shift_ms for t in ds.RWaveTimeVector]
            ds.save_as(path)
            return os.path.relpath(path, out_dir)
    raise ValueError("no unsynchronised echo with an R Wave Time Vector")


def add_finding_disagreement(out_dir: Path) -> str:
    """Two readers agree on triage but not on a finding, and nobody adjudicates.

    Returns:
        The MRN of the patient whose new exam carries the disagreement.
    """
    columns, labels = _fields(out_dir / "labels" / "labels.csv")
    first = labels[0]
    finding = columns[6]
    exam = "2024-01-02T08:00:00"
    readers = (("reader_1", "1"), (f"Dr. {CLINICIAN[0]} {CLINICIAN[1]}", "0"))
    for k, (reader, value) in enumerate(readers):
        row = {**first, "label_id": f"LDIS_{k}", "exam_time": exam, "reader": reader,
               "label_time": "2024-01-03T08:00:00", "triage": "routine"}  # fmt: skip
        row.update({c: "0" for c in columns[6:]})
        row[finding] = value
        labels.append(row)
    _write(out_dir / "labels" / "labels.csv", columns, labels)
    return first["mrn"]


def plant_identifiers(out_dir: Path) -> list[str]:
    """Put identifiers into every free-text place of a landing zone.

    Returns:
        Every planted identifier string (also in ``truth/planted_phi.csv``), plus the MRNs,
        names and birth dates of the patient index.
    """
    columns, patients = _fields(out_dir / "patients.csv")
    target = patients[0]
    target["name"] = f"{PATIENT_NAME[0]}, {PATIENT_NAME[1]}"
    _write(out_dir / "patients.csv", columns, patients)
    last, first = PATIENT_NAME
    mrn, birth = target["mrn"], target["birth_date"]
    y, m, d = birth.split("-")
    us_birth = f"{m}/{d}/{y}"

    for hea in sorted((out_dir / "mobile").glob("mob_0*.hea"))[:2]:
        extra = [
            f"Name: {first} {last}", f"{first.lower()} {last.lower()} DOB {us_birth}",
            f"referred by Dr. {CLINICIAN[0]} {CLINICIAN[1]}", f"address: {STREET}, {CITY} {ZIP}",
            f"call {PHONE} or {EMAIL}", "age: 93", f"Dx: 164889003,I48.0 {last}",
            f"serial: {SERIAL}",
        ]  # fmt: skip
        with hea.open("a") as fh:
            fh.writelines(f"# {line}\n" for line in extra)
    for hea in sorted((out_dir / "mobile").glob("mob_0*.hea")):
        lines = hea.read_text().splitlines()
        if int(lines[0].split()[1]) < 2:
            continue
        n_sig = int(lines[0].split()[1])
        signal = lines[n_sig].split()  # the last signal line: the other leads stay ECG
        signal[-1] = "OBrienNunez"  # a channel labelled with the patient's name (ASCII)
        lines[n_sig] = " ".join(signal)
        hea.write_text("\n".join(lines) + "\n")
        break

    for path in sorted((out_dir / "echo" / "dicom").glob("echo_0*.dcm"))[:2]:
        ds = pydicom.dcmread(path)
        ds.SeriesDescription = f"Apical 4 chamber {last} {mrn}"
        ds.ProtocolName = f"Echo {first} {last}"
        ds.StudyDescription = f"TTE for {first} {last}"
        ds.OperatorsName = f"{CLINICIAN[1]}^{CLINICIAN[0]}"
        ds.ReferringPhysicianName = f"{CLINICIAN[1]}^{CLINICIAN[0]}"
        ds.InstitutionName = f"{CITY} General, {STREET}"
        ds.ImageComments = f"{RELATIVE[0]} {RELATIVE[1]} present, {PHONE_INTL}"
        ds.add_new((0x0011, 0x0010), "LO", "ACME PRIVATE")
        ds.add_new((0x0011, 0x1010), "LO", f"{last} {mrn} {us_birth}")
        view = Dataset()
        view.CodeMeaning = f"apical four chamber ({first})"
        ds.ViewCodeSequence = Sequence([view])
        ds.save_as(path)

    columns, notes = _fields(out_dir / "notes" / "notes.csv")
    mrns = {p["mrn"]: p for p in patients}
    planted_notes = [
        f"pt {first.lower()} {last.lower()} seen {int(m)}/{int(d)} by dr. {CLINICIAN[1].lower()}. "
        f"EF 35%, QTc 468 ms, K 4.1 mmol/L, BNP 450 pg/mL. Wife {RELATIVE[0]} {RELATIVE[1]} "
        f"({PHONE_INTL}, {EMAIL}) lives at {STREET}, {CITY}, IL {ZIP}. Age 93.",
        f"Chart ...{mrn[-5:]}; portal {URL} from {IP}. Acct# {ACCOUNT}, pacemaker serial "
        f"{SERIAL}. Born {int(d)} {['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'][int(m) - 1]} {y}. "  # noqa: E501
        f"Sinus rhythm 72 bpm, LBBB, moderate mitral regurgitation. Seen on March 3.",
        f"{last.upper()}, {first.upper()} (MRN {mrn[:4]}-{mrn[4:]}) called {PHONE}; "
        f"daughter {RELATIVE[0].lower()} updated. Atrial fibrillation, rate 110 bpm.",
    ]
    base = next(n for n in notes if n["mrn"] in mrns) if notes else None
    for k, text in enumerate(planted_notes):
        author = f"Dr. {CLINICIAN[0]} {CLINICIAN[1]}"
        notes.append(
            {**(base or {}), "note_id": f"NPHI{k}", "mrn": mrn, "text": text, "author": author}
        )
    _write(out_dir / "notes" / "notes.csv", columns, notes)

    planted = [
        first, last, "Núñez", "O'Brien", "María", CLINICIAN[0], CLINICIAN[1], *RELATIVE,
        "Okonkwo", STREET, "Evergreen", ZIP, PHONE, PHONE_INTL, EMAIL, "portal.example.org",
        IP, ACCOUNT, SERIAL, us_birth, birth, "OBrienNunez", f"Dr. {CLINICIAN[0]}", mrn,
        mrn[-5:], f"{mrn[:4]}-{mrn[4:]}",
    ]  # fmt: skip
    with (out_dir / "truth" / "planted_phi.csv").open("w", newline="") as fh:
        fh.writelines(f"{p}\n" for p in planted)
    for p in patients:
        planted += [p["mrn"], p["birth_date"]]
        planted += [part.strip() for part in p["name"].replace("^", ",").split(",")]
    return [p for p in dict.fromkeys(planted) if p]
