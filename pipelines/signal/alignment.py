"""Per-beat alignment of ECG R peaks with echo end-diastole / end-systole keyframes.

A plain function that a Spark task calls once per (ECG, echo) pair. The two recordings come
from different machines, so the echo clip's start on the ECG's time axis is known only up to
the echo machine's clock error (``echo clock - ECG clock``). Sources of synchrony, best first:

* ``dicom_r_wave`` — the echo's DICOM R Wave Time Vector holds the R peaks the echo machine
  saw, clip-relative on its own clock. Sliding that sequence along the ECG's R peaks fits
  the offset to a few milliseconds.
* ``shared_clock`` — both devices were synchronised: the offset is zero.
* ``phase_match`` — only the echo's own keyframes: ED follows R by the electromechanical
  delay, so ED times minus a prior delay are matched to R peaks the same way. The unknown
  true delay (30-70 ms) becomes a bias of the offset of at most its spread around the prior.

Every pairing of an event with an R peak proposes an offset within ``max_clock_offset_s``.
Whole-beat shifts fit the events about equally well except for the pattern of RR intervals,
so each proposal is also scored on how steadily the ED and ES keyframes trail their R peaks;
in a very regular rhythm the runner-up shift stays close, which ``confidence`` reports and
every beat's ``quality`` carries.

The clip start on the ECG axis is ``(echo_start - ecg_start) - clock_offset``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np

SyncSource = Literal["dicom_r_wave", "shared_clock", "phase_match", "none"]


@dataclass(frozen=True)
class AlignmentSettings:
    """Knobs of the ECG/echo alignment.

    Attributes:
        max_clock_offset_s: offsets (echo clock - ECG clock) searched, +-; device clocks that
            drift further are not worth aligning by phase.
        emd_prior_s: expected electromechanical delay, R peak to end-diastole.
        max_lag_s: an ED keyframe belongs to a beat when its lag after R differs from the
            recording's typical lag by at most this (a few frames at 30 fps).
        match_tol_s: an event within this of an R peak is that R peak (detector jitter of
            both machines plus a frame of keyframe error).
        min_systole_s: an ES keyframe sits at least this long after its beat's R peak.
        min_matches: fewest matched events that establish an offset.
        lag_scale_s: spread of a beat's ED lag around the recording's median lag at which
            its quality falls to exp(-1/2); at least one frame interval is used.
        confidence_scale_s: RMS separation between the best and the runner-up offset at which
            the match confidence reaches 1 - 1/e; close runners-up mean a whole-beat ambiguity.
        phase_match_weight: quality ceiling of phase-matched beats, whose lags are partly set
            by the emd prior rather than measured.
    """

    max_clock_offset_s: float = 2.0
    emd_prior_s: float = 0.05
    max_lag_s: float = 0.15
    match_tol_s: float = 0.08
    min_systole_s: float = 0.1
    min_matches: int = 2
    lag_scale_s: float = 0.02
    confidence_scale_s: float = 0.01
    phase_match_weight: float = 0.8


@dataclass(frozen=True)
class AlignedBeat:
    """One ECG beat inside the echo clip, with its keyframes on the ECG's time axis.

    Attributes:
        beat_index: index of the R peak in the ECG's R-peak sequence.
        r_peak_s: R peak, seconds from the ECG start.
        ed_s: end-diastole on the ECG axis (NaN when none belongs to this beat).
        es_s: end-systole on the ECG axis (NaN when none).
        ed_frame: index of the echo frame nearest to ED (-1 when none).
        es_frame: index of the echo frame nearest to ES (-1 when none).
        lag_ed_s: ``ed_s - r_peak_s``.
        lag_es_s: ``es_s - r_peak_s``.
        quality: 0 (unusable) to 1: the source's weight (phase-matched beats are capped)
            times the offset's confidence times how well the ED lag agrees with the
            recording's typical lag; halved without an ES.
        reason: ``ok`` or why the quality is reduced (``no_ed``, ``no_es``, ``lag_outlier``,
            ``edge_of_clip``).
    """

    beat_index: int
    r_peak_s: float
    ed_s: float
    es_s: float
    ed_frame: int
    es_frame: int
    lag_ed_s: float
    lag_es_s: float
    quality: float
    reason: str


@dataclass(frozen=True)
class AlignmentResult:
    """The alignment of one (ECG, echo) pair.

    Attributes:
        clock_offset_s: estimated echo clock minus ECG clock (NaN when ``sync_source`` is none).
        sync_source: which synchrony the offset came from.
        clip_start_s: first frame of the clip on the ECG axis (NaN when unaligned).
        beats: one row per ECG beat inside the clip, in time order.
        residual_s: RMS misfit of the events that fixed the offset (R-wave times for
            ``dicom_r_wave``, ED lags about the prior for ``phase_match``, ED lags about
            their median for ``shared_clock``); NaN when nothing matched.
        n_matched: events that agreed with the chosen offset.
        confidence: 0-1, how clearly the chosen offset beat the runner-up whole-beat shift
            (1 for ``shared_clock``).
        ecg_hr_bpm: heart rate of the ECG around the clip.
        echo_cycle_bpm: rate of the echo's own ED/ES keyframes (NaN with fewer than two).
    """

    clock_offset_s: float
    sync_source: SyncSource
    clip_start_s: float
    beats: tuple[AlignedBeat, ...] = field(default_factory=tuple)
    residual_s: float = float("nan")
    n_matched: int = 0
    confidence: float = 0.0
    ecg_hr_bpm: float = float("nan")
    echo_cycle_bpm: float = float("nan")

    def rows(self) -> list[dict[str, Any]]:
        """Per-beat rows with the recording-level columns repeated, ready for a DataFrame."""
        shared = {
            "sync_source": self.sync_source,
            "clock_offset_s": self.clock_offset_s,
            "residual_s": self.residual_s,
            "confidence": self.confidence,
        }
        return [{**asdict(beat), **shared} for beat in self.beats]


@dataclass(frozen=True)
class _Match:
    """A candidate clip start with the events it explains."""

    start: float
    cost: float
    residuals: np.ndarray  # anchored events that hit an R peak
    n_hits: int  # anchored hits plus floating events with a consistent lag


def _rate_bpm(times: np.ndarray) -> float:
    intervals = np.diff(np.sort(times))
    intervals = intervals[intervals > 0]
    return float(60.0 / np.median(intervals)) if intervals.size else float("nan")


def _nearest(sorted_times: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of the nearest element of ``sorted_times`` for each value."""
    pos = np.clip(np.searchsorted(sorted_times, values), 1, max(sorted_times.size - 1, 1))
    left = sorted_times[pos - 1]
    right = sorted_times[np.minimum(pos, sorted_times.size - 1)]
    return np.where(np.abs(values - left) <= np.abs(right - values), pos - 1, pos)


def _score(
    anchored: np.ndarray,
    floating: tuple[tuple[np.ndarray, float], ...],
    peaks: np.ndarray,
    start: float,
    span: tuple[float, float],
    settings: AlignmentSettings,
) -> _Match:
    """Fit a clip start near ``start`` and cost it per event.

    ``anchored`` events should land on R peaks (R-wave times, or ED minus the emd prior);
    they alone set the start. Each ``floating`` group (ED or ES times with the least lag they
    can have after their R peak) should trail its R peaks by one common, unknown lag; the
    spread of the lags about their median is costed. Costs are squared misses truncated at
    ``match_tol_s**2``: an anchored event with no R peak and an R peak between anchored
    events with no event cost the full amount, an event beyond the ECG record half of it
    (it can be neither confirmed nor refuted).
    """
    tol = settings.match_tol_s
    unknown_cost = tol**2 / 2
    for _ in range(3):  # match, re-centre on the matches, repeat
        mapped = anchored + start
        known = (mapped >= span[0]) & (mapped <= span[1])
        idx = _nearest(peaks, mapped)
        residual = mapped - peaks[idx]
        hit = known & (np.abs(residual) <= tol)
        if not hit.any():
            return _Match(start, float("inf"), np.zeros(0), 0)
        start -= float(np.mean(residual[hit]))
    mapped = anchored + start
    known = (mapped >= span[0]) & (mapped <= span[1])
    idx = _nearest(peaks, mapped)
    residual = mapped - peaks[idx]
    hit = known & (np.abs(residual) <= tol)
    lo, hi = mapped[hit].min() - tol, mapped[hit].max() + tol
    orphans = np.count_nonzero((peaks >= lo) & (peaks <= hi)) - np.unique(idx[hit]).size
    cost = float(np.sum(np.minimum(residual[known] ** 2, tol**2)))
    cost += unknown_cost * np.count_nonzero(~known) + tol**2 * max(int(orphans), 0)
    n_hits, n_events = int(hit.sum()), anchored.size
    # Capped lower than anchored misses: one stray keyframe must not outvote the anchors.
    cap = (tol / 2) ** 2
    for events, min_lag in floating:
        if events.size < 2:
            continue
        n_events += events.size
        trail = events + start
        prev = np.searchsorted(peaks, trail - min_lag, side="right") - 1
        valid = (prev >= 0) & (trail >= span[0]) & (trail <= span[1])
        cost += unknown_cost * np.count_nonzero(~valid)
        if valid.sum() < 2:
            cost += cap * np.count_nonzero(valid)
            continue
        lags = trail[valid] - peaks[prev[valid]]
        spread = (lags - np.median(lags)) ** 2
        cost += float(np.sum(np.minimum(spread, cap)))
        n_hits += int(np.count_nonzero(spread <= cap))
    return _Match(start, cost / n_events, residual[hit], n_hits)


def _best_start(
    anchored: np.ndarray,
    floating: tuple[tuple[np.ndarray, float], ...],
    peaks: np.ndarray,
    nominal: float,
    settings: AlignmentSettings,
    span: tuple[float, float],
) -> tuple[_Match | None, float]:
    """Clip start whose events best fit ``peaks``, and the confidence of that choice.

    Every pairing of an anchored event with an R peak proposes a start; starts beyond
    ``max_clock_offset_s`` of the nominal one are not considered.
    """
    if anchored.size == 0 or peaks.size == 0:
        return None, 0.0
    proposals = (peaks[None, :] - anchored[:, None]).ravel()
    proposals = proposals[np.abs(nominal - proposals) <= settings.max_clock_offset_s]
    # Proposals closer than the tolerance lead to the same fit.
    proposals = np.unique(np.round(proposals / settings.match_tol_s)) * settings.match_tol_s
    matches = [_score(anchored, floating, peaks, p, span, settings) for p in proposals]
    matches = [
        m
        for m in matches
        if np.isfinite(m.cost)
        and m.n_hits >= settings.min_matches
        and abs(nominal - m.start) <= settings.max_clock_offset_s
    ]
    if not matches:
        return None, 0.0
    matches.sort(key=lambda m: m.cost)
    best = matches[0]
    rivals = [m for m in matches[1:] if abs(m.start - best.start) > settings.match_tol_s]
    if not rivals:
        return best, 1.0
    margin = max(rivals[0].cost - best.cost, 0.0)
    return best, float(1.0 - np.exp(-margin / settings.confidence_scale_s**2))


def _frame_of(times: np.ndarray, t: float) -> int:
    return int(np.argmin(np.abs(times - t))) if np.isfinite(t) and times.size else -1


def _assign(events: np.ndarray, peaks: np.ndarray, lag: float, max_dev: float) -> np.ndarray:
    """For each R peak, the event nearest to ``peak + lag`` among those closest to it (NaN)."""
    out = np.full(peaks.size, np.nan)
    if events.size == 0 or peaks.size == 0:
        return out
    owner = _nearest(peaks, events - lag)  # each event belongs to one beat at most
    dev = np.abs(events - lag - peaks[owner])
    for j in np.unique(owner):
        mine = (owner == j) & (dev <= max_dev)
        if mine.any():
            out[j] = events[mine][np.argmin(dev[mine])]
    return out


def _beats(
    peaks: np.ndarray,
    ed: np.ndarray,
    es: np.ndarray,
    frames: np.ndarray,
    start: float,
    weight: float,
    settings: AlignmentSettings,
) -> tuple[AlignedBeat, ...]:
    """One row per R peak in the clip, each with the ED and ES that belong to it."""
    dt = float(np.median(np.diff(frames))) if frames.size > 1 else 0.0
    first, end = start + frames[0], start + frames[-1] + dt
    # Keyframes this close to the clip ends cannot be detected, so their absence is no flaw.
    inner = (first + 2 * dt, end - 2 * dt)
    ed_ecg, es_ecg = ed + start, es + start
    # The recording's typical R->ED lag (robust to stray keyframes) centres the pairing.
    prior = _assign(ed_ecg, peaks, settings.emd_prior_s, settings.max_lag_s) - peaks
    typical = float(np.nanmedian(prior)) if np.isfinite(prior).any() else settings.emd_prior_s
    ed_of = _assign(ed_ecg, peaks, typical, settings.max_lag_s)
    scale = max(settings.lag_scale_s, dt)
    rows: list[dict[str, Any]] = []
    for j, r in enumerate(peaks):
        ed_t = float(ed_of[j])
        if not (first <= r < end or np.isfinite(ed_t)):
            continue  # beats of the ECG outside the clip are not rows
        r_next = peaks[j + 1] if j + 1 < peaks.size else np.inf
        after = ed_t if np.isfinite(ed_t) else r + settings.min_systole_s
        systole = (es_ecg > after) & (es_ecg >= r + settings.min_systole_s)
        systole &= es_ecg < r_next + typical - settings.max_lag_s / 2
        es_t = float(es_ecg[systole][0]) if systole.any() else np.nan
        quality, reason = weight, "ok"
        if not np.isfinite(ed_t):
            expected = r + typical
            edge = not inner[0] <= expected <= inner[1]
            quality, reason = 0.0, "edge_of_clip" if edge else "no_ed"
        else:
            deviation = (ed_t - r - typical) / scale
            quality *= float(np.exp(-0.5 * deviation**2))
            reason = "lag_outlier" if abs(deviation) > 2.0 else reason
        rows.append({"beat_index": j, "r_peak_s": float(r), "ed_s": ed_t, "es_s": es_t})
        rows[-1].update(quality=quality, reason=reason)
    es_lags = [row["es_s"] - row["r_peak_s"] for row in rows if np.isfinite(row["es_s"])]
    typical_es = float(np.median(es_lags)) if es_lags else np.inf
    beats = []
    for row in rows:
        if not np.isfinite(row["es_s"]) and np.isfinite(row["ed_s"]):
            row["quality"] *= 0.5
            if row["reason"] == "ok":
                late = row["r_peak_s"] + typical_es > inner[1]
                row["reason"] = "edge_of_clip" if late else "no_es"
        beats.append(
            AlignedBeat(
                beat_index=row["beat_index"],
                r_peak_s=row["r_peak_s"],
                ed_s=row["ed_s"],
                es_s=row["es_s"],
                ed_frame=_frame_of(frames, row["ed_s"] - start),
                es_frame=_frame_of(frames, row["es_s"] - start),
                lag_ed_s=row["ed_s"] - row["r_peak_s"],
                lag_es_s=row["es_s"] - row["r_peak_s"],
                quality=round(float(row["quality"]), 4),
                reason=row["reason"],
            )
        )
    return tuple(beats)


def align_recording(
    *,
    ecg_rpeaks_s: np.ndarray,
    ecg_start: datetime,
    echo_start: datetime,
    echo_ed_s: np.ndarray,
    echo_es_s: np.ndarray,
    echo_frame_times_s: np.ndarray,
    dicom_r_wave_s: np.ndarray | None,
    synchronized: bool,
    ecg_duration_s: float | None = None,
    settings: AlignmentSettings | None = None,
) -> AlignmentResult:
    """Align one echo clip with the concurrent ECG, beat by beat.

    Whole-beat shifts are told apart only by the RR-interval pattern: in a very regular
    rhythm (beat-to-beat variation near the detector jitter) a shift of one beat fits
    nearly as well, which ``confidence`` reports.

    Args:
        ecg_rpeaks_s: R peaks, seconds from ``ecg_start`` on the ECG clock.
        ecg_start: acquisition start of the ECG (ECG clock).
        echo_start: acquisition start of the echo clip (echo machine clock, DICOM header).
        echo_ed_s: end-diastole keyframes, seconds from the clip's first frame.
        echo_es_s: end-systole keyframes, likewise.
        echo_frame_times_s: time of each frame from the first frame.
        dicom_r_wave_s: the clip's R Wave Time Vector in seconds (clip-relative), or None.
        synchronized: both devices share an acquisition clock (offset zero).
        ecg_duration_s: length of the ECG record; defaults to one RR past the last R peak.
        settings: alignment knobs; defaults to :class:`AlignmentSettings`.

    Returns:
        The alignment; ``sync_source`` is ``none`` with no beats when nothing could be
        matched (no R peaks in the clip, no ED keyframe paired with one, or no consistent
        offset). Never raises on data.

    Example:
        >>> result = align_recording(ecg_rpeaks_s=r, ecg_start=t0, echo_start=t1,
        ...     echo_ed_s=kf.ed_s, echo_es_s=kf.es_s, echo_frame_times_s=times,
        ...     dicom_r_wave_s=None, synchronized=False)
        >>> result.clock_offset_s, [b.lag_ed_s for b in result.beats]
    """
    settings = settings or AlignmentSettings()
    peaks = np.sort(np.asarray(ecg_rpeaks_s, dtype=np.float64).ravel())
    peaks = peaks[np.isfinite(peaks)]
    ed = np.sort(np.asarray(echo_ed_s, dtype=np.float64).ravel())
    es = np.sort(np.asarray(echo_es_s, dtype=np.float64).ravel())
    ed, es = ed[np.isfinite(ed)], es[np.isfinite(es)]
    frames = np.asarray(echo_frame_times_s, dtype=np.float64).ravel()
    nominal = (echo_start - ecg_start).total_seconds()
    cycles = np.concatenate([np.diff(ed), np.diff(es)])
    cycles = cycles[cycles > 0]
    cycle_bpm = float(60.0 / np.median(cycles)) if cycles.size else float("nan")
    unaligned = AlignmentResult(
        clock_offset_s=float("nan"),
        sync_source="none",
        clip_start_s=float("nan"),
        ecg_hr_bpm=_rate_bpm(peaks),
        echo_cycle_bpm=cycle_bpm,
    )
    if peaks.size == 0 or frames.size == 0:
        return unaligned
    rr = float(np.median(np.diff(peaks))) if peaks.size > 1 else 1.0
    span = (0.0, float(ecg_duration_s) if ecg_duration_s is not None else peaks[-1] + rr)

    source: SyncSource
    weight, confidence = 1.0, 1.0
    r_wave = np.asarray(dicom_r_wave_s if dicom_r_wave_s is not None else [], dtype=np.float64)
    r_wave = np.sort(r_wave[np.isfinite(r_wave)])
    # Keyframes also tell whole-beat shifts apart: each trails its R peak by a steady lag,
    # and the beats they cover can reach past the R waves of the clip.
    floating = ((ed, -settings.max_lag_s / 2), (es, settings.min_systole_s))
    match = None
    if r_wave.size >= 2:
        match, confidence = _best_start(r_wave, floating, peaks, nominal, settings, span)
    if match is not None:
        source, start = "dicom_r_wave", match.start
        residual, n_matched = float(np.sqrt(np.mean(match.residuals**2))), match.n_hits
    elif synchronized:
        source, start, residual, n_matched = "shared_clock", nominal, float("nan"), 0
    else:
        match, confidence = _best_start(
            ed - settings.emd_prior_s, floating[1:], peaks, nominal, settings, span
        )
        if match is None:
            return unaligned
        source, start, weight = "phase_match", match.start, settings.phase_match_weight
        residual, n_matched = float(np.sqrt(np.mean(match.residuals**2))), match.n_hits

    beats = _beats(peaks, ed, es, frames, start, weight * confidence, settings)
    if source == "shared_clock":
        lags = np.array([b.lag_ed_s for b in beats if np.isfinite(b.lag_ed_s)])
        n_matched = int(lags.size)
        if lags.size:
            residual = float(np.sqrt(np.mean((lags - np.median(lags)) ** 2)))
    if not any(np.isfinite(b.ed_s) for b in beats):
        return unaligned  # a clock offset without a single paired keyframe aligns nothing
    dt = float(np.median(np.diff(frames))) if frames.size > 1 else 0.0
    around = peaks[(peaks >= start + frames[0] - rr) & (peaks <= start + frames[-1] + dt + rr)]
    return AlignmentResult(
        clock_offset_s=0.0 if source == "shared_clock" else float(nominal - start),
        sync_source=source,
        clip_start_s=float(start + frames[0]),
        beats=beats,
        residual_s=residual,
        n_matched=int(n_matched),
        confidence=round(float(confidence), 4),
        ecg_hr_bpm=_rate_bpm(around) if around.size > 1 else _rate_bpm(peaks),
        echo_cycle_bpm=cycle_bpm,
    )
