"""tf.data pipeline streaming shard examples into (mixture, targets) training batches."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import tensorflow as tf

from mss_tf.audio.spectrogram import SpectrogramConfig
from mss_tf.data import shards
from mss_tf.data.crops import random_crop_frames
from mss_tf.data.online import CROP_SALT, SALTS, OnlineAugmentConfig, apply_online, element_seeds, random_seed
from mss_tf.errors import ConfigError, ShardError

PASS_SALT = 7  # the salt of the per-pass file order and shuffle (online.SALTS keeps it apart)
MIN_SHUFFLE = 16  # examples the shuffle holds however large they are


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """How examples are streamed.

    Args:
        batch_size: examples per batch.
        train_frames: random time crop length in STFT frames (None keeps whole examples).
        shuffle_buffer: at most this many examples are held for shuffling ...
        shuffle_bytes: ... and at most this many bytes of them (serialised; at least
            MIN_SHUFFLE examples): 6 s BSRNN examples (44.1 kHz, 1025 bins, float16) are 10.1 MiB
            each, so the default 512 MiB holds 50 of them (25 stereo ones: twice the bytes);
            6 s U-Net examples (1.8 MiB) fill the 256 slots. See `shuffle_size`.
        augment: online augmentation of training streams (remix, gain, stem dropout,
            SpecAugment masks); None streams the stored examples unchanged.
        cycle_length: shard files read at once, one example from each in turn (each track has
            files of its own, so a shuffle window, and the remix windows drawn from it, mixes
            this many songs).
    """

    batch_size: int = 4
    train_frames: int | None = None
    shuffle_buffer: int = 256
    shuffle_bytes: int = 512 * 2**20
    augment: OnlineAugmentConfig | None = None
    cycle_length: int = 16


def shuffle_size(config: PipelineConfig, example_bytes: int) -> int:
    """Examples in one shuffle window: `config.shuffle_buffer`, fewer when they would exceed
    `config.shuffle_bytes`, but never fewer than MIN_SHUFFLE (nor than 1)."""
    by_bytes = int(config.shuffle_bytes) // max(1, int(example_bytes))
    return max(1, min(int(config.shuffle_buffer), max(MIN_SHUFFLE, by_bytes)))


def make_dataset(
    shard_dir: str | Path,
    stft: SpectrogramConfig,
    targets: Sequence[str],
    config: PipelineConfig,
    training: bool = True,
    seed: int | None = None,
    start: int = 0,
    channels: int | None = None,
) -> tf.data.Dataset:
    """Stream `(mixture, targets)` batches: (B, T, F, 2) and (B, n_targets, T, F, 2) float32 from
    mono shards, (B, C, T, F, 2) and (B, n_targets, C, T, F, 2) from stereo ones.

    `channels` is the model's channel count: shards of another count are refused (ConfigError);
    None takes the shards as they are.

    Training streams repeat forever, shuffle, crop randomly in time and drop the last partial
    batch; evaluation streams read each example once in file order from its first frame.

    A training stream is a pure function of (seed, position): it is a sequence of passes over
    the shards, pass p reading the files in an order and through a shuffle buffer seeded by
    (seed, p), and example i of the stream cropped and augmented with keys derived from
    (seed, i) (:func:`mss_tf.data.online.element_seeds`). `start` is the position of the first
    example to yield (a resumed run passes global step x batch size): the stream skips the
    serialized records before it (at most one pass is read, nothing is parsed) and then yields
    exactly what an uninterrupted stream would. Without a seed a random one is drawn.
    """
    manifest = shards.read_manifest(shard_dir, stft, targets, channels=channels)
    time_axis = 1 if shards.manifest_channels(manifest) > 1 else 0  # of the mixture; the stems' is the next
    files = shards.shard_files(shard_dir, manifest)
    target_index = [manifest["stems"].index(t) for t in targets]
    compression = manifest["compression"] or None
    cycle_length = max(1, min(config.cycle_length, len(files)))

    def read(names: tf.data.Dataset) -> tf.data.Dataset:
        # sequential interleave: the parallel one prefetches about 3 records from each of
        # 3 x cycle_length files (over 1 GB of BSRNN examples at 16 files); parsing is parallel below
        return names.interleave(
            lambda f: tf.data.TFRecordDataset(f, compression_type=compression), cycle_length=cycle_length,
        )

    if not training:
        ds = read(tf.data.Dataset.from_tensor_slices(files))
        ds = ds.map(lambda r: shards.parse_example(r, manifest), num_parallel_calls=tf.data.AUTOTUNE)
        train_frames = config.train_frames
        if train_frames is not None:
            ds = ds.map(lambda ex: (ex["stems"][..., :train_frames, :, :], ex["mixture"][..., :train_frames, :, :]))
        else:
            ds = ds.map(lambda ex: (ex["stems"], ex["mixture"]))
        ds = ds.map(lambda stems, mixture: (mixture, tf.gather(stems, target_index, axis=0)))
        return ds.batch(config.batch_size).prefetch(tf.data.AUTOTUNE)

    if seed is None:
        seed = random_seed()
    if start < 0:
        raise ConfigError(f"stream position must be >= 0, got {start}")
    group = config.augment.remix_group if config.augment is not None and config.augment.enabled and config.augment.remix else 1
    aligned = start - start % group  # remix windows are keyed by window index: begin at one
    n_examples = int(manifest["n_examples"])
    if n_examples <= 0:
        raise ShardError(f"{shard_dir}: the manifest lists no examples")
    file_names = tf.constant(files)
    base = tf.constant(int(seed) * SALTS + PASS_SALT, tf.int64)
    shuffle_window = shuffle_size(config, shards.example_bytes(manifest))

    def one_pass(p: tf.Tensor) -> tf.data.Dataset:
        """Pass p: files in a random order, read interleaved, records permuted within windows of
        `shuffle_size` examples (stateless keys from (seed, p, window): no shuffle state to carry)."""
        key = tf.stack([base, p])
        order = tf.argsort(tf.random.stateless_uniform([len(files)], key))
        records = read(tf.data.Dataset.from_tensor_slices(tf.gather(file_names, order)))

        def permute(window_index: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
            noise = tf.random.stateless_uniform(tf.shape(window), tf.random.experimental.stateless_fold_in(key, window_index))
            return tf.gather(window, tf.argsort(noise))

        return records.batch(shuffle_window).enumerate().map(permute).unbatch()

    first_pass, skip = divmod(aligned, n_examples)
    ds = one_pass(tf.constant(first_pass, tf.int64)).skip(skip).concatenate(
        tf.data.Dataset.range(first_pass + 1, tf.int64.max).flat_map(one_pass)
    )
    ds = ds.map(lambda r: shards.parse_example(r, manifest), num_parallel_calls=tf.data.AUTOTUNE)

    train_frames = config.train_frames

    def crop(example: dict[str, tf.Tensor], key: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        stems, mixture = example["stems"], example["mixture"]  # (S, [C,] T, F, 2), ([C,] T, F, 2)
        if train_frames is None:
            return stems, mixture
        return random_crop_frames(stems, mixture, train_frames, key, time_axis=time_axis)

    ds = tf.data.Dataset.zip((ds, element_seeds(seed, aligned, CROP_SALT))).map(
        crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    if config.augment is not None:
        ds = apply_online(ds, config.augment, seed, aligned, manifest["stems"])
    ds = ds.skip(start - aligned)
    ds = ds.map(
        lambda stems, mixture: (mixture, tf.gather(stems, target_index, axis=0)),  # ([C,] T, F, 2), (n, [C,] T, F, 2)
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    ds = ds.batch(config.batch_size, drop_remainder=True)
    options = tf.data.Options()
    options.deterministic = True
    # under MultiWorkerMirroredStrategy every worker runs this pipeline and keeps its share of
    # the elements (the passes are built inside flat_map, so file-level sharding cannot apply)
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def validation_dataset(
    shard_dir: str | Path,
    stft: SpectrogramConfig,
    targets: Sequence[str],
    batch_size: int,
    channels: int | None = None,
) -> tf.data.Dataset:
    """The validation set a training run scores every epoch: every stored crop of every
    validation track, whole (all its frames, not a training-length piece), in the fixed order of
    `make_dataset`'s evaluation stream (a crop of each shard file in turn), no augmentation,
    batches of `batch_size` (the last one partial).

    It is the same set every epoch and covers each validation track as the shards do (crops of
    `crop_seconds` at 50% overlap from the start of the track, those the quality filter kept):
    each moment of a track past its first crop hop is scored in two crops, so a score does not
    hinge on where a crop boundary falls. Batches are (mixture, targets) as `make_dataset` streams them.
    """
    return make_dataset(shard_dir, stft, targets, PipelineConfig(batch_size=int(batch_size)), training=False,
                        channels=channels)


def distribute(dataset: tf.data.Dataset, strategy: tf.distribute.Strategy | None = None) -> tf.data.Dataset:
    """Spread a batched stream over a `tf.distribute` strategy's replicas.

    The global batch of `dataset` is split across replicas (each gets batch / replicas);
    with the default strategy the dataset is returned unchanged.
    """
    strategy = strategy or tf.distribute.get_strategy()
    if strategy.num_replicas_in_sync == 1 and not isinstance(strategy, tf.distribute.MirroredStrategy):
        return dataset
    return strategy.experimental_distribute_dataset(dataset)
