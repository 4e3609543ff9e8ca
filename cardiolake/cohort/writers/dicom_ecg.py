"""12-lead ECGs as DICOM 12-Lead ECG Waveform Storage, mirroring a real cart's export.

The layout follows pydicom's ``waveform_ecg.dcm`` test file (a Mortara ELI 250 export): one
multiplex group of interleaved 16-bit signed samples, leads coded with SCP-ECG codes and a
sensitivity in microvolts, so ``ds.waveform_array(0)`` returns microvolts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import TwelveLeadECGWaveformStorage

from cardiolake.cohort.latent import PatientState
from cardiolake.cohort.signals import EcgSimulation
from cardiolake.cohort.writers.dicom_common import (
    add_synchronization,
    base_dataset,
    code_item,
    format_da,
    format_dt,
    format_tm,
    save,
)

#: Microvolts per stored unit: 2.5 µV resolution, ±81.9 mV range.
SENSITIVITY_UV = 2.5
#: SCP-ECG lead codes (DICOM CID 3001, scheme SCPECG 1.3).
SCPECG_LEADS: dict[str, tuple[str, str]] = {
    "I": ("5.6.3-9-1", "Lead I"),
    "II": ("5.6.3-9-2", "Lead II"),
    "III": ("5.6.3-9-61", "Lead III"),
    "aVR": ("5.6.3-9-62", "Lead aVR"),
    "aVL": ("5.6.3-9-63", "Lead aVL"),
    "aVF": ("5.6.3-9-64", "Lead aVF"),
    "V1": ("5.6.3-9-3", "Lead V1"),
    "V2": ("5.6.3-9-4", "Lead V2"),
    "V3": ("5.6.3-9-5", "Lead V3"),
    "V4": ("5.6.3-9-6", "Lead V4"),
    "V5": ("5.6.3-9-7", "Lead V5"),
    "V6": ("5.6.3-9-8", "Lead V6"),
}
# Limits of the 12-Lead ECG IOD (PS3.3 A.34.3.4).
_MAX_CHANNELS, _MAX_SAMPLES, _FS_RANGE = 13, 16384, (200, 1000)


def _channel(lead: str) -> Dataset:
    code, meaning = SCPECG_LEADS[lead]
    channel = Dataset()
    channel.ChannelSourceSequence = Sequence([code_item(code, "SCPECG", meaning, "1.3")])
    channel.ChannelSensitivity = f"{SENSITIVITY_UV:g}"
    channel.ChannelSensitivityUnitsSequence = Sequence(
        [code_item("uV", "UCUM", "microvolt", "1.4")]
    )
    channel.ChannelSensitivityCorrectionFactor = "1"
    channel.ChannelBaseline = "0"
    channel.ChannelSampleSkew = "0"
    channel.WaveformBitsStored = 16
    channel.FilterLowFrequency = "0.05"
    channel.FilterHighFrequency = "150"
    return channel


def _acquisition_context() -> Sequence:
    """Electrode placement: standard 12-lead positions (TID 3401), as carts report it."""
    item = Dataset()
    item.ValueType = "CODE"
    item.ConceptNameCodeSequence = Sequence(
        [code_item("5.4.5-33-1", "SCPECG", "Electrode Placement", "1.3")]
    )
    item.ConceptCodeSequence = Sequence(
        [
            code_item(
                "5.4.5-33-1-1",
                "SCPECG",
                "Standard 12-lead positions: limb leads placed at extremities",
                "1.3",
            )
        ]
    )
    return Sequence([item])


def write_dicom_ecg(sim: EcgSimulation, path: Path, *, state: PatientState, seed: int) -> Path:
    """Write a resting ECG as a DICOM 12-Lead ECG Waveform.

    Args:
        sim: the recording; ``signals_mv`` is ``(n_samples, n_leads)`` millivolts.
        path: output file (parents are created).
        state: the patient (PHI for the patient module, ``exam_time`` as acquisition time,
            ``synchronized`` adds the UTC Synchronization module).
        seed: cohort seed, for deterministic UIDs.

    Returns:
        ``path``.

    Raises:
        ValueError: if the recording breaks the IOD's limits (at most 13 channels and
            16384 samples, 200-1000 Hz) or a lead has no SCP-ECG code.
    """
    signals = np.asarray(sim.signals_mv, dtype=np.float64)
    n_samples, n_channels = signals.shape
    if not 1 <= n_channels <= _MAX_CHANNELS or n_channels != len(sim.lead_names):
        raise ValueError(f"{n_channels} channels for leads {sim.lead_names}")
    if n_samples > _MAX_SAMPLES or not _FS_RANGE[0] <= sim.fs <= _FS_RANGE[1]:
        raise ValueError(f"{n_samples} samples at {sim.fs} Hz exceed the 12-lead ECG IOD")
    unknown = [lead for lead in sim.lead_names if lead not in SCPECG_LEADS]
    if unknown:
        raise ValueError(f"no SCP-ECG code for leads {unknown}")

    start = state.exam_time
    ds = base_dataset(
        sop_class_uid=TwelveLeadECGWaveformStorage,
        state=state,
        seed=seed,
        kind="ecg",
        modality="ECG",
        series_number=1,
        content_time=start,
    )
    ds.ManufacturerModelName = "cardiolake ECG simulator"
    ds.SeriesDescription = "Resting 12-lead ECG"
    # Waveform Identification
    ds.ContentDate = format_da(start)
    ds.ContentTime = format_tm(start)
    ds.AcquisitionDateTime = format_dt(start)
    ds.AcquisitionContextSequence = _acquisition_context()
    if state.synchronized:
        add_synchronization(ds, seed=seed, state=state, kind="ecg", frame_of_reference=False)

    group = Dataset()
    # MultiplexGroupTimeOffset (PS3.3 C.10.9.1, 1C when Acquisition Time Synchronized is Y) is
    # left out: dciodvfy evaluates its condition inside the sequence item and rejects it, and
    # every file we write must validate cleanly. The offset would be 0 (one group) anyway.
    group.WaveformOriginality = "ORIGINAL"
    group.NumberOfWaveformChannels = n_channels
    group.NumberOfWaveformSamples = n_samples
    group.SamplingFrequency = f"{sim.fs:g}"
    group.MultiplexGroupLabel = "RHYTHM"
    group.ChannelDefinitionSequence = Sequence([_channel(lead) for lead in sim.lead_names])
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    counts = np.round(signals * 1000.0 / SENSITIVITY_UV)
    counts = np.clip(counts, -32768, 32767).astype("<i2")  # interleaved: sample-major
    group.add(DataElement(0x54001010, "OW", counts.tobytes()))
    ds.WaveformSequence = Sequence([group])
    return save(ds, path)
