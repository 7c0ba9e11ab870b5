"""The bass stem of a demo song: a filtered sawtooth-like bass line on the chord roots."""

from __future__ import annotations

import dataclasses

import numpy as np

from mss_tf.data.demo.dsp import (
    Room,
    add_at,
    apply_room,
    envelope_adsr,
    harmonic_table,
    lowpass_response,
    midi_to_hz,
    n_harmonics,
    note_cache,
    pan,
    sawtooth_amplitudes,
    wavetable_oscillator,
)
from mss_tf.data.demo.plan import SongPlan

# Bass figures: (step, length in steps, scale degrees above the chord root; None = approach note).
BASS_PATTERNS: tuple[tuple[tuple[int, int, int | None], ...], ...] = (
    tuple((s, 2, 0) for s in range(0, 16, 2)),
    ((0, 3, 0), (3, 3, 7), (6, 2, 0), (8, 3, 0), (11, 3, 7), (14, 2, 4)),
    ((0, 6, 0), (6, 2, 0), (8, 4, 4), (12, 2, 0), (14, 2, 7)),
    ((0, 4, 0), (4, 4, 2), (8, 4, 4), (12, 4, None)),
    ((0, 2, 0), (3, 1, 0), (4, 2, 7), (7, 1, 0), (8, 2, 0), (10, 2, 4), (12, 2, 7), (14, 2, 0)),
    ((0, 8, 0), (8, 6, 4), (14, 2, 7)),
)


@dataclasses.dataclass(frozen=True)
class Note:
    start: float
    duration: float
    midi: float
    velocity: float = 1.0


def bass_line(rng: np.random.Generator, plan: SongPlan) -> list[Note]:
    """Bass notes following the chord roots with one of a few rhythmic figures."""
    pattern = BASS_PATTERNS[rng.integers(len(BASS_PATTERNS))]
    variation = BASS_PATTERNS[rng.integers(len(BASS_PATTERNS))]
    gate = float(rng.uniform(0.6, 0.95))
    low = int(rng.integers(33, 40))  # lowest root: A1..D#2
    tonic_midi = low + (plan.tonic - low) % 12
    notes = []
    for bar in range(plan.n_bars):
        figure = variation if bar % 4 == 3 else pattern
        for step, length, offset in figure:
            start = plan.step_time(bar, step)
            if start >= plan.seconds:
                continue
            chord = plan.chord_at(start + 1e-6)
            if offset is None:  # a scale step below or above the next chord's root
                following = plan.chord_at(plan.step_time(bar, step + length) + 1e-6)
                degree = following.degree + int(rng.choice([-1, 1]))
            else:
                degree = chord.degree + offset
            midi = plan.degree_to_midi(degree, tonic_midi)
            while midi > tonic_midi + 19:
                midi -= 12
            notes.append(Note(start, length * plan.step_s * gate, float(midi), float(rng.uniform(0.8, 1.0))))
    return notes


def synth_bass_note(
    midi: float, duration: float, sample_rate: int, slope: float, odd_only: bool, cutoff_hz: float,
    peak_cutoff_hz: float, filter_decay_s: float, release_s: float = 0.04,
) -> np.ndarray:
    """One bass note: a sawtooth-like tone whose low-pass closes from peak_cutoff_hz to cutoff_hz."""
    f0 = float(midi_to_hz(midi))
    n = int((duration + 5 * release_s) * sample_rate)
    t = np.arange(n) / sample_rate
    k = np.arange(1, n_harmonics(f0, sample_rate, 120) + 1)
    amps = sawtooth_amplitudes(len(k), slope, odd_only)
    bright = harmonic_table(amps * lowpass_response(k * f0, peak_cutoff_hz, 2))
    dark = harmonic_table(amps * lowpass_response(k * f0, cutoff_hz, 2))
    phase = f0 * t
    mix = np.exp(-t / filter_decay_s)
    tone = mix * wavetable_oscillator(bright, phase) + (1.0 - mix) * wavetable_oscillator(dark, phase)
    env = envelope_adsr(n, sample_rate, duration, 0.004, 0.3, 0.7, release_s)
    return tone * env


def render_bass(rng: np.random.Generator, plan: SongPlan, room: Room) -> np.ndarray:
    """The bass stem (n, 2): a filtered sawtooth-ish bass, near mono in the centre."""
    sr = plan.sample_rate
    timbre = dict(
        slope=float(rng.uniform(0.6, 1.0)), odd_only=bool(rng.random() < 0.3), cutoff_hz=float(rng.uniform(600, 1400)),
        peak_cutoff_hz=float(rng.uniform(1500, 4000)), filter_decay_s=float(rng.uniform(0.05, 0.25)),
    )
    drive = float(rng.uniform(1.0, 2.5))
    mono = np.zeros(plan.n_samples)
    cache: dict[tuple, np.ndarray] = {}
    for note in bass_line(rng, plan):
        duration = round(note.duration * sr) / sr
        x = note_cache(cache, (note.midi, duration), lambda: synth_bass_note(note.midi, duration, sr, **timbre))
        add_at(mono, int(round(note.start * sr)), x * note.velocity)
    mono = np.tanh(drive * mono / (np.max(np.abs(mono)) + 1e-9)) / np.tanh(drive)
    return apply_room(pan(mono, float(rng.uniform(-0.05, 0.05))), room, wet=0.03)
