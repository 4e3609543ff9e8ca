"""Settings of the synthetic cohort generator.

One frozen dataclass holds every knob; the CLI builds it from flags and passes it down.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CohortSettings:
    """Everything that shapes a generated cohort.

    Attributes mirror the ``cardiolake cohort generate`` flags; the remaining ones are
    fixed by the formats the generator imitates and rarely need changing.
    """

    patients: int = 50
    seed: int = 0
    labeled_fraction: float = 0.2  # the design's 5k labeled : 20k unlabeled pairs
    mobile_only_fraction: float = 0.0  # patients seen only by a mobile device
    corrupt_fraction: float = 0.0  # broken files added per good patient
    workers: int = 1
    # 12-lead resting ECG (PTB-XL-like)
    ecg_fs: int = 500
    ecg_seconds: float = 10.0
    dicom_ecg_fraction: float = 0.25  # share of 12-lead ECGs delivered as DICOM waveforms
    # mobile ECG
    mobile_fs: int = 300
    mobile_seconds: float = 30.0
    six_lead_fraction: float = 0.5
    # echo
    echo_size: int = 128  # pixels, square; >= 112 so silver can resize down to 112
    echo_fps_range: tuple[int, int] = (30, 60)
    echo_min_seconds: float = 2.5
    r_wave_vector_fraction: float = 0.8  # echoes carrying (0018,6060) R Wave Time Vector
    synchronized_fraction: float = 0.15  # echo and ECG share an acquisition clock
    compression_shares: dict[str, float] = field(
        default_factory=lambda: {"none": 0.5, "jpeg2000": 0.3, "rle": 0.2}
    )
    echonet_fraction: float = 0.2  # echoes also delivered in EchoNet-Dynamic layout
    max_clock_offset_s: float = 1.5  # |echo clock - ECG clock| for unsynchronised devices

    def __post_init__(self) -> None:
        for name in ("labeled_fraction", "mobile_only_fraction", "corrupt_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.patients < 1:
            raise ValueError(f"patients must be >= 1, got {self.patients}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.echo_size < 112:
            raise ValueError(f"echo_size must be >= 112, got {self.echo_size}")
