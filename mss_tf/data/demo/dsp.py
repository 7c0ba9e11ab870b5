"""Signal building blocks of the demo synthesiser: filters, wavetable oscillators, envelopes,
constant-power panning, a stereo room reverb and a per-song note cache."""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import numpy as np
import scipy.fft
from scipy import signal


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


def note_cache(cache: dict, key: tuple, make: Callable[[], np.ndarray]) -> np.ndarray:
    """Render a note once per (pitch, length, ...) key; callers scale copies, never edit in place."""
    if key not in cache:
        cache[key] = make()
    return cache[key]
