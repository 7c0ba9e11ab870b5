"""The other stem of a demo song: a comping chord instrument (pad, organ, electric piano or
strummed guitar) and, on most songs, a plucked arpeggio; each is also rendered as a part of its
own (`OTHER_PARTS`)."""

from __future__ import annotations

import math

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
    pan_gains,
    sawtooth_amplitudes,
    wavetable_oscillator,
)
from mss_tf.data.demo.plan import Chord, SongPlan

# Comping rhythms for chord instruments: (step, length in steps).
COMP_PATTERNS: tuple[tuple[tuple[int, int], ...], ...] = (
    ((0, 16),),
    ((0, 8), (8, 8)),
    ((2, 2), (6, 2), (10, 2), (14, 2)),
    ((0, 3), (6, 4), (12, 4)),
    ((0, 2), (3, 3), (6, 2), (8, 2), (11, 3), (14, 2)),
    ((0, 6), (6, 6), (12, 4)),
)
# The chord instruments (a song has one) and the parts of the other stem: its chord instrument and "arp".
COMP_KINDS = ("pad", "organ", "epiano", "guitar")
OTHER_PARTS = COMP_KINDS + ("arp",)


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


def render_other(
    rng: np.random.Generator, plan: SongPlan, room: Room
) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    """The other stem (n, 2): a comping chord instrument, plus an arpeggio on most songs; its parts
    (the chord instrument under its `COMP_KINDS` name and "arp" when there is one, each (n, 2)),
    which sum to the stem up to float64 rounding; and a description."""
    sr = plan.sample_rate
    out = np.zeros((plan.n_samples, 2))
    comp_kind = str(rng.choice(COMP_KINDS))
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
    parts = {comp_kind: out}

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
        parts["arp"] = pan(arp, arp_pan)
        out = out + parts["arp"]
    wet = float(rng.uniform(0.15, 0.35))
    return (apply_room(out, room, wet), {name: apply_room(part, room, wet) for name, part in parts.items()},
            {"comp": comp_kind, "arpeggio": arp_kind})
