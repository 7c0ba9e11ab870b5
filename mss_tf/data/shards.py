"""TFRecord shards of precomputed complex STFTs (four stems + mixture) and their manifest.

A shard folder holds mono or stereo STFTs (`manifest["channels"]`, 1 when a manifest predates
the field): a mono example is stems (4, T, F, 2) and mixture (T, F, 2), a stereo one stems
(4, 2, T, F, 2) and mixture (2, T, F, 2), the channel axis where a stereo model takes it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import tensorflow as tf

from mss_tf import TARGETS
from mss_tf.audio.spectrogram import SpectrogramConfig
from mss_tf.errors import ConfigError, ShardError
from mss_tf.utils import atomic_write

MANIFEST = "manifest.json"
FORMAT = "mss-tf-shards"
FORMAT_VERSION = 1
STEMS = TARGETS  # MUSDB18's shards store its four stems in this order; other data records its own (manifest "stems")
DTYPES = {"float16": np.float16, "float32": np.float32}
CHANNELS = (1, 2)  # mono or stereo STFTs


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def spectrogram_to_array(spec: np.ndarray | tf.Tensor) -> np.ndarray:
    """Complex (..., frames, bins) -> float32 (..., frames, bins, 2) real/imaginary."""
    spec = np.asarray(spec)
    return np.stack([spec.real, spec.imag], axis=-1).astype(np.float32)


class ShardWriter:
    """Writes examples into numbered TFRecord shards, then the manifest, all atomically.

    Each shard is written under a temporary name and renamed when closed; `manifest.json` is
    written last, so a folder without a manifest (an interrupted run) is never read.

    Args:
        out_dir: folder to create (may exist, but must not hold a manifest yet).
        stft: STFT config of every example.
        dtype: storage dtype of the real/imaginary values, "float16" or "float32".
        shard_bytes: target size of one shard before a new one is started.
        compression: "" or "GZIP".
        prefix: shard file name prefix.
        channels: 1 (mono examples) or 2 (stereo: a channel axis before the frames).
        stems: names of the stems of every example, in order (default MUSDB18's four).
    """

    def __init__(
        self,
        out_dir: str | Path,
        stft: SpectrogramConfig,
        dtype: str = "float16",
        shard_bytes: int = 256 * 2**20,
        compression: str = "",
        prefix: str = "shard",
        channels: int = 1,
        stems: Sequence[str] = STEMS,
    ) -> None:
        if channels not in CHANNELS:
            raise ConfigError(f"shard channels must be 1 (mono) or 2 (stereo), got {channels!r}")
        if dtype not in DTYPES:
            raise ConfigError(f"shard dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if compression not in ("", "GZIP"):
            raise ConfigError(f"shard compression must be '' or 'GZIP', got {compression!r}")
        self.out_dir = Path(out_dir)
        self.stft = stft
        self.dtype = dtype
        self.shard_bytes = shard_bytes
        self.compression = compression
        self.prefix = prefix
        self.channels = int(channels)
        self.stems = tuple(stems)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.shards: list[dict[str, Any]] = []
        self.tracks: list[str] = []
        self.n_examples = 0
        self.n_frames: set[int] = set()
        self._writer: tf.io.TFRecordWriter | None = None
        self._current: dict[str, Any] | None = None

    def _open_shard(self) -> None:
        name = f"{self.prefix}-{len(self.shards):05d}.tfrecord" + (".gz" if self.compression else "")
        self._current = {"file": name, "examples": 0, "bytes": 0}
        tmp = self.out_dir / f".{name}.tmp"
        options = tf.io.TFRecordOptions(compression_type=self.compression or None)
        self._writer = tf.io.TFRecordWriter(str(tmp), options)

    def _close_shard(self) -> None:
        if self._writer is None or self._current is None:
            return
        self._writer.close()
        name = self._current["file"]
        tmp = self.out_dir / f".{name}.tmp"
        final = self.out_dir / name
        os.replace(tmp, final)
        self._current["bytes"] = final.stat().st_size
        self._current["sha256"] = _sha256(final)
        self.shards.append(self._current)
        self._writer, self._current = None, None

    def add(
        self, stems: np.ndarray, mixture: np.ndarray, track: str, offset: int, augmentation: dict | None = None
    ) -> None:
        """Add one example: stems (S, [C,] frames, bins) complex and mixture ([C,] frames, bins)
        complex, the channel axis C present for a stereo writer only.

        `augmentation` records the offline augmentation applied to this example (None: original).
        """
        stems = np.asarray(stems)
        mixture = np.asarray(mixture)
        if stems.shape[0] != len(self.stems) or stems.shape[1:] != mixture.shape:
            raise ShardError(f"example from {track}: stems {stems.shape} do not match mixture {mixture.shape}")
        expected = "(frames, bins)" if self.channels == 1 else f"({self.channels}, frames, bins)"
        if mixture.ndim != (2 if self.channels == 1 else 3) or (self.channels > 1 and mixture.shape[0] != self.channels):
            raise ShardError(f"example from {track}: mixture {mixture.shape}, a {self.channels}-channel writer takes {expected}")
        if mixture.shape[-1] != self.stft.n_bins:
            raise ShardError(f"example from {track}: {mixture.shape[-1]} bins, STFT config has {self.stft.n_bins}")
        store = DTYPES[self.dtype]
        features = {
            "stems": _bytes_feature(spectrogram_to_array(stems).astype(store).tobytes()),
            "mixture": _bytes_feature(spectrogram_to_array(mixture).astype(store).tobytes()),
            "n_frames": _int_feature(mixture.shape[-2]),
            "track": _bytes_feature(track.encode()),
            "offset": _int_feature(offset),
            "augmentation": _bytes_feature(json.dumps(augmentation).encode()),
        }
        record = tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()
        if self._writer is None:
            self._open_shard()
        assert self._writer is not None and self._current is not None
        self._writer.write(record)
        self._current["examples"] += 1
        self._current["bytes"] += len(record)
        self.n_examples += 1
        self.n_frames.add(int(mixture.shape[-2]))
        if track not in self.tracks:
            self.tracks.append(track)
        if self._current["bytes"] >= self.shard_bytes:
            self._close_shard()

    def finish(self) -> list[dict[str, Any]]:
        """Finish the last shard; returns the list of complete shards (file, examples, bytes, sha256)."""
        self._close_shard()
        return list(self.shards)

    def close(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Finish the last shard and write the manifest; returns the manifest."""
        self.finish()
        return write_manifest(
            self.out_dir, self.stft, self.dtype, self.compression, self.shards,
            self.n_examples, sorted(self.n_frames), self.tracks, extra, channels=self.channels,
        )

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None and self._writer is not None:
            self._writer.close()
            (self.out_dir / f".{self._current['file']}.tmp").unlink(missing_ok=True)  # type: ignore[index]
            self._writer = None


def write_manifest(
    out_dir: Path,
    stft: SpectrogramConfig,
    dtype: str,
    compression: str,
    shards: list[dict[str, Any]],
    n_examples: int,
    n_frames: list[int],
    tracks: list[str],
    extra: dict[str, Any] | None = None,
    channels: int = 1,
    stems: Sequence[str] = STEMS,
) -> dict[str, Any]:
    """Write a shard folder's `manifest.json` (atomically, last) and return it; `stems` are the
    names of every example's stems in order (the targets a run on this folder may pick from)."""
    if n_examples == 0:
        raise ShardError(f"{out_dir}: no examples were written (every crop rejected, every track skipped or too short)")
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "stft": stft.to_dict(),
        "channels": int(channels),
        "dtype": dtype,
        "compression": compression,
        "stems": list(stems),
        "n_examples": n_examples,
        "n_frames": n_frames,
        "bytes": sum(s["bytes"] for s in shards),
        "shards": shards,
        "tracks": tracks,
        **(extra or {}),
    }
    atomic_write(Path(out_dir) / MANIFEST, json.dumps(manifest, indent=2))
    return manifest


def _bytes_feature(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int_feature(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def read_manifest(
    shard_dir: str | Path,
    stft: SpectrogramConfig | None = None,
    targets: Sequence[str] | None = None,
    verify_checksums: bool = False,
    channels: int | None = None,
) -> dict[str, Any]:
    """Load and check a shard folder's manifest against the STFT config, targets and channel
    count wanted (None: any); a folder of another channel count is a ConfigError naming both."""
    shard_dir = Path(shard_dir)
    path = shard_dir / MANIFEST
    if not path.is_file():
        raise ShardError(f"{shard_dir}: no {MANIFEST} (not a shard folder, or its preparation did not finish)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ShardError(f"{path}: not valid JSON ({exc})") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise ShardError(f"{path}: not an mss-tf shard manifest of version {FORMAT_VERSION}")
    if stft is not None:
        found = SpectrogramConfig.from_dict(manifest["stft"])
        if found != stft:
            raise ShardError(f"{shard_dir}: shards have STFT config {found.to_dict()}, the model needs {stft.to_dict()}")
    if channels is not None and manifest_channels(manifest) != int(channels):
        raise ConfigError(
            f"{shard_dir}: shards hold {_describe_channels(manifest_channels(manifest))} STFTs, the model takes "
            f"{_describe_channels(int(channels))} input (prepare its shards with prepare_musdb.py --channels {int(channels)})"
        )
    if targets is not None:
        missing = [t for t in targets if t not in manifest["stems"]]
        if missing:
            raise ShardError(f"{shard_dir}: shards hold stems {', '.join(manifest['stems'])}, not target(s) "
                             f"{', '.join(missing)}; prepare shards from data that has them")
    for shard in manifest["shards"]:
        file = shard_dir / shard["file"]
        if not file.is_file():
            raise ShardError(f"{file}: listed in the manifest but missing")
        if file.stat().st_size != shard["bytes"]:
            raise ShardError(f"{file}: size {file.stat().st_size} bytes, manifest says {shard['bytes']}")
        if verify_checksums and _sha256(file) != shard["sha256"]:
            raise ShardError(f"{file}: checksum does not match the manifest")
    return manifest


def manifest_channels(manifest: dict[str, Any]) -> int:
    """Channels of a shard folder's examples: 1 (mono; also every manifest written before the field) or 2."""
    return int(manifest.get("channels", 1))


def _describe_channels(channels: int) -> str:
    return {1: "mono (1-channel)", 2: "stereo (2-channel)"}.get(channels, f"{channels}-channel")


def example_bytes(manifest: dict[str, Any]) -> int:
    """Serialised size of a shard folder's longest example: its stems' and mixture's STFT values
    for every channel (the few bytes of track name, offset and augmentation record aside),
    whatever the compression."""
    n_bins = SpectrogramConfig.from_dict(manifest["stft"]).n_bins
    values = max(manifest["n_frames"]) * n_bins * 2 * (len(manifest["stems"]) + 1)  # real and imaginary
    values *= manifest_channels(manifest)
    return values * np.dtype(DTYPES[manifest["dtype"]]).itemsize


def shard_files(shard_dir: str | Path, manifest: dict[str, Any]) -> list[str]:
    return [str(Path(shard_dir) / shard["file"]) for shard in manifest["shards"]]


def parse_example(record: tf.Tensor, manifest: dict[str, Any]) -> dict[str, tf.Tensor]:
    """One serialized example -> {"stems": (4, [C,] T, F, 2), "mixture": ([C,] T, F, 2)} float32
    (the channel axis C in stereo folders only)."""
    spec = {
        "stems": tf.io.FixedLenFeature([], tf.string),
        "mixture": tf.io.FixedLenFeature([], tf.string),
        "n_frames": tf.io.FixedLenFeature([], tf.int64),
        "track": tf.io.FixedLenFeature([], tf.string),
        "offset": tf.io.FixedLenFeature([], tf.int64),
        "augmentation": tf.io.FixedLenFeature([], tf.string, default_value="null"),
    }
    parsed = tf.io.parse_single_example(record, spec)
    dtype = tf.float16 if manifest["dtype"] == "float16" else tf.float32
    n_bins = SpectrogramConfig.from_dict(manifest["stft"]).n_bins
    n_frames = tf.cast(parsed["n_frames"], tf.int32)
    stems = tf.io.decode_raw(parsed["stems"], dtype)
    channel_axis = [manifest_channels(manifest)] if manifest_channels(manifest) > 1 else []
    stems = tf.reshape(stems, [len(manifest["stems"]), *channel_axis, n_frames, n_bins, 2])
    mixture = tf.reshape(tf.io.decode_raw(parsed["mixture"], dtype), [*channel_axis, n_frames, n_bins, 2])
    return {
        "stems": tf.cast(stems, tf.float32),
        "mixture": tf.cast(mixture, tf.float32),
        "track": parsed["track"],
        "offset": parsed["offset"],
        "augmentation": parsed["augmentation"],
    }


def iterate_examples(shard_dir: str | Path, manifest: dict[str, Any] | None = None) -> Iterable[dict[str, np.ndarray]]:
    """Every example of a shard folder in file order, as numpy arrays (for checks and tests)."""
    manifest = manifest or read_manifest(shard_dir)
    ds = tf.data.TFRecordDataset(shard_files(shard_dir, manifest), compression_type=manifest["compression"] or None)
    for record in ds:
        yield {k: v.numpy() for k, v in parse_example(record, manifest).items()}
