"""The plan of one demo song, shared by all its parts: tempo, swing, key, scale and chords."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

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
