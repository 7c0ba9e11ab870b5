"""One demo song: its plan, the four stems (one module per instrument family), their levels
and the mixture; or, for the stems layout, the instrument parts the stems are made of (`PARTS`)."""

from __future__ import annotations

import numpy as np

from mss_tf import TARGETS
from mss_tf.data.demo.bass import render_bass
from mss_tf.data.demo.drums import DRUM_PARTS, render_drums
from mss_tf.data.demo.dsp import Room, room_impulse_response
from mss_tf.data.demo.other import OTHER_PARTS, render_other
from mss_tf.data.demo.plan import NOTE_NAMES, plan_song
from mss_tf.data.demo.vocals import render_vocals
from mss_tf.data.multitrack import REST

# "balanced": every stem plays throughout at +-6 dB around a common level. "sparse": stems
# 0-20 dB apart (one or two of them 14 dB down), and each stem silent for a stretch of 25-50 %
# of the song with probability 0.5 (an intro without vocals, a break without bass), which is how
# real mixes differ from the balanced set and what makes quiet, intermittent targets hard.
STYLES = ("balanced", "sparse")
# The instrument parts of each stem (in `TARGETS` order), rendered separately for the stems layout;
# a song plays a subset of them (one chord instrument of the other stem, the arpeggio on most songs).
PARTS = {"vocals": ("vocals",), "drums": DRUM_PARTS, "bass": ("bass",), "other": OTHER_PARTS}
# The stem map (`mss_tf.data.multitrack`) that groups the parts back into the four MUSDB stems.
MUSDB_STEM_MAP = {"vocals": ["vocals"], "drums": list(DRUM_PARTS), "bass": ["bass"], "other": REST}


def gate(rng: np.random.Generator, n: int, sample_rate: int, fade_s: float = 0.02) -> tuple[np.ndarray, list[float]]:
    """A gain (n,) silencing one stretch of 25-50 % of n samples (`fade_s` fades), and [start, end] s."""
    length = int(rng.uniform(0.25, 0.5) * n)
    start = int(rng.integers(0, n - length + 1))
    fade = max(1, int(fade_s * sample_rate))
    gain = np.ones(n)
    gain[start : start + length] = 0.0
    gain = np.convolve(gain, np.ones(fade) / fade, mode="same")  # smooth the edges
    return gain, [round(start / sample_rate, 3), round((start + length) / sample_rate, 3)]


def generate_track(
    rng: np.random.Generator, seconds: float = 12.0, sample_rate: int = 44100, style: str = "balanced",
    parts: bool = False,
) -> tuple[dict[str, np.ndarray], dict]:
    """One procedural song: float32 (n, 2) arrays for mixture and stems, and a description.

    The mixture is the float32 sum of the float32 stems; all peaks stay below 0.95. `style` is
    one of `STYLES` (see there). With `parts`, the stems are replaced by the parts the song plays
    (`PARTS`; silent ones left out), each at its stem's level, and the mixture is their float32
    sum: the parts of a stem sum to that stem up to float32 rounding. The same rng gives the same
    song either way.
    """
    plan_rng, drums_rng, bass_rng, other_rng, vocals_rng, room_rng, mix_rng = rng.spawn(7)
    plan = plan_song(plan_rng, seconds, sample_rate)
    ir = room_impulse_response(room_rng, sample_rate, float(room_rng.uniform(0.4, 1.4)))
    room = Room.for_length(ir, plan.n_samples)
    vocals, vocals_meta = render_vocals(vocals_rng, plan, room)
    other, other_parts, other_meta = render_other(other_rng, plan, room)
    drums, drum_parts = render_drums(drums_rng, plan, room)
    bass = render_bass(bass_rng, plan, room)
    stems = {"drums": drums, "bass": bass, "other": other, "vocals": vocals}
    stem_parts = {"drums": drum_parts, "bass": {"bass": bass}, "other": other_parts, "vocals": {"vocals": vocals}}
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
                gain, silent[name] = gate(style_rng, plan.n_samples, sample_rate)
                stems[name] = stems[name] * gain[:, None]
                stem_parts[name] = {part: x * gain[:, None] for part, x in stem_parts[name].items()}
    for name in TARGETS:
        rms = np.sqrt(np.mean(stems[name] ** 2)) + 1e-12
        level = 0.07 * 10.0 ** (gains_db[name] / 20.0) / rms
        stems[name] = stems[name] * level
        stem_parts[name] = {part: x * level for part, x in stem_parts[name].items()}
    mixture = sum(stems[name] for name in TARGETS)
    peak = max([np.max(np.abs(mixture))] + [np.max(np.abs(s)) for s in stems.values()])
    scale = min(1.0, 0.95 / peak)
    if parts:
        audio = {part: (x * scale).astype(np.float32) for name in TARGETS for part, x in stem_parts[name].items()
                 if np.any(x)}
    else:
        audio = {name: (stems[name] * scale).astype(np.float32) for name in TARGETS}
    # The mixture is summed from the stems (or parts) exactly as they are written.
    audio = {"mixture": np.sum([x.astype(np.float64) for x in audio.values()], axis=0).astype(np.float32), **audio}
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
    return audio, meta
