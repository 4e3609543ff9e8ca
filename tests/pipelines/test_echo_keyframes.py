"""LV area from the images alone and ED/ES keyframes, scored against the echo phantom's truth."""

from __future__ import annotations

import dataclasses
import time

import cv2
import numpy as np
import pytest

from cardiolake.cohort.echo_phantom import PhantomEcho, simulate_echo
from cardiolake.cohort.latent import PatientState, sample_patient
from cardiolake.cohort.settings import CohortSettings
from pipelines.signal.echo_keyframes import (
    Keyframes,
    KeyframeSettings,
    detect_keyframes,
    lv_area_curve,
)

ECG_SECONDS = 10.0
# Corners of the brief's ranges that the sampled cohort rarely reaches (HR, EF %, AF, fps).
EXTREMES = (
    (145.0, 60.0, False, 30),
    (42.0, 12.0, False, 60),
    (120.0, 75.0, False, 60),
    (110.0, 35.0, True, 45),
    (60.0, 20.0, False, 31),
    (85.0, 55.0, True, 52),
)


def beat_times(state: PatientState, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """R peaks over a 10 s ECG with the patient's beat-to-beat variability, and T ends."""
    rr = state.rr_s * np.clip(1.0 + state.hrv_sd * rng.standard_normal(80), 0.6, 1.4)
    r = np.cumsum(rr) - rng.uniform(0.1, 1.0) * state.rr_s
    r = r[(r >= 0) & (r < ECG_SECONDS)]
    return r, r + state.qt_ms / 1000.0


def cohort_state(index: int) -> PatientState:
    """Sampled patients first, then the extreme corners forced onto sampled ones."""
    state = sample_patient(CohortSettings(), index)
    if index >= 100:
        hr, ef, af, fps = EXTREMES[index - 100]
        state = dataclasses.replace(
            state, hr_bpm=hr, lvef=ef, af=af, hrv_sd=0.18 if af else 0.03, echo_fps=fps
        )
    duration = max(2.5, 2.3 * state.rr_s)
    start = min(state.echo_start_offset_s, ECG_SECONDS - duration - 0.3)
    return dataclasses.replace(state, echo_start_offset_s=start)


def phantom_clip(state: PatientState, *, size: int = 128) -> tuple[PhantomEcho, np.ndarray]:
    """The patient's clip and its frames resized to 112x112 as silver stores them."""
    r, t_end = beat_times(state, np.random.default_rng([state.index, 100]))
    echo = simulate_echo(
        state,
        np.random.default_rng(state.index),
        r_peaks_s=r,
        t_end_s=t_end,
        clip_start_s=state.echo_start_offset_s,
        duration_s=max(2.5, 2.3 * state.rr_s),
        fps=state.echo_fps,
        size=size,
    )
    frames = np.stack(
        [cv2.resize(f, (112, 112), interpolation=cv2.INTER_AREA) for f in echo.frames]
    )
    return echo, frames


def hit_rate(
    truth: np.ndarray, found: np.ndarray, fps: float, duration: float, margin: int = 3
) -> tuple[int, int]:
    """True keyframes with a detected frame within one frame interval.

    A keyframe in the first or last ``margin`` frames cannot show both flanks, so by default
    it is not counted; the detector finds it only when the frames beyond it show the next
    phase (``margin=0`` counts every keyframe).
    """
    dt = 1.0 / fps
    inner = truth[(truth >= margin * dt) & (truth <= duration - margin * dt)]
    hits = sum(bool(found.size) and np.min(np.abs(found - t)) <= dt + 1e-9 for t in inner)
    return hits, inner.size


@pytest.fixture(scope="module")
def cohort() -> list[tuple[PatientState, PhantomEcho, np.ndarray, Keyframes, float]]:
    out = []
    for index in [*range(54), *range(100, 100 + len(EXTREMES))]:
        state = cohort_state(index)
        echo, frames = phantom_clip(state)
        start = time.perf_counter()
        keys = detect_keyframes(lv_area_curve(frames), echo.frame_times_s)
        out.append((state, echo, frames, keys, time.perf_counter() - start))
    return out


def test_area_curve_tracks_the_true_cavity(cohort) -> None:
    corr = [
        np.corrcoef(lv_area_curve(frames), echo.lv_area_px)[0, 1] for _, echo, frames, *_ in cohort
    ]
    print(f"\nLV area vs truth: min r = {min(corr):.4f}, median r = {np.median(corr):.4f}")
    assert min(corr) > 0.9


@pytest.mark.parametrize("size", [128, 160])
def test_area_curve_works_at_native_sizes(size: int) -> None:
    for index in (0, 100, 101):
        echo, _ = phantom_clip(cohort_state(index), size=size)
        area = lv_area_curve(echo.frames)
        assert np.corrcoef(area, echo.lv_area_px)[0, 1] > 0.95
        # Areas are in pixels of the frames given: about the true cavity's pixel count.
        assert np.median(area / echo.lv_area_px) == pytest.approx(1.0, abs=0.25)


def test_keyframes_within_one_frame_on_many_patients(cohort) -> None:
    ed_hits = ed_total = es_hits = es_total = 0
    per_group: dict[str, list[int]] = {}
    for state, echo, _, keys, _ in cohort:
        duration = echo.frame_times_s[-1] + 1.0 / echo.fps
        ed = hit_rate(echo.ed_s, keys.ed_frame_s, echo.fps, duration)
        es = hit_rate(echo.es_s, keys.es_frame_s, echo.fps, duration)
        ed_hits, ed_total = ed_hits + ed[0], ed_total + ed[1]
        es_hits, es_total = es_hits + es[0], es_total + es[1]
        group = per_group.setdefault("af" if state.af else "sinus", [0, 0])
        group[0] += ed[0] + es[0]
        group[1] += ed[1] + es[1]
    every = np.sum(
        [
            hit_rate(truth, found, echo.fps, echo.frame_times_s[-1] + 1 / echo.fps, margin=0)
            for _, echo, _, keys, _ in cohort
            for truth, found in ((echo.ed_s, keys.ed_frame_s), (echo.es_s, keys.es_frame_s))
        ],
        axis=0,
    )
    hrs = [s.hr_bpm for s, *_ in cohort]
    efs = [s.lvef for s, *_ in cohort]
    fps = [e.fps for _, e, *_ in cohort]
    print(
        f"\n{len(cohort)} patients (HR {min(hrs):.0f}-{max(hrs):.0f}, EF {min(efs):.0f}-"
        f"{max(efs):.0f} %, {min(fps):.0f}-{max(fps):.0f} fps): "
        f"ED {100 * ed_hits / ed_total:.1f} % of {ed_total}, "
        f"ES {100 * es_hits / es_total:.1f} % of {es_total} within one frame; "
        + ", ".join(f"{g} {100 * h / n:.1f} % of {n}" for g, (h, n) in per_group.items())
        + f"; counting clip-edge keyframes too: {100 * every[0] / every[1]:.1f} % of {every[1]}"
    )
    assert every[0] / every[1] >= 0.9
    assert len(cohort) >= 40
    assert ed_hits / ed_total >= 0.95
    assert es_hits / es_total >= 0.95


def test_refined_times_are_sub_frame(cohort) -> None:
    errors = []
    for _, echo, _, keys, _ in cohort:
        for truth, refined in ((echo.ed_s, keys.ed_s), (echo.es_s, keys.es_s)):
            for t in truth:
                if refined.size:
                    errors.append(np.min(np.abs(refined - t)) * echo.fps)
    errors = np.asarray(errors)
    errors = errors[errors < 5]  # keyframes at the clip edges have no detection
    median, p90 = np.median(errors), np.percentile(errors, 90)
    print(f"\nrefined keyframe error: median {median:.2f}, p90 {p90:.2f} frames")
    assert np.median(errors) < 0.5


def test_keyframes_alternate_and_match_their_frames(cohort) -> None:
    for _, echo, _, keys, _ in cohort:
        np.testing.assert_array_equal(keys.ed_frame_s, echo.frame_times_s[keys.ed_idx])
        np.testing.assert_array_equal(keys.es_frame_s, echo.frame_times_s[keys.es_idx])
        assert np.all(np.abs(keys.ed_s - keys.ed_frame_s) <= 0.5 / echo.fps + 1e-9)
        events = sorted([(t, "ed") for t in keys.ed_s] + [(t, "es") for t in keys.es_s])
        kinds = [kind for _, kind in events]
        assert all(a != b for a, b in zip(kinds, kinds[1:], strict=False)), kinds
        # The echo's own cycle agrees with the heart rate.
        if np.isfinite(keys.cycle_s) and not echo.ed_s.size < 2:
            assert keys.cycle_s == pytest.approx(np.median(np.diff(echo.ed_s)), rel=0.35)


def test_noisy_synthetic_curve_with_a_flat_top() -> None:
    """Ejection, an abrupt refill and a long flat top (as in AF), under speckle-like noise.

    ED is the end of the flat top (ejection starts), not its start; ES is the end of ejection.
    The square-root refill is steeper than any real one, so ES is allowed two frames.
    """
    fps, period, seconds = 50.0, 0.8, 4.0
    t = np.arange(int(seconds * fps)) / fps
    phase = (t % period) / period
    shape = np.where(
        phase < 0.4,
        np.cos(np.pi * phase / 0.4),
        -1 + 2 * np.clip((phase - 0.4) / 0.2, 0, 1) ** 0.5,
    )
    truth_ed = np.arange(period, seconds - 0.1, period)
    truth_es = np.arange(0.4 * period, seconds - 0.1, period)
    ed_err, es_err = [], []
    for seed in range(5):
        curve = 1000 + 200 * shape + np.random.default_rng(seed).normal(0, 6, t.size)
        keys = detect_keyframes(curve, t)
        assert keys.cycle_s == pytest.approx(period, abs=2 / fps)
        assert keys.ed_idx.size == truth_ed.size and keys.es_idx.size == truth_es.size
        ed_err += [np.min(np.abs(keys.ed_s - x)) * fps for x in truth_ed]
        es_err += [np.min(np.abs(keys.es_s - x)) * fps for x in truth_es]
    assert np.median(ed_err) < 1.0 and np.mean(np.asarray(ed_err) <= 2.0) >= 0.9
    assert np.max(es_err) <= 2.0


def test_degenerate_inputs() -> None:
    t = np.arange(60) / 30.0
    for flat in (np.full(60, 500.0), np.zeros(60), np.full(60, np.nan)):
        keys = detect_keyframes(flat, t)
        assert keys.ed_idx.size == keys.es_idx.size == 0
    assert detect_keyframes(np.ones(3), np.arange(3) / 30.0).ed_idx.size == 0
    with pytest.raises(ValueError):
        detect_keyframes(np.ones(10), np.arange(9) / 30.0)
    assert np.all(lv_area_curve(np.zeros((20, 112, 112), dtype=np.uint8)) == 0)
    assert lv_area_curve(np.zeros((0, 112, 112), dtype=np.uint8)).shape == (0,)
    with pytest.raises(ValueError):
        lv_area_curve(np.zeros((112, 112), dtype=np.uint8))


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        KeyframeSettings().smooth_frames = 9  # type: ignore[misc]
