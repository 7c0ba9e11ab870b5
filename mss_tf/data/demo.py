"""Procedural multitrack songs (drums, bass, other, vocals) written in MUSDB18-HQ layout."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.fft
from scipy import signal

from mss_tf import TARGETS
from mss_tf.audio import io as audio_io
from mss_tf.errors import ConfigError, DataError

# Bump whenever the synthesis changes, so cached demo sets are rebuilt.
GENERATOR_VERSION = 1
MARKER = ".complete"
SOURCES = ("mixture",) + TARGETS
SUBSETS = ("train", "test")
# "balanced": every stem plays throughout at +-6 dB around a common level. "sparse": stems
# 0-20 dB apart (one or two of them 14 dB down), and each stem silent for a stretch of 25-50 %
# of the song with probability 0.5 (an intro without vocals, a break without bass), which is how
# real mixes differ from the balanced set and what makes quiet, intermittent targets hard.
STYLES = ("balanced", "sparse")

NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
SCALES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
}
# Chord progressions as 0-based scale degrees (I V vi IV, I vi IV V, ...), diatonic to any mode.
PROGRESSIONS: tuple[tuple[int, ...], ...] = (
    (0, 4, 5, 3),
    (0, 5, 3, 4),
    (5, 3, 0, 4),
    (0, 3, 4, 3),
    (1, 4, 0, 5),
    (0, 6, 5, 4),
    (0, 2, 3, 4),
    (0, 3, 0, 4),
)
# Vowel formants (F1..F3, Hz) and bandwidths of an adult low voice; higher voices scale them up.
VOWEL_FORMANTS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "a": ((730.0, 1090.0, 2440.0), (90.0, 110.0, 160.0)),
    "e": ((530.0, 1840.0, 2480.0), (70.0, 100.0, 160.0)),
    "i": ((270.0, 2290.0, 3010.0), (60.0, 100.0, 170.0)),
    "o": ((570.0, 840.0, 2410.0), (80.0, 90.0, 160.0)),
    "u": ((300.0, 870.0, 2240.0), (70.0, 90.0, 150.0)),
}
VOWELS = tuple(VOWEL_FORMANTS)
# F4 and F5 barely move between vowels; F4 near 3 kHz gives the "singer's formant" ring.
UPPER_FORMANTS = ((3100.0, 3900.0), (250.0, 320.0))
CONSONANTS = ("s", "sh", "t", "k", "f", "h")

# 16-step (one bar of 16ths) patterns.
KICK_PATTERNS = ((0, 8), (0, 8, 10), (0, 6, 8), (0, 7, 8, 14), (0, 3, 8, 11), (0, 10), (0, 4, 8, 12), (0, 6, 10))
HAT_PATTERNS = (tuple(range(0, 16, 2)), tuple(range(16)), (2, 6, 10, 14), (0, 2, 3, 4, 6, 8, 10, 11, 12, 14))
# Bass figures: (step, length in steps, scale degrees above the chord root; None = approach note).
BASS_PATTERNS: tuple[tuple[tuple[int, int, int | None], ...], ...] = (
    tuple((s, 2, 0) for s in range(0, 16, 2)),
    ((0, 3, 0), (3, 3, 7), (6, 2, 0), (8, 3, 0), (11, 3, 7), (14, 2, 4)),
    ((0, 6, 0), (6, 2, 0), (8, 4, 4), (12, 2, 0), (14, 2, 7)),
    ((0, 4, 0), (4, 4, 2), (8, 4, 4), (12, 4, None)),
    ((0, 2, 0), (3, 1, 0), (4, 2, 7), (7, 1, 0), (8, 2, 0), (10, 2, 4), (12, 2, 7), (14, 2, 0)),
    ((0, 8, 0), (8, 6, 4), (14, 2, 7)),
)
# Comping rhythms for chord instruments: (step, length in steps).
COMP_PATTERNS: tuple[tuple[tuple[int, int], ...], ...] = (
    ((0, 16),),
    ((0, 8), (8, 8)),
    ((2, 2), (6, 2), (10, 2), (14, 2)),
    ((0, 3), (6, 4), (12, 4)),
    ((0, 2), (3, 3), (6, 2), (8, 2), (11, 3), (14, 2)),
    ((0, 6), (6, 6), (12, 4)),
)


# ----------------------------------------------------------------------------- signal helpers


def midi_to_hz(midi: np.ndarray | float) -> np.ndarray | float:
    """Frequency in Hz of a (fractional) MIDI note number."""
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


@functools.lru_cache(maxsize=256)
def _butter(kind: str, cutoff: float | tuple[float, float], sample_rate: int, order: int = 2) -> np.ndarray:
    nyquist = 0.5 * sample_rate
    if isinstance(cutoff, tuple):
        low, high = min(cutoff[0], 0.8 * nyquist), min(cutoff[1], 0.95 * nyquist)
        if high <= low * 1.05:
            return _butter("highpass", low, sample_rate, order)
        return signal.butter(order, (low, high), btype="bandpass", fs=sample_rate, output="sos")
    return signal.butter(order, min(cutoff, 0.95 * nyquist), btype=kind, fs=sample_rate, output="sos")


def highpass(x: np.ndarray, cutoff_hz: float, sample_rate: int, order: int = 2) -> np.ndarray:
    """Butterworth high-pass along the first axis."""
    return signal.sosfilt(_butter("highpass", float(cutoff_hz), sample_rate, order), x, axis=0)


def lowpass(x: np.ndarray, cutoff_hz: float, sample_rate: int, order: int = 2) -> np.ndarray:
    """Butterworth low-pass along the first axis."""
    return signal.sosfilt(_butter("lowpass", float(cutoff_hz), sample_rate, order), x, axis=0)


def bandpass(x: np.ndarray, low_hz: float, high_hz: float, sample_rate: int, order: int = 2) -> np.ndarray:
    """Butterworth band-pass along the first axis."""
    return signal.sosfilt(_butter("bandpass", (float(low_hz), float(high_hz)), sample_rate, order), x, axis=0)


def one_pole_smooth(x: np.ndarray, time_constant_s: float, rate: float) -> np.ndarray:
    """Exponential smoothing (RC low-pass) along the first axis, starting from x[0]."""
    a = math.exp(-1.0 / max(time_constant_s * rate, 1e-9))
    zi = a * np.asarray(x[:1], dtype=np.float64)
    y, _ = signal.lfilter([1.0 - a], [1.0, -a], x, axis=0, zi=zi)
    return y


def harmonic_table(amplitudes: np.ndarray, size: int = 4096, phases: np.ndarray | None = None) -> np.ndarray:
    """One period of sum_k a_k sin(2 pi k x + phi_k), k = 1..len(amplitudes), as a wavetable."""
    spectrum = np.zeros(size // 2 + 1, dtype=np.complex128)
    amplitudes = np.asarray(amplitudes, dtype=np.float64)[: size // 2 - 1]
    rotation = np.exp(1j * phases[: len(amplitudes)]) if phases is not None else 1.0
    spectrum[1 : len(amplitudes) + 1] = -0.5j * size * amplitudes * rotation
    return np.fft.irfft(spectrum, size)


def wavetable_oscillator(table: np.ndarray, phase_cycles: np.ndarray) -> np.ndarray:
    """Read a single-period wavetable at phases given in cycles (linear interpolation)."""
    size = table.shape[0]
    position = np.mod(phase_cycles, 1.0) * size
    index = position.astype(np.int64)
    frac = position - index
    extended = np.append(table, table[0])
    return extended[index] + frac * (extended[index + 1] - extended[index])


def n_harmonics(max_hz: float, sample_rate: int, limit: int = 200) -> int:
    """How many harmonics of max_hz stay below 0.45 * sample_rate (band-limited synthesis)."""
    return int(max(1, min(limit, 0.45 * sample_rate // max(max_hz, 1.0))))


def sawtooth_amplitudes(count: int, slope: float = 1.0, odd_only: bool = False) -> np.ndarray:
    """Harmonic amplitudes 1/k**slope of a sawtooth-like (or square-like, odd_only) wave."""
    k = np.arange(1, count + 1, dtype=np.float64)
    amplitudes = k**-slope
    if odd_only:
        amplitudes[1::2] *= 0.08
    return amplitudes


def lowpass_response(freqs_hz: np.ndarray, cutoff_hz: float, order: int = 2) -> np.ndarray:
    """Magnitude of a Butterworth-like low-pass at the given frequencies."""
    return 1.0 / np.sqrt(1.0 + (np.asarray(freqs_hz) / cutoff_hz) ** (2 * order))


def envelope_adsr(
    n: int, sample_rate: int, hold_s: float, attack_s: float, decay_s: float, sustain: float, release_s: float
) -> np.ndarray:
    """Attack-decay-sustain envelope held for hold_s seconds, then an exponential release."""
    t = np.arange(n) / sample_rate
    env = np.minimum(t / max(attack_s, 1e-4), 1.0)
    env *= sustain + (1.0 - sustain) * np.exp(-np.maximum(t - attack_s, 0.0) / max(decay_s, 1e-4))
    after = t > hold_s
    env[after] *= np.exp(-(t[after] - hold_s) / max(release_s, 1e-4))
    return env


def pan_gains(position: float) -> tuple[float, float]:
    """Constant-power pan gains (left, right) for a position in [-1, 1]."""
    angle = (float(np.clip(position, -1.0, 1.0)) + 1.0) * math.pi / 4.0
    return math.cos(angle), math.sin(angle)


def pan(x: np.ndarray, position: float) -> np.ndarray:
    """Mono (n,) to stereo (n, 2) with constant-power panning."""
    left, right = pan_gains(position)
    return np.stack([x * left, x * right], axis=1)


def add_at(buffer: np.ndarray, start: int, x: np.ndarray) -> None:
    """Add x into buffer from sample `start`, clipping at both ends of the buffer."""
    if start >= buffer.shape[0] or start + x.shape[0] <= 0:
        return
    lo = max(0, -start)
    hi = min(x.shape[0], buffer.shape[0] - start)
    buffer[start + lo : start + hi] += x[lo:hi]


@dataclasses.dataclass(frozen=True)
class Room:
    """A stereo reverb impulse response with its spectrum, precomputed for one signal length."""

    spectrum: np.ndarray  # (n_fft // 2 + 1, 2)
    n_fft: int

    @classmethod
    def for_length(cls, ir: np.ndarray, n_samples: int) -> "Room":
        n_fft = scipy.fft.next_fast_len(n_samples + ir.shape[0], real=True)
        return cls(scipy.fft.rfft(ir, n_fft, axis=0), n_fft)


def room_impulse_response(rng: np.random.Generator, sample_rate: int, rt60_s: float) -> np.ndarray:
    """Stereo (n, 2) room reverb tail: decorrelated decaying noise, darker as it decays."""
    n = int(min(rt60_s, 1.2) * sample_rate)
    t = np.arange(n) / sample_rate
    noise = rng.standard_normal((n, 2))
    bright = noise * 10.0 ** (-3.0 * t / (0.5 * rt60_s))[:, None]
    dark = lowpass(noise, 2500.0, sample_rate) * 10.0 ** (-3.0 * t / rt60_s)[:, None]
    ir = bright + 1.5 * dark
    predelay = int(0.012 * sample_rate)
    ir[:predelay] = 0.0
    ir[predelay : predelay + int(0.005 * sample_rate)] *= np.linspace(0, 1, int(0.005 * sample_rate))[:, None]
    return ir / np.sqrt(np.sum(ir**2, axis=0, keepdims=True))


def apply_room(x: np.ndarray, room: Room, wet: float) -> np.ndarray:
    """Add a reverb send of the stereo signal x (n, 2) through the room's stereo impulse response."""
    send = scipy.fft.rfft(x.mean(axis=1), room.n_fft)[:, None]
    tail = scipy.fft.irfft(send * room.spectrum, room.n_fft, axis=0)[: x.shape[0]]
    return x + wet * tail


# ----------------------------------------------------------------------------- song plan


@dataclasses.dataclass(frozen=True)
class Chord:
    start: float
    end: float
    degree: int  # scale degree of the root, 0-based
    seventh: bool


@dataclasses.dataclass(frozen=True)
class SongPlan:
    """Tempo, key and harmony shared by every part of one song."""

    sample_rate: int
    n_samples: int
    tempo: float
    swing: float
    tonic: int  # pitch class 0..11
    scale_name: str
    progression: tuple[int, ...]
    chords: tuple[Chord, ...]
    n_bars: int

    @property
    def scale(self) -> tuple[int, ...]:
        return SCALES[self.scale_name]

    @property
    def bar_s(self) -> float:
        return 240.0 / self.tempo

    @property
    def step_s(self) -> float:
        return self.bar_s / 16.0

    @property
    def seconds(self) -> float:
        return self.n_samples / self.sample_rate

    def step_time(self, bar: int, step: float) -> float:
        """Onset time of a 16th step in a bar, with swing on the off-16ths."""
        swing = self.swing * self.step_s if int(step) % 2 == 1 else 0.0
        return bar * self.bar_s + step * self.step_s + swing

    def degree_to_midi(self, degree: int, tonic_midi: int) -> int:
        octave, index = divmod(degree, 7)
        return tonic_midi + 12 * octave + self.scale[index]

    def pitch_class(self, degree: int) -> int:
        return (self.tonic + self.scale[degree % 7]) % 12

    def chord_at(self, time_s: float) -> Chord:
        for chord in self.chords:
            if chord.start <= time_s < chord.end:
                return chord
        return self.chords[-1]

    def chord_degrees(self, chord: Chord) -> tuple[int, ...]:
        offsets = (0, 2, 4, 6) if chord.seventh else (0, 2, 4)
        return tuple(chord.degree + o for o in offsets)


def plan_song(rng: np.random.Generator, seconds: float, sample_rate: int) -> SongPlan:
    """Draw tempo, key, scale and a chord progression covering the song."""
    tempo = float(rng.uniform(80.0, 140.0))
    bar_s = 240.0 / tempo
    n_bars = int(math.ceil(seconds / bar_s)) + 1
    progression = PROGRESSIONS[rng.integers(len(PROGRESSIONS))]
    # Chords last half a bar, one bar or two bars; slow songs change chords more often.
    chord_bars = float(rng.choice([0.5, 1.0, 1.0, 2.0] if tempo < 100 else [1.0, 1.0, 2.0]))
    sevenths = rng.random() < 0.35
    chords = []
    start, index = 0.0, 0
    while start < n_bars * bar_s:
        end = start + chord_bars * bar_s
        chords.append(Chord(start, end, progression[index % len(progression)], bool(sevenths and rng.random() < 0.7)))
        start, index = end, index + 1
    return SongPlan(
        sample_rate=sample_rate,
        n_samples=int(round(seconds * sample_rate)),
        tempo=tempo,
        swing=float(rng.choice([0.0, 0.0, rng.uniform(0.08, 0.25)])),
        tonic=int(rng.integers(12)),
        scale_name=str(rng.choice(list(SCALES))),
        progression=tuple(int(d) for d in progression),
        chords=tuple(chords),
        n_bars=n_bars,
    )


# ----------------------------------------------------------------------------- drums


def synth_kick(
    rng: np.random.Generator,
    sample_rate: int,
    start_hz: float = 180.0,
    end_hz: float = 50.0,
    pitch_decay_s: float = 0.03,
    decay_s: float = 0.25,
    click: float = 0.3,
    drive: float = 1.5,
) -> np.ndarray:
    """Kick drum: a sine swept down in pitch, plus a short noise click, softly saturated."""
    n = int(0.6 * sample_rate)
    t = np.arange(n) / sample_rate
    freq = end_hz + (start_hz - end_hz) * np.exp(-t / pitch_decay_s)
    body = np.sin(2.0 * np.pi * np.cumsum(freq) / sample_rate) * np.exp(-t / decay_s)
    click_sig = highpass(rng.standard_normal(n), 1500.0, sample_rate) * np.exp(-t / 0.004)
    x = body + click * click_sig
    return np.tanh(drive * x) / np.tanh(drive)


def synth_snare(
    rng: np.random.Generator,
    sample_rate: int,
    tone_hz: float = 190.0,
    tone_decay_s: float = 0.06,
    noise_decay_s: float = 0.15,
    snappy: float = 0.7,
    noise_band: tuple[float, float] = (1200.0, 9000.0),
) -> np.ndarray:
    """Snare drum: two damped drum-head modes plus a band-passed noise burst (the snares)."""
    n = int(0.5 * sample_rate)
    t = np.arange(n) / sample_rate
    tone = np.sin(2 * np.pi * tone_hz * t) + 0.6 * np.sin(2 * np.pi * 1.58 * tone_hz * t) * np.exp(-t / 0.03)
    tone *= np.exp(-t / tone_decay_s)
    noise = bandpass(rng.standard_normal(n), noise_band[0], noise_band[1], sample_rate)
    noise *= np.exp(-t / noise_decay_s) * 2.5
    x = (1.0 - snappy) * tone + snappy * noise
    x *= np.minimum(t / 0.0008, 1.0)
    return bandpass(x, 120.0, 12000.0, sample_rate)


def synth_hihat(
    rng: np.random.Generator,
    sample_rate: int,
    decay_s: float = 0.04,
    cutoff_hz: float = 7000.0,
    metallic: float = 0.4,
) -> np.ndarray:
    """Hi-hat: high-passed noise plus inharmonic square waves (metal), short decay."""
    n = int(min(max(6.0 * decay_s, 0.06), 1.5) * sample_rate)
    t = np.arange(n) / sample_rate
    base = rng.uniform(0.9, 1.1) * 40.0
    ratios = (5.13, 7.61, 9.24, 13.07, 13.5, 20.0)  # inharmonic, as the six oscillators of a TR-808 hat
    metal = sum(np.sign(np.sin(2 * np.pi * base * r * t + rng.uniform(0, 2 * np.pi))) for r in ratios)
    metal = bandpass(metal, cutoff_hz, 0.45 * sample_rate, sample_rate) / 3.0
    noise = highpass(rng.standard_normal(n), cutoff_hz, sample_rate)
    x = (metallic * metal + (1.0 - metallic) * noise) * np.exp(-t / decay_s)
    return x * np.minimum(t / 0.0005, 1.0)


def synth_tom(
    rng: np.random.Generator, sample_rate: int, pitch_hz: float = 120.0, decay_s: float = 0.25
) -> np.ndarray:
    """Tom: a kick-like pitch sweep, higher and longer, with a little stick noise."""
    n = int(0.7 * sample_rate)
    t = np.arange(n) / sample_rate
    freq = pitch_hz * (1.0 + 0.5 * np.exp(-t / 0.05))
    x = np.sin(2 * np.pi * np.cumsum(freq) / sample_rate) * np.exp(-t / decay_s)
    x += 0.25 * bandpass(rng.standard_normal(n), 800.0, 6000.0, sample_rate) * np.exp(-t / 0.02)
    return x


def synth_crash(rng: np.random.Generator, sample_rate: int, decay_s: float = 1.2) -> np.ndarray:
    """Crash cymbal: bright noise and metal with a long decay."""
    x = synth_hihat(rng, sample_rate, decay_s=decay_s, cutoff_hz=3500.0, metallic=0.5)
    return x * 0.8


@dataclasses.dataclass(frozen=True)
class DrumHit:
    time: float
    instrument: str
    velocity: float


def drum_pattern(rng: np.random.Generator, plan: SongPlan) -> list[DrumHit]:
    """A groove (kick, snare backbeat, hats) with per-bar variations, ghost notes and fills."""
    kick = KICK_PATTERNS[rng.integers(len(KICK_PATTERNS))]
    alt_kick = KICK_PATTERNS[rng.integers(len(KICK_PATTERNS))]
    half_time = rng.random() < 0.2
    snare = (8,) if half_time else (4, 12)
    hats = HAT_PATTERNS[rng.integers(len(HAT_PATTERNS))]
    if plan.tempo > 125 and len(hats) == 16:
        hats = HAT_PATTERNS[0]
    open_hat_step = int(rng.choice([14, 6, 10])) if rng.random() < 0.5 else None
    ride_bars = rng.random() < 0.25  # some songs switch the hat for a ride-like open hat pattern
    ghost_p = float(rng.uniform(0.0, 0.15))
    fill_every = int(rng.choice([2, 4, 4]))
    jitter = 0.004

    hits: list[DrumHit] = []

    def hit(bar: int, step: float, instrument: str, velocity: float) -> None:
        time = plan.step_time(bar, step) + float(rng.normal(0.0, jitter))
        hits.append(DrumHit(max(time, 0.0), instrument, float(np.clip(velocity * rng.uniform(0.9, 1.1), 0.05, 1.2))))

    for bar in range(plan.n_bars):
        fill = bar % fill_every == fill_every - 1 and rng.random() < 0.75
        fill_from = int(rng.choice([8, 12, 12, 14])) if fill else 16
        if bar % 4 == 0:
            hit(bar, 0, "crash", 0.9)
        bar_kick = alt_kick if bar % 4 == 3 and rng.random() < 0.5 else kick
        for step in bar_kick:
            if step < fill_from:
                hit(bar, step, "kick", 1.0 if step % 4 == 0 else 0.85)
        for step in snare:
            if step < fill_from:
                hit(bar, step, "snare", 1.0)
        for step in range(fill_from):
            if step not in snare and step % 2 == 1 and rng.random() < ghost_p:
                hit(bar, step, "snare", rng.uniform(0.15, 0.3))
        hat_name = "open_hat" if ride_bars and bar % 2 == 1 else "hat"
        for step in hats:
            if step >= fill_from:
                continue
            if open_hat_step is not None and step == open_hat_step:
                hit(bar, step, "open_hat", 0.7)
            else:
                accent = 1.0 if step % 4 == 0 else (0.75 if step % 2 == 0 else 0.55)
                hit(bar, step, hat_name, accent * (0.6 if hat_name == "open_hat" else 1.0))
        if fill:
            toms = ("tom_high", "tom_mid", "tom_low")
            for i, step in enumerate(range(fill_from, 16)):
                if rng.random() < 0.85:
                    name = "snare" if rng.random() < 0.4 else toms[min(i * 3 // max(16 - fill_from, 1), 2)]
                    hit(bar, step, name, rng.uniform(0.7, 1.0))
            hit(bar, fill_from, "kick", 0.9)
    return [h for h in hits if h.time < plan.seconds]


def render_drums(rng: np.random.Generator, plan: SongPlan, room: Room) -> np.ndarray:
    """The drums stem (n, 2): one-shot samples (a few variants each) on the track's groove."""
    sr = plan.sample_rate
    kick_args = dict(
        start_hz=rng.uniform(120, 260), end_hz=rng.uniform(42, 62), pitch_decay_s=rng.uniform(0.015, 0.05),
        decay_s=rng.uniform(0.12, 0.3), click=rng.uniform(0.1, 0.5), drive=rng.uniform(1.0, 3.0),
    )
    snare_args = dict(
        tone_hz=rng.uniform(160, 260), tone_decay_s=rng.uniform(0.04, 0.1), noise_decay_s=rng.uniform(0.08, 0.25),
        snappy=rng.uniform(0.4, 0.7), noise_band=(rng.uniform(400, 1200), rng.uniform(6000, 12000)),
    )
    hat_args = dict(decay_s=rng.uniform(0.02, 0.06), cutoff_hz=rng.uniform(5000, 9000), metallic=rng.uniform(0.2, 0.7))
    tom_base = rng.uniform(80, 130)
    samples = {
        "kick": [synth_kick(rng, sr, **kick_args) for _ in range(2)],
        "snare": [synth_snare(rng, sr, **snare_args) for _ in range(3)],
        "hat": [synth_hihat(rng, sr, **hat_args) for _ in range(4)],
        "open_hat": [synth_hihat(rng, sr, decay_s=rng.uniform(0.15, 0.35), cutoff_hz=hat_args["cutoff_hz"],
                                 metallic=hat_args["metallic"]) for _ in range(2)],
        "tom_low": [synth_tom(rng, sr, tom_base, 0.3)],
        "tom_mid": [synth_tom(rng, sr, tom_base * 1.33, 0.25)],
        "tom_high": [synth_tom(rng, sr, tom_base * 1.78, 0.2)],
        "crash": [synth_crash(rng, sr, rng.uniform(0.8, 1.6))],
    }
    levels = {"kick": 1.0, "snare": rng.uniform(1.0, 1.5), "hat": rng.uniform(0.25, 0.45),
              "open_hat": rng.uniform(0.15, 0.3), "tom_low": 0.7, "tom_mid": 0.65, "tom_high": 0.6,
              "crash": rng.uniform(0.2, 0.35)}
    hat_side = float(rng.choice([-1.0, 1.0]))
    pans = {"kick": 0.0, "snare": rng.uniform(-0.1, 0.1), "hat": hat_side * rng.uniform(0.2, 0.5),
            "open_hat": hat_side * rng.uniform(0.2, 0.5), "tom_low": -hat_side * 0.5, "tom_mid": 0.0,
            "tom_high": hat_side * 0.4, "crash": -hat_side * rng.uniform(0.2, 0.5)}
    gains = {name: np.array(pan_gains(p)) for name, p in pans.items()}

    out = np.zeros((plan.n_samples, 2))
    for h in drum_pattern(rng, plan):
        variants = samples[h.instrument]
        x = variants[rng.integers(len(variants))] * (h.velocity * levels[h.instrument])
        add_at(out, int(round(h.time * sr)), x[:, None] * gains[h.instrument])
    return apply_room(out, room, wet=float(rng.uniform(0.08, 0.25)))


# ----------------------------------------------------------------------------- bass


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


# ----------------------------------------------------------------------------- other (chords, arpeggios)


def chord_voicing(plan: SongPlan, chord: Chord, lowest: int) -> list[int]:
    """Chord tones as MIDI notes in the octave above `lowest` (close voicing, smooth voice leading)."""
    return sorted(lowest + (plan.pitch_class(d) - lowest) % 12 for d in plan.chord_degrees(chord))


def synth_pad_note(
    rng: np.random.Generator, midi: float, duration: float, sample_rate: int, cutoff_hz: float, detune_cents: float,
    attack_s: float,
) -> np.ndarray:
    """Pad: two detuned band-limited saws (one per side) with a slow attack; returns (n, 2)."""
    release = 0.35
    n = int((duration + 4 * release) * sample_rate)
    t = np.arange(n) / sample_rate
    out = np.empty((n, 2))
    for channel, cents in enumerate((-detune_cents, detune_cents)):
        f = float(midi_to_hz(midi + cents / 100.0))
        k = np.arange(1, n_harmonics(f, sample_rate, 60) + 1)
        table = harmonic_table(sawtooth_amplitudes(len(k)) * lowpass_response(k * f, cutoff_hz, 2))
        out[:, channel] = wavetable_oscillator(table, f * t + rng.random())
    env = envelope_adsr(n, sample_rate, duration, attack_s, 0.5, 0.8, release)
    return out * env[:, None]


def synth_organ_note(midi: float, duration: float, sample_rate: int, drawbars: np.ndarray) -> np.ndarray:
    """Organ: drawbar harmonics (1, 2, 3, 4, 6, 8) with a fast attack and full sustain."""
    release = 0.03
    n = int((duration + 5 * release) * sample_rate)
    t = np.arange(n) / sample_rate
    f = float(midi_to_hz(midi))
    amps = np.zeros(8)
    amps[[0, 1, 2, 3, 5, 7]] = drawbars
    count = n_harmonics(f, sample_rate, 8)
    tone = wavetable_oscillator(harmonic_table(amps[:count]), f * t)
    return tone * envelope_adsr(n, sample_rate, duration, 0.005, 0.1, 1.0, release)


def rotary_speaker(x: np.ndarray, sample_rate: int, rotor_hz: float, depth: float = 0.25) -> np.ndarray:
    """Rotary-speaker tremolo: opposite amplitude modulation on the two sides of a stereo signal."""
    rotor = np.sin(2 * np.pi * rotor_hz * np.arange(x.shape[0]) / sample_rate)
    return x * np.stack([1 + depth * rotor, 1 - depth * rotor], axis=1)


def note_cache(cache: dict, key: tuple, make: Callable[[], np.ndarray]) -> np.ndarray:
    """Render a note once per (pitch, length, ...) key; callers scale copies, never edit in place."""
    if key not in cache:
        cache[key] = make()
    return cache[key]


def synth_epiano_note(midi: float, duration: float, sample_rate: int, index: float, decay_s: float) -> np.ndarray:
    """Electric piano: two-operator FM with a decaying modulation index (bright attack, mellow tail)."""
    release = 0.12
    n = int((duration + 5 * release) * sample_rate)
    t = np.arange(n) / sample_rate
    f = float(midi_to_hz(midi))
    carrier = 2 * np.pi * f * t
    modulator = np.sin(carrier) * (index * np.exp(-t / 0.3) + 0.6)
    tone = np.sin(carrier + modulator)
    tone += 0.15 * np.sin(2 * np.pi * min(14.0 * f, 0.45 * sample_rate) * t) * np.exp(-t / 0.05)  # tine
    env = envelope_adsr(n, sample_rate, duration, 0.002, decay_s, 0.0, release)
    return tone * env


def synth_pluck_note(
    midi: float, duration: float, sample_rate: int, brightness_hz: float, decay_s: float, slope: float
) -> np.ndarray:
    """Pluck: a bright harmonic tone whose upper partials die first (string-like), quick decay."""
    release = 0.08
    n = int((duration + 5 * release) * sample_rate)
    t = np.arange(n) / sample_rate
    f = float(midi_to_hz(midi))
    k = np.arange(1, n_harmonics(f, sample_rate, 40) + 1)
    amps = sawtooth_amplitudes(len(k), slope)
    bright = harmonic_table(amps * lowpass_response(k * f, brightness_hz, 2))
    dark = harmonic_table(amps * lowpass_response(k * f, 1.5 * f, 2))
    mix = np.exp(-t / (0.4 * decay_s))
    tone = mix * wavetable_oscillator(bright, f * t) + (1 - mix) * wavetable_oscillator(dark, f * t)
    env = envelope_adsr(n, sample_rate, duration, 0.002, decay_s, 0.15, release)
    return tone * env


def render_other(rng: np.random.Generator, plan: SongPlan, room: Room) -> tuple[np.ndarray, dict]:
    """The other stem (n, 2): a comping chord instrument, plus an arpeggio on most songs."""
    sr = plan.sample_rate
    out = np.zeros((plan.n_samples, 2))
    comp_kind = str(rng.choice(["pad", "organ", "epiano", "guitar"]))
    lowest = int(rng.integers(52, 58))  # chord voicings sit in the vocal register (E3..A4)
    comp_pattern = COMP_PATTERNS[0] if comp_kind == "pad" else COMP_PATTERNS[rng.integers(len(COMP_PATTERNS))]
    if comp_kind == "guitar":
        comp_pan = float(rng.choice([-1, 1]) * rng.uniform(0.3, 0.7))
    else:
        comp_pan = float(rng.uniform(-0.3, 0.3))
    if comp_kind == "pad":
        pad_args = dict(cutoff_hz=float(rng.uniform(1500, 5000)), detune_cents=float(rng.uniform(4, 14)),
                        attack_s=float(rng.uniform(0.05, 0.3)))
    elif comp_kind == "organ":
        drawbars = rng.uniform(0.2, 1.0, 6) * np.array([1.0, 1.0, 0.8, 0.8, 0.6, 0.5])
        drawbars[0] = 1.0
        rotor_hz = float(rng.uniform(0.8, 6.5))
    elif comp_kind == "epiano":
        fm_index = float(rng.uniform(1.5, 4.0))
        ep_decay = float(rng.uniform(0.6, 1.6))
    else:
        strum = dict(brightness_hz=float(rng.uniform(2500, 7000)), decay_s=float(rng.uniform(0.4, 1.0)),
                     slope=float(rng.uniform(0.7, 1.1)))
    cache: dict[tuple, np.ndarray] = {}
    for chord in plan.chords:
        if chord.start >= plan.seconds:
            break
        voicing = chord_voicing(plan, chord, lowest)
        if comp_kind == "guitar":  # six strings: a low root under the voicing and an octave on top
            root = 40 + (plan.pitch_class(chord.degree) - 40) % 12
            voicing = [root, root + 7] + voicing + [voicing[0] + 12]
        elif rng.random() < 0.4:
            voicing.append(voicing[0] + 12)
        segments = []
        if comp_kind == "pad":
            segments = [(chord.start, chord.end - chord.start)]
        else:
            bar_start = math.floor(chord.start / plan.bar_s + 1e-9)
            for bar in range(bar_start, int(math.ceil(chord.end / plan.bar_s - 1e-9))):
                for step, length in comp_pattern:
                    t0 = plan.step_time(bar, step)
                    if chord.start - 1e-6 <= t0 < chord.end - 1e-6:
                        segments.append((t0, min(length * plan.step_s * 0.9, chord.end - t0)))
        for t0, duration in segments:
            duration = round(duration * sr) / sr
            upstroke = comp_kind == "guitar" and round(t0 / plan.step_s) % 4 == 2
            for i, midi in enumerate(voicing[::-1] if upstroke else voicing):
                spread = {"epiano": 0.004, "guitar": 0.012}.get(comp_kind, 0.0)
                start = int(round((t0 + spread * i) * sr))
                key = (midi, duration)
                if comp_kind == "pad":
                    x = synth_pad_note(rng, midi, duration, sr, **pad_args) * 0.5
                elif comp_kind == "organ":
                    x = note_cache(cache, key, lambda: synth_organ_note(midi, duration, sr, drawbars))
                    x = x[:, None] * (0.4 * np.array(pan_gains(comp_pan)))
                elif comp_kind == "epiano":
                    x = note_cache(cache, key, lambda: synth_epiano_note(midi, duration, sr, fm_index, ep_decay))
                    x = x[:, None] * (0.5 * np.array(pan_gains(comp_pan + 0.15 * (i - 1))))
                else:
                    x = note_cache(cache, key, lambda: synth_pluck_note(midi, duration, sr, **strum))
                    level = (0.35 if upstroke else 0.5) * rng.uniform(0.85, 1.0)
                    x = x[:, None] * (level * np.array(pan_gains(comp_pan)))
                add_at(out, start, x)
    if comp_kind == "organ":
        out = rotary_speaker(out, sr, rotor_hz)

    arp_kind = None
    if comp_kind == "pad" or rng.random() < 0.6:
        arp_kind = str(rng.choice(["up", "down", "updown", "random"]))
        rate = 1 if plan.tempo < 105 and rng.random() < 0.5 else 2
        arp_low = lowest + int(rng.choice([0, 7, 12]))
        pluck = dict(brightness_hz=float(rng.uniform(2500, 8000)), decay_s=float(rng.uniform(0.15, 0.5)),
                     slope=float(rng.uniform(0.7, 1.3)))
        arp_pan = -np.sign(comp_pan or 1.0) * float(rng.uniform(0.2, 0.6))
        arp_level = float(rng.uniform(0.25, 0.5))
        arp = np.zeros(plan.n_samples)
        arp_cache: dict[tuple, np.ndarray] = {}
        arp_duration = round(rate * plan.step_s * 0.8 * sr) / sr
        for bar in range(plan.n_bars):
            for i, step in enumerate(range(0, 16, rate)):
                t0 = plan.step_time(bar, step)
                if t0 >= plan.seconds:
                    break
                tones = chord_voicing(plan, plan.chord_at(t0 + 1e-6), arp_low)
                tones = tones + [m + 12 for m in tones]
                if arp_kind == "up":
                    midi = tones[i % len(tones)]
                elif arp_kind == "down":
                    midi = tones[::-1][i % len(tones)]
                elif arp_kind == "updown":
                    cycle = tones + tones[-2:0:-1]
                    midi = cycle[i % len(cycle)]
                else:
                    midi = tones[rng.integers(len(tones))]
                note = note_cache(arp_cache, (midi,), lambda: synth_pluck_note(midi, arp_duration, sr, **pluck))
                add_at(arp, int(round(t0 * sr)), note * rng.uniform(0.7, 1.0))
        comp_rms = np.sqrt(np.mean(out**2)) + 1e-9
        arp *= arp_level * comp_rms / (np.sqrt(np.mean(arp**2)) + 1e-9) * math.sqrt(2)
        out += pan(arp, arp_pan)
    out = apply_room(out, room, wet=float(rng.uniform(0.15, 0.35)))
    return out, {"comp": comp_kind, "arpeggio": arp_kind}


# ----------------------------------------------------------------------------- vocals


@dataclasses.dataclass(frozen=True)
class VocalNote:
    start: float
    duration: float
    midi: float
    vowel: str
    consonant: str | None  # unvoiced onset before the vowel
    phrase_start: bool
    velocity: float = 1.0


def vocal_melody(rng: np.random.Generator, plan: SongPlan, tonic_midi: int) -> list[list[VocalNote]]:
    """Sung phrases of one or two bars with rests between: a stepwise walk landing on chord tones."""
    durations = np.array([2, 3, 4, 6, 8, 1])
    weights = np.array([0.34, 0.08, 0.3, 0.12, 0.1, 0.06])
    degree = int(rng.choice([0, 2, 4]))
    phrases: list[list[VocalNote]] = []
    bar = 0
    while bar < plan.n_bars:
        length = int(rng.choice([1, 2, 2])) if plan.bar_s < 2.6 else 1
        rest = int(rng.choice([2, 3, 4, 4, 6]))
        step = int(rng.choice([0, 0, 1, 2]))
        end_step = length * 16 - rest
        phrase: list[VocalNote] = []
        vowel = str(rng.choice(VOWELS))
        while step < end_step - 1:
            dur = int(rng.choice(durations, p=weights))
            dur = min(dur, end_step - step)
            if end_step - step - dur < 2:
                dur = end_step - step
            start = plan.step_time(bar, step)
            if start >= plan.seconds:
                break
            move = int(rng.choice([-2, -1, -1, 0, 1, 1, 2, 3, -3], p=[0.1, 0.2, 0.15, 0.1, 0.2, 0.1, 0.07, 0.04, 0.04]))
            degree = int(np.clip(degree + move, -3, 9))
            if step % 4 == 0 or step + dur >= end_step:  # strong beats and phrase ends land on chord tones
                chord_tones = [d for d in range(-4, 11) if (d - plan.chord_at(start + 1e-6).degree) % 7 in (0, 2, 4)]
                degree = min(chord_tones, key=lambda d: (abs(d - degree), d))
            new_syllable = not phrase or rng.random() < 0.75
            if new_syllable:
                vowel = str(rng.choice(VOWELS))
            consonant = str(rng.choice(CONSONANTS)) if new_syllable and rng.random() < 0.45 else None
            phrase.append(VocalNote(
                start=start, duration=dur * plan.step_s, midi=float(plan.degree_to_midi(degree, tonic_midi)),
                vowel=vowel, consonant=consonant, phrase_start=not phrase, velocity=float(rng.uniform(0.75, 1.0)),
            ))
            step += dur
        if phrase:
            phrases.append(phrase)
        bar += length
    return phrases


def glottal_table(n_harm: int, open_quotient: float, size: int = 4096) -> np.ndarray:
    """One period of a Rosenberg glottal flow derivative, band-limited to n_harm harmonics."""
    x = np.arange(size) / size
    rise, fall = 0.62 * open_quotient, 0.38 * open_quotient
    flow = np.where(x < rise, 0.5 * (1 - np.cos(np.pi * x / rise)), 0.0)
    closing = (x >= rise) & (x < rise + fall)
    flow[closing] = np.cos(0.5 * np.pi * (x[closing] - rise) / fall)
    derivative = np.diff(np.append(flow, flow[0])) * size
    spectrum = np.fft.rfft(derivative)
    spectrum[n_harm + 1 :] = 0.0
    spectrum[0] = 0.0
    table = np.fft.irfft(spectrum, size)
    return table / np.sqrt(np.mean(table**2))


def formant_filter(
    x: np.ndarray,
    sample_rate: int,
    times_s: np.ndarray,
    formant_hz: np.ndarray,
    bandwidth_hz: np.ndarray,
    n_fft: int = 1024,
    hop: int = 256,
    lip_radiation_hz: float = 800.0,
    floor: float = 0.03,
) -> np.ndarray:
    """Time-varying vocal tract: a cascade of 2-pole resonators applied frame by frame in the STFT.

    times_s (m,) are the times at which the formant frequencies and bandwidths (m, K) are given;
    they are interpolated to the STFT frames. Each resonator has unit gain at DC; a first-order
    lip-radiation lift (+6 dB/octave above lip_radiation_hz) restores the brightness a cascade
    loses, and `floor` keeps a little air between the formants.
    """
    frame_times, spec = signal.stft(x, fs=sample_rate, window="hann", nperseg=n_fft, noverlap=n_fft - hop)[1:]
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    omega = (2 * np.pi * freqs / sample_rate)[:, None]  # (bins, 1)
    cos1, sin1, cos2, sin2 = np.cos(omega), np.sin(omega), np.cos(2 * omega), np.sin(2 * omega)
    response = np.ones((freqs.shape[0], frame_times.shape[0]))  # (bins, frames)
    for k in range(formant_hz.shape[1]):
        f = np.interp(frame_times, times_s, formant_hz[:, k])[None, :]  # (1, frames)
        b = np.interp(frame_times, times_s, bandwidth_hz[:, k])[None, :]
        r = np.exp(-np.pi * b / sample_rate)
        c = 2 * r * np.cos(2 * np.pi * f / sample_rate)
        r2 = r * r
        # |1 - c z^-1 + r^2 z^-2|^2 on the unit circle, in real arithmetic
        denominator = (1 - c * cos1 + r2 * cos2) ** 2 + (c * sin1 - r2 * sin2) ** 2  # (bins, frames)
        response *= np.abs(1 - c + r2) / np.sqrt(denominator)
    response *= np.sqrt(1 + (freqs / lip_radiation_hz) ** 2)[:, None]
    _, y = signal.istft(spec * (response + floor), fs=sample_rate, window="hann", nperseg=n_fft, noverlap=n_fft - hop)
    out = np.zeros_like(x)
    out[: min(len(y), len(x))] = y[: len(x)]
    return out


def synth_voice(
    rng: np.random.Generator,
    notes: list[VocalNote],
    sample_rate: int,
    n_samples: int,
    formant_scale: float = 1.0,
    vibrato_hz: float = 5.5,
    vibrato_semitones: float = 0.4,
    glide_s: float = 0.04,
    breathiness: float = 0.05,
    open_quotient: float = 0.6,
    consonants: bool = True,
) -> np.ndarray:
    """A sung line (mono, n_samples): glottal source with vibrato and portamento, formants, breath."""
    sr = sample_rate
    out = np.zeros(n_samples)
    if not notes:
        return out
    t = np.arange(n_samples) / sr

    # Pitch: note steps (with a scoop up into phrase starts) glided by a one-pole smoother.
    semitones = np.full(n_samples, notes[0].midi)
    gate = np.zeros(n_samples)
    vibrato_depth = np.zeros(n_samples)
    for i, note in enumerate(notes):
        s = int(note.start * sr)
        following = notes[i + 1] if i + 1 < len(notes) else None
        e = int(following.start * sr) if following else n_samples
        semitones[s:e] = note.midi
        if note.phrase_start:
            semitones[s : s + int(0.06 * sr)] = note.midi - rng.uniform(0.5, 2.0)
        end = int((note.start + note.duration) * sr)
        breath_gap = 0.05 if (following is None or following.phrase_start or following.consonant) else 0.0
        gate[s : max(s + 1, end - int(breath_gap * sr))] = note.velocity
        local = t[s:end] - note.start
        vibrato_depth[s:end] = vibrato_semitones * np.clip((local - 0.15) / 0.3, 0.0, 1.0)
    semitones = one_pole_smooth(semitones, glide_s, sr)
    control_rate = 100
    n_control = n_samples // (sr // control_rate) + 2
    control_t = np.arange(n_control) / control_rate
    drift = one_pole_smooth(rng.standard_normal(n_control), 0.08, control_rate) * 0.35
    rate_wander = one_pole_smooth(rng.standard_normal(n_control), 0.3, control_rate) * 0.6
    drift = np.interp(t, control_t, drift)
    rate = vibrato_hz + np.interp(t, control_t, rate_wander)
    vibrato = vibrato_depth * np.sin(2 * np.pi * np.cumsum(rate) / sr)
    f0 = midi_to_hz(semitones + vibrato + drift)

    # Source: band-limited glottal pulses plus aspiration noise pulsed with the glottal cycle.
    phase = np.cumsum(f0) / sr
    voiced = wavetable_oscillator(glottal_table(n_harmonics(float(f0.max()), sr, 200), open_quotient), phase)
    aspiration = highpass(rng.standard_normal(n_samples), 1200.0, sr) * (0.6 + 0.4 * np.cos(2 * np.pi * phase))
    amplitude = one_pole_smooth(gate, 0.025, sr)
    source = (voiced + breathiness * 4.0 * aspiration) * amplitude

    # Vocal tract: one vowel per syllable, formants gliding between vowels (coarticulation).
    frame_rate = 200
    frame_t = np.arange(int(n_samples / sr * frame_rate) + 2) / frame_rate
    formants = np.empty((frame_t.shape[0], 5))
    bandwidths = np.empty_like(formants)
    for i, note in enumerate(notes):
        s = int(note.start * frame_rate) if i else 0
        (f1, f2, f3), (b1, b2, b3) = VOWEL_FORMANTS[note.vowel]
        jitter = rng.uniform(0.95, 1.05, 3)
        formants[s:] = np.array([f1 * jitter[0], f2 * jitter[1], f3 * jitter[2], *UPPER_FORMANTS[0]]) * formant_scale
        bandwidths[s:] = np.array([b1, b2, b3, *UPPER_FORMANTS[1]])
    formants = one_pole_smooth(formants, 0.035, frame_rate)
    voice = formant_filter(source, sr, frame_t, formants, bandwidths)
    sung = amplitude > 0.5
    if np.any(sung):
        voice /= np.sqrt(np.mean(voice[sung] ** 2)) + 1e-9

    # Unvoiced consonants before syllables and audible inhales before phrases.
    if consonants:
        shapes = {"s": (4500.0, None, 0.09, 0.35), "sh": (1800.0, 4500.0, 0.1, 0.35), "f": (1500.0, None, 0.07, 0.15),
                  "t": (3000.0, None, 0.02, 0.5), "k": (1500.0, 3500.0, 0.025, 0.45), "h": (500.0, 3000.0, 0.06, 0.12)}
        for i, note in enumerate(notes):
            if note.consonant is not None:
                low, high, dur, level = shapes[note.consonant]
                n = int(dur * sr)
                burst = rng.standard_normal(n)
                burst = bandpass(burst, low, high, sr) if high else highpass(burst, low, sr)
                shape = np.sin(np.pi * np.arange(n) / n) ** (0.5 if dur > 0.05 else 3)
                add_at(out, int((note.start - dur * 0.8) * sr), burst * shape * level * note.velocity)
            previous_end = notes[i - 1].start + notes[i - 1].duration if i else -1.0
            if note.phrase_start and note.start - previous_end > 0.35 and rng.random() < 0.7:
                dur = float(rng.uniform(0.2, 0.3))
                n = int(dur * sr)
                inhale = bandpass(rng.standard_normal(n), 500.0, 5000.0, sr) * np.sin(np.pi * np.arange(n) / n) ** 2
                add_at(out, int((note.start - dur - 0.05) * sr), inhale * 0.06)
    return out + voice


def render_vocals(rng: np.random.Generator, plan: SongPlan, room: Room) -> tuple[np.ndarray, dict]:
    """The vocals stem (n, 2): a lead voice in the chords' register, sometimes a backing harmony."""
    sr = plan.sample_rate
    high_voice = rng.random() < 0.5
    low = int(rng.integers(55, 60)) if high_voice else int(rng.integers(50, 55))
    tonic_midi = low + (plan.tonic - low) % 12
    voice_args = dict(
        formant_scale=float(rng.uniform(1.1, 1.2) if high_voice else rng.uniform(0.95, 1.05)),
        vibrato_hz=float(rng.uniform(5.0, 6.0)),
        vibrato_semitones=float(rng.uniform(0.2, 0.6)),
        glide_s=float(rng.uniform(0.02, 0.06)),
        breathiness=float(rng.uniform(0.02, 0.08)),
        open_quotient=float(rng.uniform(0.5, 0.75)),
    )
    phrases = vocal_melody(rng, plan, tonic_midi)
    lead_notes = [n for p in phrases for n in p]
    out = pan(synth_voice(rng, lead_notes, sr, plan.n_samples, **voice_args), float(rng.uniform(-0.1, 0.1)))

    backing = rng.random() < 0.5
    if backing:
        vowel = str(rng.choice(["u", "a", "o"]))
        harmony = []
        for phrase in phrases:
            if rng.random() < 0.6:
                for note in phrase:
                    # a diatonic third below the lead (found by searching the scale around it)
                    below = range(int(note.midi) - 5, int(note.midi) - 2)
                    candidates = [m for m in below if (m - plan.tonic) % 12 in plan.scale]
                    midi = candidates[-1] if candidates else note.midi - 3
                    harmony.append(dataclasses.replace(note, midi=float(midi), vowel=vowel, consonant=None))
        if harmony:
            backing_args = {**voice_args, "breathiness": 0.08}
            back = synth_voice(rng, harmony, sr, plan.n_samples, **backing_args, consonants=False)
            out += pan(back * float(rng.uniform(0.25, 0.4)), float(rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 0.6)))
    out = apply_room(out, room, wet=float(rng.uniform(0.12, 0.25)))
    return out, {"voice": "high" if high_voice else "low", "backing": backing, "phrases": len(phrases)}


# ----------------------------------------------------------------------------- tracks and sets


def track_rng(seed: int, subset: str, index: int) -> np.random.Generator:
    """The generator of one track, derived from the set seed, the subset and the track index."""
    return np.random.default_rng([int(seed), SUBSETS.index(subset), int(index)])


def track_name(subset: str, index: int) -> str:
    """Folder name of a demo track, unique across subsets (MUSDB names are unique too)."""
    return f"demo_{subset}_{index:03d}"


def gate_stem(rng: np.random.Generator, stem: np.ndarray, sample_rate: int, fade_s: float = 0.02) -> tuple[np.ndarray, list[float]]:
    """Silence one stretch of 25-50 % of a (n, 2) stem, with `fade_s` fades; returns it and [start, end] s."""
    n = stem.shape[0]
    length = int(rng.uniform(0.25, 0.5) * n)
    start = int(rng.integers(0, n - length + 1))
    fade = max(1, int(fade_s * sample_rate))
    gain = np.ones(n)
    gain[start : start + length] = 0.0
    gain = np.convolve(gain, np.ones(fade) / fade, mode="same")  # smooth the edges
    return stem * gain[:, None], [round(start / sample_rate, 3), round((start + length) / sample_rate, 3)]


def generate_track(
    rng: np.random.Generator, seconds: float = 12.0, sample_rate: int = 44100, style: str = "balanced"
) -> tuple[dict[str, np.ndarray], dict]:
    """One procedural song: float32 (n, 2) arrays for mixture and stems, and a description.

    The mixture is the float32 sum of the float32 stems; all peaks stay below 0.95. `style` is
    one of `STYLES` (see there).
    """
    plan_rng, drums_rng, bass_rng, other_rng, vocals_rng, room_rng, mix_rng = rng.spawn(7)
    plan = plan_song(plan_rng, seconds, sample_rate)
    ir = room_impulse_response(room_rng, sample_rate, float(room_rng.uniform(0.4, 1.4)))
    room = Room.for_length(ir, plan.n_samples)
    vocals, vocals_meta = render_vocals(vocals_rng, plan, room)
    other, other_meta = render_other(other_rng, plan, room)
    stems = {
        "drums": render_drums(drums_rng, plan, room),
        "bass": render_bass(bass_rng, plan, room),
        "other": other,
        "vocals": vocals,
    }
    gains_db = {}
    for name in TARGETS:
        gains_db[name] = float(mix_rng.uniform(-6.0, 6.0))
    silent = {}
    if style == "sparse":
        style_rng = mix_rng.spawn(1)[0]
        for name in style_rng.choice(TARGETS, size=int(style_rng.integers(1, 3)), replace=False):
            gains_db[str(name)] = min(gains_db[str(name)], 0.0) - 14.0
        for name in TARGETS:
            if style_rng.random() < 0.5:
                stems[name], silent[name] = gate_stem(style_rng, stems[name], sample_rate)
    for name in TARGETS:
        rms = np.sqrt(np.mean(stems[name] ** 2)) + 1e-12
        stems[name] = stems[name] * (0.07 * 10.0 ** (gains_db[name] / 20.0) / rms)
    mixture = sum(stems[name] for name in TARGETS)
    peak = max([np.max(np.abs(mixture))] + [np.max(np.abs(s)) for s in stems.values()])
    scale = min(1.0, 0.95 / peak)
    audio = {name: (stems[name] * scale).astype(np.float32) for name in TARGETS}
    # The mixture is summed from the stems exactly as they are written.
    audio["mixture"] = np.sum([audio[name].astype(np.float64) for name in TARGETS], axis=0).astype(np.float32)
    meta = {
        "tempo_bpm": round(plan.tempo, 2),
        "key": f"{NOTE_NAMES[plan.tonic]} {plan.scale_name}",
        "progression": list(plan.progression),
        "swing": round(plan.swing, 3),
        "style": style,
        "stem_gains_db": {k: round(v, 2) for k, v in gains_db.items()},
        "silent_seconds": silent,
        "mix_scale": round(float(scale), 4),
        "other": other_meta,
        "vocals": vocals_meta,
    }
    return {name: audio[name] for name in SOURCES}, meta


def _check_params(seed: int, n_train: int, n_test: int, seconds: float, sample_rate: int, style: str = "balanced") -> dict:
    for name, value in (("seed", seed), ("n_train", n_train), ("n_test", n_test), ("sample_rate", sample_rate)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    if n_train < 0 or n_test < 0:
        raise ConfigError(f"track counts must be >= 0, got n_train={n_train}, n_test={n_test}")
    if n_train + n_test == 0:
        raise ConfigError("the demo set needs at least one track (n_train + n_test >= 1)")
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 1.0):
        raise ConfigError(f"seconds must be a number >= 1, got {seconds!r}")
    if not 16000 <= sample_rate <= 192000:
        raise ConfigError(f"sample_rate must be in 16000..192000 Hz, got {sample_rate}")
    if style not in STYLES:
        raise ConfigError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
    return {"seed": int(seed), "n_train": int(n_train), "n_test": int(n_test), "seconds": float(seconds),
            "sample_rate": int(sample_rate), "style": style}


def _read_marker(root: Path) -> dict | None:
    try:
        marker = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("generator") == __name__ else None


def demo_set_is_complete(
    root: str | os.PathLike,
    *,
    seed: int | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    seconds: float | None = None,
    sample_rate: int | None = None,
    style: str | None = None,
) -> bool:
    """Whether root holds a finished demo set of this generator version with the given parameters.

    Parameters left as None are not compared. Every track's five wav files must exist.
    """
    root = Path(root)
    marker = _read_marker(root)
    if marker is None or marker.get("version") != GENERATOR_VERSION:
        return False
    wanted = {"seed": seed, "n_train": n_train, "n_test": n_test, "seconds": seconds, "sample_rate": sample_rate,
              "style": style}
    for key, value in wanted.items():
        if value is not None and marker.get("params", {}).get(key) != value:
            return False
    for subset, names in marker.get("tracks", {}).items():
        for name in names:
            if not all((root / subset / name / f"{source}.wav").is_file() for source in SOURCES):
                return False
    return True


def make_demo_set(
    root: str | os.PathLike,
    seed: int = 0,
    n_train: int = 16,
    n_test: int = 4,
    seconds: float = 12.0,
    sample_rate: int = 44100,
    progress: Callable[[int, int], None] | None = None,
    style: str = "balanced",
) -> Path:
    """Write a procedural demo set in MUSDB18-HQ layout at root and return root.

    Tracks are `ROOT/{train,test}/demo_<subset>_<iii>/{mixture,drums,bass,other,vocals}.wav`
    (stereo float32 wav) plus a `meta.json` describing each song. The set is built in a hidden
    sibling folder and renamed into place with a `.complete` marker, so an interrupted run never
    leaves a set that looks complete. If root already holds a complete set with the same
    parameters, nothing is written. An older or different demo set at root is replaced; any other
    existing folder is refused (DataError). `progress(done, total)` is called once the checks
    pass (done = 0) and after each track. `style`: "balanced" (default) or "sparse" (`STYLES`).
    """
    params = _check_params(seed, n_train, n_test, seconds, sample_rate, style)
    root = Path(root)
    if demo_set_is_complete(root, **params):
        return root
    if root.exists() or root.is_symlink():
        if not root.is_dir():
            raise DataError(f"{root}: exists and is not a folder")
        if any(root.iterdir()) and _read_marker(root) is None:
            raise DataError(f"{root}: folder exists and is not a demo set; choose another output folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    jobs = [("train", i) for i in range(params["n_train"])] + [("test", i) for i in range(params["n_test"])]
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; the set should not be
        tracks: dict[str, list[str]] = {subset: [] for subset in SUBSETS}
        if progress is not None:
            progress(0, len(jobs))
        for done, (subset, index) in enumerate(jobs, start=1):
            name = track_name(subset, index)
            folder = staging / subset / name
            folder.mkdir(parents=True)
            rng = track_rng(params["seed"], subset, index)
            audio, meta = generate_track(rng, params["seconds"], params["sample_rate"], params["style"])
            for source in SOURCES:
                # float wav without the PEAK chunk's time of writing: the same seed gives the same bytes
                audio_io.save_audio(folder / f"{source}.wav", audio[source], params["sample_rate"], reproducible=True)
            (folder / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
            tracks[subset].append(name)
            if progress is not None:
                progress(done, len(jobs))
        for subset in SUBSETS:
            (staging / subset).mkdir(exist_ok=True)
        marker = {"generator": __name__, "version": GENERATOR_VERSION, "params": params, "tracks": tracks}
        (staging / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        _install(staging, root, params)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return root


def _install(staging: Path, root: Path, params: dict) -> None:
    """Rename the finished staging folder to root, moving an old demo set (or empty folder) aside."""
    old = None
    if root.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
        os.replace(root, old / root.name)
    try:
        os.replace(staging, root)
    except OSError:
        # Another process installed a set meanwhile; keep it when it is the one we wanted.
        if not demo_set_is_complete(root, **params):
            raise DataError(f"{root}: could not move the finished demo set into place") from None
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
