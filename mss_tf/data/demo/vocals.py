"""The vocals stem of a demo song: a sung melody from a glottal source through time-varying
formant filters, with vibrato, consonants and breaths, sometimes with a backing harmony."""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import signal

from mss_tf.data.demo.dsp import (
    Room,
    add_at,
    apply_room,
    bandpass,
    highpass,
    midi_to_hz,
    n_harmonics,
    one_pole_smooth,
    pan,
    wavetable_oscillator,
)
from mss_tf.data.demo.plan import SongPlan

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
