"""Listening excerpts: short clips of each evaluated track, stored by the evaluation and gathered
into one HTML page by `evaluate.py --compare` (mss_tf.evaluation.listen_page).

Each evaluation (a run, an export, an oracle, the mixture, a Wiener variant: all go through
`report.evaluate_tracks`) cuts, per track and target, the window of `seconds` where that target's
reference holds the most energy -- a function of the reference alone, so every evaluation of the
same track picks the same window -- and writes, under `<out>/listen/<track>/`, the mixture, the
reference and its own estimate over that window as Ogg Vorbis, with the uSDR of the estimate on
the excerpt in results.json. The estimates are full-track separations cut afterwards (not the
excerpt separated alone), so what one hears is what was scored.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mss_tf.evaluation.metrics import usdr

LISTEN_DIR = "listen"
DEFAULT_SECONDS = 10.0
CLIP_EXTENSION = ".ogg"  # Vorbis: libsndfile writes it at any sample rate; browsers play it
STEP_SECONDS = 0.1  # the window's start is searched on this grid


def track_folder(track: str) -> str:
    """A file-system and URL safe folder name for a track (its name's letters, then a short hash
    of the whole name so that two names differing only in punctuation stay apart)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", track).strip("._")[:60] or "track"
    return f"{slug}-{hashlib.sha1(track.encode()).hexdigest()[:6]}"


def loudest_window(reference: np.ndarray, rate: int, seconds: float) -> tuple[int, int]:
    """(start, frames) of the `seconds`-long window of `reference` ((samples, channels) or
    (samples,)) with the most energy, its start on a STEP_SECONDS grid (the earliest of equal
    windows); the whole signal when it is shorter."""
    energy = np.square(np.asarray(reference, np.float64))
    energy = energy.reshape(energy.shape[0], -1).sum(axis=1)  # (samples,)
    total = energy.shape[0]
    frames = min(total, int(round(seconds * rate)))
    if frames >= total:
        return 0, total
    cumulative = np.concatenate([[0.0], np.cumsum(energy)])
    step = max(1, int(round(STEP_SECONDS * rate)))
    starts = np.arange(0, total - frames + 1, step)
    sums = cumulative[starts + frames] - cumulative[starts]
    return int(starts[int(np.argmax(sums))]), frames


def clip_names(target: str) -> dict[str, str]:
    """File names of a target's clips in a track's folder: mixture, reference and estimate."""
    return {"mixture": f"mixture-{target}{CLIP_EXTENSION}", "reference": f"reference-{target}{CLIP_EXTENSION}",
            "estimate": f"{target}{CLIP_EXTENSION}"}


def write_excerpts(
    out_dir: str | Path,
    track: str,
    mixture: np.ndarray,
    references: Mapping[str, np.ndarray],
    estimates: Mapping[str, np.ndarray],
    rate: int,
    targets: Sequence[str],
    seconds: float = DEFAULT_SECONDS,
) -> dict[str, dict[str, Any]]:
    """Write the excerpts of one track into out_dir/listen/<track folder>/ and return what
    results.json keeps of them: {target: {"start": s, "seconds": s, "usdr": dB on the excerpt,
    "folder": relative folder}} (times in seconds of the track, rounded to the sample).

    Args:
        mixture, references, estimates: (samples, channels) at `rate`, all of one length.
        seconds: the excerpt's length (the whole track when shorter).
    """
    from mss_tf.audio import io as audio_io

    folder = Path(LISTEN_DIR) / track_folder(track)
    out = {}
    for target in targets:
        start, frames = loudest_window(references[target], rate, seconds)
        cut = slice(start, start + frames)
        names = clip_names(target)
        for kind, audio in (("mixture", mixture), ("reference", references[target]), ("estimate", estimates[target])):
            audio_io.save_audio(Path(out_dir) / folder / names[kind], np.asarray(audio[cut], np.float32), rate)
        out[target] = {"start": start / rate, "seconds": frames / rate, "rate": rate, "folder": folder.as_posix(),
                       "usdr": usdr(references[target][cut], estimates[target][cut])}
    return out
