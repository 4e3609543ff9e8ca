"""Feast feature services: one per model that consumes features."""

from __future__ import annotations

from feast import FeatureService

from feature_repo.feature_views import (
    ecg_embedding,
    ecg_measurements,
    echo_embedding,
    fused_embedding,
    labs_latest,
    labs_window,
)

# The multimodal teacher (training stage 3): labs, ECG measurements and every embedding.
teacher_training = FeatureService(
    name="teacher_training",
    features=[
        labs_latest,
        labs_window,
        ecg_measurements,
        ecg_embedding,
        echo_embedding,
        fused_embedding,
    ],
    description="Features of the multimodal teacher, joined point-in-time to label times.",
    tags={"model": "teacher", "version": "1"},
)

# Batch cohort scoring and dashboards: what is known about a patient without imaging.
cohort_scoring = FeatureService(
    name="cohort_scoring",
    features=[labs_latest, labs_window, ecg_measurements, ecg_embedding],
    description="Features read when scoring a cohort (labs, ECG measurements, ECG embedding).",
    tags={"model": "student-cohort", "version": "1"},
)

#: Every feature service.
FEATURE_SERVICES: tuple[FeatureService, ...] = (teacher_training, cohort_scoring)
