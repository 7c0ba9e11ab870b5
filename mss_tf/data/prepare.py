"""Tracks -> fixed-length crops -> complex STFTs -> shard folders (one per split)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from mss_tf.audio.spectrogram import SpectrogramConfig, stft
from mss_tf.data import musdb
from mss_tf.data.shards import MANIFEST, STEMS, ShardWriter


@dataclasses.dataclass(frozen=True)
class CropConfig:
    """Fixed-length crops of every stem of a track at the same offsets.

    Args:
        seconds: crop length.
        overlap: fraction of a crop shared with the next one (0.5: hop of seconds/2).
    """

    seconds: float = 6.0
    overlap: float = 0.5


def crop_offsets(n_samples: int, crop_samples: int, hop_samples: int) -> list[int]:
    """Start samples of the crops of a track; a track shorter than one crop gives none."""
    if n_samples < crop_samples:
        return []
    return list(range(0, n_samples - crop_samples + 1, hop_samples))


def track_examples(
    track: musdb.Track, stft_config: SpectrogramConfig, crops: CropConfig
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Mono crops of one track as complex STFTs: stems (N, 4, T, F), mixture (N, T, F), offsets."""
    audio, _ = musdb.load_track(track, sample_rate=stft_config.sample_rate, mono=True)
    crop_samples = int(round(crops.seconds * stft_config.sample_rate))
    hop_samples = max(1, int(round(crop_samples * (1.0 - crops.overlap))))
    offsets = crop_offsets(audio["mixture"].shape[0], crop_samples, hop_samples)
    if not offsets:
        return np.zeros((0,)), np.zeros((0,)), []
    waves = np.stack(
        [np.stack([audio[s][o : o + crop_samples, 0] for s in ("mixture",) + STEMS]) for o in offsets]
    )  # (N, 5, samples)
    spec = stft(tf.constant(waves), stft_config).numpy()  # (N, 5, T, F)
    return spec[:, 1:], spec[:, 0], offsets


def prepare_split(
    tracks: Sequence[musdb.Track],
    out_dir: str | Path,
    stft_config: SpectrogramConfig,
    crops: CropConfig = CropConfig(),
    dtype: str = "float16",
    progress: bool = True,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the crops of `tracks` as a shard folder; built under a temporary name, then renamed."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        writer = ShardWriter(tmp, stft_config, dtype=dtype)
        with writer:
            for track in tqdm(tracks, desc=f"shards {out_dir.name}", unit="track", disable=not progress):
                stems, mixture, offsets = track_examples(track, stft_config, crops)
                for i, offset in enumerate(offsets):
                    writer.add(stems[i], mixture[i], track.name, offset)
            manifest = writer.close({"crop": dataclasses.asdict(crops), **(extra or {})})
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def prepare_dataset(
    root: str | Path,
    out_dir: str | Path,
    stft_config: SpectrogramConfig,
    crops: CropConfig = CropConfig(),
    dtype: str = "float16",
    splits: Sequence[str] = ("train", "valid"),
    progress: bool = True,
) -> Path:
    """Shard folders `out_dir/<split>` for each split of a MUSDB18-HQ folder; cached.

    A split whose folder already holds a manifest with the same STFT config, crops, dtype and
    source tracks is kept as it is.
    """
    out_dir = Path(out_dir)
    for split in splits:
        tracks = musdb.split_tracks(root, split)
        split_dir = out_dir / split
        wanted = {
            "stft": stft_config.to_dict(),
            "dtype": dtype,
            "crop": dataclasses.asdict(crops),
            "source_tracks": [t.name for t in tracks],
        }
        if (split_dir / MANIFEST).is_file():
            manifest = json.loads((split_dir / MANIFEST).read_text())
            if all(manifest.get(k) == v for k, v in wanted.items()):
                continue
        prepare_split(
            tracks, split_dir, stft_config, crops, dtype, progress,
            extra={"split": split, "source_root": str(Path(root).resolve()), "source_tracks": wanted["source_tracks"]},
        )
    return out_dir
