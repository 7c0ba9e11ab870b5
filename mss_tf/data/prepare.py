"""Tracks -> quality-filtered crops (+ augmented copies) -> complex STFTs -> shard folders.

A split folder is prepared track by track: each track's examples go into shards of their own,
written under temporary names and renamed when complete, and a per-track record in `.done/`
is written last. A rerun therefore skips finished tracks, and the folder's `manifest.json`
(written after every track is done) only ever lists complete shards.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import multiprocessing
import re
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from mss_tf.audio.spectrogram import SpectrogramConfig
from mss_tf.data.crops import CropConfig, crop_offsets, track_crops  # noqa: F401  (re-exported)
from mss_tf.data.quality import QualityConfig, QualityStats, assess
from mss_tf.data.shards import CHANNELS, MANIFEST, ShardWriter, manifest_channels, read_manifest, write_manifest
from mss_tf.data.sources import DataSource
from mss_tf.errors import ConfigError, DataError, ShardError
from mss_tf.utils import atomic_write

DONE = ".done"
SETTINGS = "settings.json"

__all__ = [  # the crop helpers are re-exported: shard settings are built from here
    "CropConfig", "PrepareConfig", "check_shards", "crop_offsets", "prepare_dataset", "prepare_split",
    "prepare_track", "settings_key", "track_crops",
]


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    """How a split is turned into shards.

    Args:
        crops: crop length and overlap.
        quality: the crop filter (None keeps every crop).
        augment: offline pedalboard augmentation settings (None: no augmented copies).
        augment_copies: augmented versions written beside each kept crop.
        dtype: "float16" or "float32" storage of the STFT values.
        compression: "" or "GZIP".
        shard_bytes: target shard size; a track's examples start a new shard past it.
        seed: seed of the augmentation draws.
        channels: 1 stores mono STFTs (the tracks downmixed), 2 stereo ones (both channels of
            every stem and the mixture; a mono file is duplicated into both): what the model
            the shards are for takes (`mss_tf.config.model_channels`).
    """

    crops: CropConfig = CropConfig()
    quality: QualityConfig | None = QualityConfig()
    augment: Any = None
    augment_copies: int = 0
    dtype: str = "float16"
    compression: str = ""
    shard_bytes: int = 256 * 2**20
    seed: int = 0
    channels: int = 1

    def __post_init__(self) -> None:
        if self.channels not in CHANNELS:
            raise ConfigError(f"shard channels must be 1 (mono) or 2 (stereo), got {self.channels!r}")

    def to_dict(self) -> dict[str, Any]:
        # "channels" only when stereo: mono settings (and so the cache keys and folders of
        # shards prepared before stereo existed) stay what they were
        stereo = {"channels": self.channels} if self.channels != 1 else {}
        return {
            "crops": self.crops.to_dict(),
            "quality": self.quality.to_dict() if self.quality else None,
            "augment": self.augment.to_dict() if self.augment is not None else None,
            "augment_copies": self.augment_copies if self.augment is not None else 0,
            "dtype": self.dtype,
            "compression": self.compression,
            "shard_bytes": self.shard_bytes,
            "seed": self.seed,
            **stereo,
        }


AUGMENT_EXCERPT_VERSION = 2


def settings_key(stft: SpectrogramConfig, config: PrepareConfig) -> str:
    """A short hash of everything that changes a shard folder's content."""
    settings = {"stft": stft.to_dict(), **config.to_dict()}
    if settings["augment"] is not None:
        # augmented copies are cut from a longer excerpt since the time-stretch fix: folders
        # written before it hold zero-padded copies and must not be reused
        settings["augment_excerpt"] = AUGMENT_EXCERPT_VERSION
    blob = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")[:40] or "track"


def _augmented(audio: dict[str, np.ndarray], offset: int, rate: int, config: PrepareConfig, crop_id: str,
               stems: Sequence[str]):
    """The augmented copies of the crop at `offset` of a track's `audio` (stems, (samples,) or
    (samples, channels) each: the effects of a stem are the same on each of its channels).

    A time stretch that speeds the crop up consumes more than a crop of audio, so each copy is
    made from the longer excerpt `augment.source_length` asks for and cut to the crop length:
    no zero tail. Near the end of the track the excerpt ends with the track and starts earlier
    than the crop (recorded as "source_offset"); only a track shorter than the excerpt can still
    be padded (recorded as "padded").
    """
    from mss_tf.data.augment import augmented_copies, source_length

    crop = config.crops.crop_samples(rate)
    n_samples = len(audio[stems[0]])
    need = min(source_length(crop, config.augment), n_samples)
    start = min(offset, n_samples - need)
    excerpt = {s: audio[s][start : start + need] for s in stems}
    copies = augmented_copies(excerpt, rate, config.augment, config.augment_copies, config.seed, crop_id, length=crop)
    return [(stems, {**params, "source_offset": int(start)}) for stems, params in copies]


def prepare_track(
    index: int, track: Any, out_dir: str, stft_config: SpectrogramConfig, config: PrepareConfig,
    source: DataSource | None = None,
) -> dict[str, Any]:
    """Write one track's shards into `out_dir`; returns its record (shards, counts, statistics).
    `source` reads the track (default: a MUSDB18 track with its four stems)."""
    import tensorflow as tf

    from mss_tf.audio.spectrogram import stft

    source = source or DataSource(Path(out_dir))
    names = source.stems  # the order of every example's stems
    out = Path(out_dir)
    audio, rate = source.load(track, sample_rate=stft_config.sample_rate, mono=config.channels == 1)
    audio = _with_channels(audio, config.channels, source.where(track))  # (samples,) each, or (samples, 2) in stereo
    stats = QualityStats(config.quality) if config.quality else None
    waves, offsets, params = [], [], []
    for offset, crop in track_crops(audio, rate, config.crops):
        if config.quality is not None:
            result = assess({s: crop[s] for s in names}, rate, config.quality)
            stats.add(result, track.name)  # type: ignore[union-attr]
            if not result.kept:
                continue
        versions = [({s: crop[s] for s in names}, None)]
        if config.augment is not None and config.augment_copies > 0:
            versions += _augmented(audio, offset, rate, config, f"{track.name}@{offset}", names)
        for stems, applied in versions:
            mixture = stems["mixture"] if "mixture" in stems else crop["mixture"]
            wave = np.stack([mixture] + [stems[s] for s in names]).astype(np.float32)  # (1 + S, samples[, C])
            waves.append(wave if wave.ndim == 2 else wave.transpose(0, 2, 1))  # (1 + S, [C,] samples)
            offsets.append(offset)
            params.append(applied)
    writer = ShardWriter(out, stft_config, config.dtype, config.shard_bytes, config.compression,
                         prefix=f"{index:04d}-{_slug(track.name)}", channels=config.channels, stems=names)
    with writer:
        for start in range(0, len(waves), 8):  # STFT a few crops at a time: bounded memory
            spec = stft(tf.constant(np.stack(waves[start : start + 8])), stft_config).numpy()  # (n, 1 + S, [C,] T, F)
            for i, example in enumerate(spec):
                j = start + i
                writer.add(example[1:], example[0], track.name, offsets[j], augmentation=params[j])
        shards = writer.finish()
    return {
        "index": index,
        "track": track.name,
        "source": source.fingerprint(track),
        "shards": shards,
        "n_examples": len(waves),
        "n_augmented": sum(p is not None for p in params),
        "n_frames": stft_config.n_frames(config.crops.crop_samples(rate)),
        "quality": stats.to_dict() if stats else None,
        "augmentation": [p for p in params if p is not None],
    }


def _with_channels(audio: dict[str, np.ndarray], channels: int, where: str) -> dict[str, np.ndarray]:
    """Loaded (samples, channels) sources -> (samples,) for mono shards, (samples, 2) for stereo
    ones (a mono file is duplicated into both channels; more than two channels is an error)."""
    if channels == 1:
        return {name: wave[:, 0] for name, wave in audio.items()}
    found = next(iter(audio.values())).shape[1]
    if found == 1:
        return {name: np.repeat(wave, 2, axis=1) for name, wave in audio.items()}
    if found != 2:
        raise DataError(f"{where}: {found} audio channels; stereo shards take 1 or 2")
    return audio


def _record_path(out: Path, index: int) -> Path:
    return out / DONE / f"{index:04d}.json"


def _finished(out: Path, index: int, track: Any, source: DataSource) -> dict[str, Any] | None:
    path = _record_path(out, index)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if record.get("track") != track.name or record.get("source") != source.fingerprint(track):
        return None  # another track, or its audio changed since
    for shard in record.get("shards", []):
        file = out / shard["file"]
        if not file.is_file() or file.stat().st_size != shard["bytes"]:
            return None
    return record


def _clear_track(out: Path, index: int) -> None:
    """Remove whatever an interrupted run left of a track (its shards and temporary files)."""
    prefix = f"{index:04d}-"
    for path in out.iterdir():
        name = path.name.lstrip(".")
        if path.is_file() and name.startswith(prefix):
            path.unlink()


def prepare_split(
    tracks: Sequence[Any],
    out_dir: str | Path,
    stft_config: SpectrogramConfig,
    config: PrepareConfig = PrepareConfig(),
    workers: int = 1,
    skip_bad: bool = False,
    progress: bool = True,
    extra: dict[str, Any] | None = None,
    source: DataSource | None = None,
) -> dict[str, Any]:
    """Prepare (or finish preparing) one split's shard folder and write its manifest.

    Tracks (of `source`; default MUSDB18 tracks) run in `workers` processes; a bad track raises
    DataError naming its file unless `skip_bad`, which records it under "skipped" in the
    manifest and goes on.
    """
    out = Path(out_dir)
    source = source or DataSource(out)
    data = {"data": source.spec()} if source.spec() is not None else {}  # MUSDB18 settings stay as they were
    settings = {"stft": stft_config.to_dict(), **config.to_dict(), "tracks": [t.name for t in tracks], **data}
    settings_file = out / DONE / SETTINGS
    if out.exists() and (not settings_file.is_file() or json.loads(settings_file.read_text()) != settings):
        ours = (out / DONE).is_dir() or (out / MANIFEST).is_file() or not any(out.iterdir())
        if not ours:
            raise ShardError(f"{out}: exists and is not an mss-tf shard folder; choose another --out")
        shutil.rmtree(out)  # prepared with other settings: start over
    (out / DONE).mkdir(parents=True, exist_ok=True)
    if not settings_file.is_file():
        atomic_write(settings_file, json.dumps(settings, indent=2))
    (out / MANIFEST).unlink(missing_ok=True)

    records: dict[int, dict[str, Any]] = {}
    todo = []
    for index, track in enumerate(tracks):
        record = _finished(out, index, track, source)
        if record is not None:
            records[index] = record
        else:
            _clear_track(out, index)
            todo.append((index, track))

    bar = tqdm(total=len(tracks), initial=len(records), desc=f"prepare {out.name}", unit="track", disable=not progress)

    def done(index: int, track: Any, record: dict[str, Any]) -> None:
        atomic_write(_record_path(out, index), json.dumps(record))
        records[index] = record
        bar.update()

    def failed(index: int, track: Any, error: Exception) -> None:
        if not skip_bad or not isinstance(error, DataError):
            raise error
        bar.write(f"skipping bad track {track.name}: {error}")
        done(index, track, {"index": index, "track": track.name, "skipped": str(error), "shards": [], "n_examples": 0})

    try:
        if workers <= 1 or len(todo) <= 1:
            for index, track in todo:
                try:
                    record = prepare_track(index, track, str(out), stft_config, config, source)
                except DataError as error:
                    failed(index, track, error)
                    continue
                done(index, track, record)
        else:
            context = multiprocessing.get_context("spawn")  # TensorFlow is not fork-safe
            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
                futures = {pool.submit(prepare_track, i, t, str(out), stft_config, config, source): (i, t) for i, t in todo}
                try:
                    for future in concurrent.futures.as_completed(futures):
                        index, track = futures[future]
                        try:
                            record = future.result()
                        except DataError as error:
                            failed(index, track, error)
                            continue
                        done(index, track, record)
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
    finally:
        bar.close()
    return _write_manifest(out, stft_config, config, [records[i] for i in sorted(records)], {**(extra or {}), **data},
                           source.stems)


def _write_manifest(
    out: Path, stft_config: SpectrogramConfig, config: PrepareConfig, records: list[dict[str, Any]],
    extra: dict[str, Any] | None, stems: Sequence[str],
) -> dict[str, Any]:
    shards = [shard for record in records for shard in record["shards"]]
    n_examples = sum(record["n_examples"] for record in records)
    quality = None
    if config.quality is not None:
        stats = QualityStats(config.quality)
        for record in records:
            if record.get("quality"):
                stats.merge(QualityStats.from_dict(record["quality"]))
        quality = stats.to_dict()
    return write_manifest(
        out, stft_config, config.dtype, config.compression, shards, n_examples,
        sorted({record["n_frames"] for record in records if record["n_examples"]}),
        [record["track"] for record in records if record["n_examples"]],
        {
            "n_augmented": sum(record.get("n_augmented", 0) for record in records),
            "source_tracks": [record["track"] for record in records],
            "skipped": {record["track"]: record["skipped"] for record in records if "skipped" in record},
            "settings": config.to_dict(),
            "settings_key": settings_key(stft_config, config),
            "quality": quality,
            "audio_seconds": n_examples * config.crops.seconds,
            **(extra or {}),
        },
        channels=config.channels, stems=stems,
    )


def prepare_dataset(
    root: str | Path | DataSource,
    out_dir: str | Path,
    stft_config: SpectrogramConfig,
    config: PrepareConfig = PrepareConfig(),
    splits: Sequence[str] = ("train", "valid"),
    workers: int = 1,
    skip_bad: bool = False,
    progress: bool = True,
) -> Path:
    """Shard folders `out_dir/<split>` for each split of a multitrack folder (`root`: a MUSDB18
    folder, or any layout as a `DataSource`); cached and resumable.

    A split whose manifest already records the same settings, source tracks and source files
    (names, sizes, modification times: `DataSource.fingerprint`) is kept as it is; otherwise
    the tracks whose files changed are prepared again. The valid split is never augmented.
    """
    out_dir = Path(out_dir)
    source = root if isinstance(root, DataSource) else DataSource(Path(root))
    root = source.root
    for split in splits:
        tracks = source.split_tracks(split, strict=not skip_bad)  # lenient listing: bad tracks get skipped
        split_config = config if split == "train" else dataclasses.replace(config, augment=None, augment_copies=0)
        split_dir = out_dir / split
        fingerprint = hashlib.sha256(json.dumps([source.fingerprint(t) for t in tracks]).encode()).hexdigest()
        if (split_dir / MANIFEST).is_file():
            try:
                manifest = read_manifest(split_dir, stft_config)
            except ShardError:
                manifest = {}
            if (manifest.get("settings") == split_config.to_dict()
                    and manifest.get("source_tracks") == [t.name for t in tracks]
                    and manifest.get("source_files") == fingerprint
                    and manifest.get("data") == source.spec()):
                continue
        prepare_split(
            tracks, split_dir, stft_config, split_config, workers, skip_bad, progress,
            extra={"split": split, "source_root": str(Path(root).resolve()), "source_files": fingerprint},
            source=source,
        )
    return out_dir


def check_shards(shard_dir: str | Path) -> list[dict[str, Any]]:
    """Verify a shard folder (or a folder of split folders) against its manifest(s).

    Checks every listed shard's size and checksum and decodes every example; raises ShardError
    naming the first bad file. Returns a summary per split folder.
    """
    from mss_tf.data.shards import iterate_examples

    shard_dir = Path(shard_dir)
    if not shard_dir.is_dir():
        raise ShardError(f"{shard_dir}: no such shard folder")
    folders = [shard_dir] if (shard_dir / MANIFEST).is_file() else sorted(
        p for p in shard_dir.iterdir() if (p / MANIFEST).is_file()
    )
    if not folders:
        raise ShardError(f"{shard_dir}: no manifest.json here or in its subfolders")
    summary = []
    for folder in folders:
        manifest = read_manifest(folder, verify_checksums=True)
        count = 0
        try:
            for example in iterate_examples(folder, manifest):
                if not np.all(np.isfinite(example["mixture"])):
                    raise ShardError(f"{folder}: example {count} of track {example['track'].decode()} is not finite")
                count += 1
        except Exception as exc:  # a corrupt record surfaces as a TensorFlow error
            if isinstance(exc, ShardError):
                raise
            raise ShardError(f"{folder}: unreadable record after {count} examples ({type(exc).__name__})") from None
        if count != manifest["n_examples"]:
            raise ShardError(f"{folder}: {count} examples, manifest says {manifest['n_examples']}")
        summary.append({"folder": str(folder), "examples": count, "shards": len(manifest["shards"]),
                        "bytes": manifest["bytes"], "channels": manifest_channels(manifest)})
    return summary
