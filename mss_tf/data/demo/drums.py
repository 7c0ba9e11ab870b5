"""The drums stem of a demo song: synthesised kick, snare, hats, toms and crash on a groove,
also rendered as three parts (kick; snare with the toms; hats with the crash)."""

from __future__ import annotations

import dataclasses

import numpy as np

from mss_tf.data.demo.dsp import Room, add_at, apply_room, bandpass, highpass, pan_gains
from mss_tf.data.demo.plan import SongPlan

# 16-step (one bar of 16ths) patterns.
KICK_PATTERNS = ((0, 8), (0, 8, 10), (0, 6, 8), (0, 7, 8, 14), (0, 3, 8, 11), (0, 10), (0, 4, 8, 12), (0, 6, 10))
HAT_PATTERNS = (tuple(range(0, 16, 2)), tuple(range(16)), (2, 6, 10, 14), (0, 2, 3, 4, 6, 8, 10, 11, 12, 14))
# The parts of the drums stem, and the part each drum instrument plays in.
DRUM_PARTS = ("kick", "snare", "hats")
INSTRUMENT_PART = {"kick": "kick", "snare": "snare", "tom_low": "snare", "tom_mid": "snare", "tom_high": "snare",
                   "hat": "hats", "open_hat": "hats", "crash": "hats"}


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


def render_drums(rng: np.random.Generator, plan: SongPlan, room: Room) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The drums stem (n, 2): one-shot samples (a few variants each) on the track's groove, and its
    parts (`DRUM_PARTS`, each (n, 2); zeros when not played), which sum to the stem up to float64
    rounding."""
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
    parts = {name: np.zeros((plan.n_samples, 2)) for name in DRUM_PARTS}
    for h in drum_pattern(rng, plan):
        variants = samples[h.instrument]
        x = variants[rng.integers(len(variants))] * (h.velocity * levels[h.instrument])
        x = x[:, None] * gains[h.instrument]
        start = int(round(h.time * sr))
        # the stem is summed in one buffer, hit by hit, as before the parts existed (same bytes)
        add_at(out, start, x)
        add_at(parts[INSTRUMENT_PART[h.instrument]], start, x)
    wet = float(rng.uniform(0.08, 0.25))
    return apply_room(out, room, wet), {name: apply_room(part, room, wet) for name, part in parts.items()}
