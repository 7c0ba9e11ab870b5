"""tf.data pipeline streaming shard examples into (mixture, targets) training batches."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import tensorflow as tf

from mss_tf.audio.spectrogram import SpectrogramConfig
from mss_tf.data import shards
from mss_tf.data.crops import random_crop_frames
from mss_tf.data.online import OnlineAugmentConfig, apply_online, element_seeds


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """How examples are streamed.

    Args:
        batch_size: examples per batch.
        train_frames: random time crop length in STFT frames (None keeps whole examples).
        shuffle_buffer: examples held for shuffling.
        augment: online augmentation of training streams (remix, gain, stem dropout,
            SpecAugment masks); None streams the stored examples unchanged.
        cycle_length: shard files read in parallel.
    """

    batch_size: int = 4
    train_frames: int | None = None
    shuffle_buffer: int = 256
    augment: OnlineAugmentConfig | None = None
    cycle_length: int = 4


def make_dataset(
    shard_dir: str | Path,
    stft: SpectrogramConfig,
    targets: Sequence[str],
    config: PipelineConfig,
    training: bool = True,
    seed: int | None = None,
) -> tf.data.Dataset:
    """Stream `(mixture, targets)` batches: (B, T, F, 2) and (B, n_targets, T, F, 2) float32.

    Training streams repeat forever, shuffle, crop randomly in time and drop the last partial
    batch; evaluation streams read each example once in file order from its first frame.
    A seed makes the order deterministic; without one, tf.data may reorder for speed.
    """
    manifest = shards.read_manifest(shard_dir, stft, targets)
    files = shards.shard_files(shard_dir, manifest)
    target_index = [manifest["stems"].index(t) for t in targets]
    compression = manifest["compression"] or None

    ds = tf.data.Dataset.from_tensor_slices(files)
    if training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type=compression),
        cycle_length=max(1, min(config.cycle_length, len(files))),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=not training or seed is not None,
    )
    if training:
        ds = ds.shuffle(config.shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.map(lambda r: shards.parse_example(r, manifest), num_parallel_calls=tf.data.AUTOTUNE)

    train_frames = config.train_frames

    def crop(example: dict[str, tf.Tensor], key: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        stems, mixture = example["stems"], example["mixture"]  # (S, T, F, 2), (T, F, 2)
        if train_frames is None:
            return stems, mixture
        if training:
            return random_crop_frames(stems, mixture, train_frames, key)
        return stems[:, :train_frames], mixture[:train_frames]

    ds = tf.data.Dataset.zip((ds, element_seeds(seed))).map(
        crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training or seed is not None
    )
    if training and config.augment is not None:
        ds = apply_online(ds, config.augment, None if seed is None else seed + 2)
    ds = ds.map(
        lambda stems, mixture: (mixture, tf.gather(stems, target_index, axis=0)),  # (T, F, 2), (n, T, F, 2)
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    ds = ds.batch(config.batch_size, drop_remainder=training)
    options = tf.data.Options()
    options.deterministic = not training or seed is not None
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def distribute(dataset: tf.data.Dataset, strategy: tf.distribute.Strategy | None = None) -> tf.data.Dataset:
    """Spread a batched stream over a `tf.distribute` strategy's replicas.

    The global batch of `dataset` is split across replicas (each gets batch / replicas);
    with the default strategy the dataset is returned unchanged.
    """
    strategy = strategy or tf.distribute.get_strategy()
    if strategy.num_replicas_in_sync == 1 and not isinstance(strategy, tf.distribute.MirroredStrategy):
        return dataset
    return strategy.experimental_distribute_dataset(dataset)
