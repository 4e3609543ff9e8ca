"""Modules shared by the generator's DICOM writers: patient, study, equipment, UIDs, dates.

Everything is derived from ``(seed, patient)`` so a regenerated cohort is byte-identical:
UIDs are hashed rather than random and no attribute reads the wall clock.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from cardiolake.cohort.latent import PatientState

#: Synchronization Frame of Reference UID for UTC (PS3.6 well-known UID): devices that share
#: it had their clocks synchronised, so their acquisition times are directly comparable.
UTC_SYNCHRONIZATION_UID = UID("1.2.840.10008.15.1.1")
MANUFACTURER = "cardiolake synthetic"
INSTITUTION = "Synthetic General Hospital"


def deterministic_uid(seed: int, state: PatientState, kind: str) -> UID:
    """A UID that is a pure function of cohort seed, patient and what it identifies.

    Args:
        seed: cohort seed.
        state: the patient; only ``patient_id`` is used (hashed, so it never shows).
        kind: what the UID names, e.g. ``"study"``, ``"echo-series"``, ``"ecg-instance"``.

    Returns:
        A UID under pydicom's root, stable across runs and machines.
    """
    return generate_uid(entropy_srcs=["cardiolake", str(seed), state.patient_id, kind])


def accession_number(seed: int, state: PatientState) -> str:
    """Hospital-style accession number for the patient's exam (a hash, not the index)."""
    digest = hashlib.sha256(f"{seed}:{state.patient_id}:accession".encode()).hexdigest()
    return f"A{int(digest[:12], 16) % 10**10:010d}"


def format_da(value: date) -> str:
    """DICOM DA (``YYYYMMDD``)."""
    return value.strftime("%Y%m%d")


def format_tm(value: datetime, *, fraction: bool = True) -> str:
    """DICOM TM (``HHMMSS.FFFFFF``; whole seconds when ``fraction`` is false)."""
    return value.strftime("%H%M%S.%f" if fraction else "%H%M%S")


def format_dt(value: datetime) -> str:
    """DICOM DT (``YYYYMMDDHHMMSS.FFFFFF``), local time without an offset as devices write."""
    return value.strftime("%Y%m%d%H%M%S.%f")


def code_item(value: str, scheme: str, meaning: str, version: str | None = None) -> Dataset:
    """One item of a code sequence (Code Value, Designator, optional Version, Meaning)."""
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    if version is not None:
        item.CodingSchemeVersion = version
    item.CodeMeaning = meaning
    return item


def base_dataset(
    *,
    sop_class_uid: str,
    state: PatientState,
    seed: int,
    kind: str,
    modality: str,
    series_number: int,
    content_time: datetime,
) -> Dataset:
    """A dataset with SOP Common, Patient, General Study, General Series and Equipment.

    The patient module carries the synthetic PHI (name, MRN, birth date, sex) exactly where
    a hospital export would; ingestion is expected to strip it. The study is shared by the
    patient's ECG and echo (same visit), while series and instance are per ``kind``.

    Args:
        sop_class_uid: storage SOP class of the instance.
        state: the patient.
        seed: cohort seed (for UIDs).
        kind: short modality kind used in UIDs, e.g. ``"echo"`` or ``"ecg"``.
        modality: DICOM Modality (``"US"``, ``"ECG"``).
        series_number: General Series number.
        content_time: instance creation time on the acquiring device's clock.

    Returns:
        The dataset, with file meta set for Explicit VR Little Endian.
    """
    instance_uid = deterministic_uid(seed, state, f"{kind}-instance")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = meta
    # SOP Common
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.InstanceCreationDate = format_da(content_time)
    ds.InstanceCreationTime = format_tm(content_time, fraction=False)
    ds.SOPClassUID = UID(sop_class_uid)
    ds.SOPInstanceUID = instance_uid
    # Patient (synthetic PHI)
    ds.PatientName = state.name
    ds.PatientID = state.mrn
    ds.PatientBirthDate = format_da(state.birth_date)
    ds.PatientSex = state.sex
    # General Study (shared by the patient's ECG and echo: one visit)
    ds.StudyInstanceUID = deterministic_uid(seed, state, "study")
    ds.StudyDate = format_da(state.exam_time)
    ds.StudyTime = format_tm(state.exam_time, fraction=False)
    ds.StudyID = "1"
    ds.AccessionNumber = accession_number(seed, state)
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Cardiac triage work-up"
    # General Series
    ds.Modality = modality
    ds.SeriesInstanceUID = deterministic_uid(seed, state, f"{kind}-series")
    ds.SeriesNumber = series_number
    ds.InstanceNumber = 1
    # General Equipment
    ds.Manufacturer = MANUFACTURER
    ds.InstitutionName = INSTITUTION
    return ds


def add_synchronization(
    ds: Dataset, *, seed: int, state: PatientState, kind: str, frame_of_reference: bool
) -> None:
    """Add the Synchronization module declaring an NTP-synchronised UTC clock.

    Args:
        ds: dataset to extend.
        seed: cohort seed (for the Frame of Reference UID).
        state: the patient.
        kind: modality kind used in the UID.
        frame_of_reference: also add the Frame of Reference module (image IODs have it,
            waveform IODs do not).
    """
    if frame_of_reference:
        ds.FrameOfReferenceUID = deterministic_uid(seed, state, f"{kind}-frame-of-reference")
        ds.PositionReferenceIndicator = ""
    ds.SynchronizationFrameOfReferenceUID = UTC_SYNCHRONIZATION_UID
    ds.SynchronizationTrigger = "NO TRIGGER"
    ds.AcquisitionTimeSynchronized = "Y"
    ds.TimeSource = "NTP"
    ds.TimeDistributionProtocol = "NTP"


def save(ds: Dataset, path: Path) -> Path:
    """Write ``ds`` as a DICOM Part 10 file (no wall-clock or random content is added)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
