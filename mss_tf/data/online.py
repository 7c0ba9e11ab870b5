"""Online augmentation inside tf.data, on STFT examples ``(stems (S, T, F, 2), mixture (T, F, 2))``,
or stereo ones ``(stems (S, C, T, F, 2), mixture (C, T, F, 2))``.

The STFT is linear, so stem-level changes (gain, dropout, remixing) are done on the stored
complex spectrograms (real/imaginary in the last axis) and the mixture is recomputed as the sum
of the stems. Every draw is per stem, never per channel: a stereo stem keeps its left and right
together (one gain, one dropout, one source crop in a remix; the mixture's masks cover every
channel), so a stereo example stays a real stereo mix. Steps, in the order :func:`apply_online`
runs them:

1. **Remix** (:func:`remix`): stems of different crops are recombined. The stream is grouped
   into windows of ``remix_group`` consecutive examples (``Dataset.batch``), each stem index
   gets its own random permutation within the window, and the window is unbatched again. This
   reads every example once (zipping S shuffled copies of the stream would read and parse the
   shards S times and throw away S-1 stems of each), uses every stem exactly once per window,
   and keeps stem *i* in slot *i* (a bass stays the bass). It draws from the crops in the
   window, so put it after the shuffle buffer; a permutation may leave a stem in its own
   example (probability 1/group per stem), as in Demucs. ``remix_p`` < 1 remixes only a
   random subset of each window and leaves the other examples' stems where they were. The
   window needs equal shapes, i.e. fixed-length crops (``train_frames``).
2. **Gain** (:func:`random_gain`): each stem scaled by ``10 ** (g / 20)``, g uniform in
   ``[-gain_db, +gain_db]`` dB.
3. **Stem dropout** (:func:`stem_dropout`): each stem zeroed with probability ``dropout_p``
   (0.1, as in the BSRNN paper). Targets may be dropped too (by default every stem is
   droppable): a silent target with a mixture that lacks it teaches the model to output
   silence, which real songs need (no vocals in an intro, no bass in a break); restrict with
   ``dropout_stems``. An example whose every stem would be dropped keeps all of them (an
   all-silent mixture teaches nothing and breaks ratio losses); so with every stem droppable
   the realised rate is ``p - p**S`` (0.0999 for p=0.1, S=4).
4. **Mixture** = sum of the stems, if any of the steps above is enabled (otherwise the stored
   mixture is kept).
5. **SpecAugment masks** on the mixture only (the model input; the targets stay whole):
   ``n_freq_masks`` frequency bands and ``n_time_masks`` frame runs, zeroed through the
   tensorflow-io adapter :mod:`mss_tf.audio.specaugment` (the same mask on real and imaginary
   parts). After masking, the mixture is no longer the sum of the stems, on purpose.

Randomness: every element gets its own stateless key, a pure function of the seed and the
element's position in the stream (:func:`element_seeds`: ``(seed * SALTS + step salt, index)``;
remix windows are keyed by window index), split per step with
``tf.random.experimental.stateless_split``. With a seed the output depends only on the seed and
the upstream order, not on thread scheduling; iterating the dataset again gives the same values;
each element of a repeated stream still gets fresh values; and a stream started at position
``start`` (a resumed training run) continues exactly where an uninterrupted one would be. Without
a seed the seeds are random and the masks use the tfio ops when that backend is selected (they cannot
be seeded, see :mod:`mss_tf.audio.specaugment`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import tensorflow as tf

from mss_tf.audio import specaugment
from mss_tf.data.shards import STEMS
from mss_tf.errors import ConfigError
from mss_tf.utils import dataclass_from_dict

__all__ = [
    "OnlineAugmentConfig",
    "apply_online",
    "augment_example",
    "element_seeds",
    "mix",
    "random_gain",
    "remix",
    "remix_group",
    "spec_masks",
    "stem_dropout",
]


@dataclasses.dataclass(frozen=True)
class OnlineAugmentConfig:
    """Which online augmentations run, and their parameters.

    Args:
        remix: recombine stems of different crops (see the module doc).
        remix_group: examples per remix window (>= 2); more mixes more widely but holds more
            examples in memory.
        remix_p: fraction of the examples of a window whose stems are remixed.
        gain: random gain per stem.
        gain_db: gain range, uniform in [-gain_db, +gain_db] dB.
        dropout: stem dropout.
        dropout_p: probability of zeroing each droppable stem.
        dropout_stems: names of the stems that may be dropped (None: all, targets included).
        freq_mask: SpecAugment frequency masks on the mixture.
        freq_mask_param: exclusive maximum width of a frequency mask in bins.
        n_freq_masks: frequency masks per example.
        time_mask: SpecAugment time masks on the mixture.
        time_mask_param: exclusive maximum width of a time mask in frames.
        n_time_masks: time masks per example.
    """

    remix: bool = True
    remix_group: int = 16
    remix_p: float = 1.0
    gain: bool = True
    gain_db: float = 10.0
    dropout: bool = True
    dropout_p: float = 0.1
    dropout_stems: tuple[str, ...] | None = None
    freq_mask: bool = False
    freq_mask_param: int = 64
    n_freq_masks: int = 1
    time_mask: bool = False
    time_mask_param: int = 16
    n_time_masks: int = 1

    def __post_init__(self) -> None:
        if self.remix_group < 2:
            raise ConfigError(f"online remix_group must be >= 2, got {self.remix_group}")
        for name in ("remix_p", "dropout_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"online {name} must be in [0, 1], got {getattr(self, name)}")
        if self.gain_db < 0:
            raise ConfigError(f"online gain_db must be >= 0, got {self.gain_db}")
        for name in ("freq_mask_param", "n_freq_masks", "time_mask_param", "n_time_masks"):
            if int(getattr(self, name)) < 0:
                raise ConfigError(f"online {name} must be >= 0, got {getattr(self, name)}")
        if self.dropout_stems is not None:
            stems = (self.dropout_stems,) if isinstance(self.dropout_stems, str) else tuple(self.dropout_stems)
            if not stems or not all(isinstance(s, str) and s for s in stems):
                raise ConfigError(f"online dropout_stems must be stem names, got {self.dropout_stems!r}")
            object.__setattr__(self, "dropout_stems", stems)  # checked against the data's stems in apply_online

    @classmethod
    def none(cls) -> "OnlineAugmentConfig":
        """Every step disabled."""
        return cls(remix=False, gain=False, dropout=False, freq_mask=False, time_mask=False)

    @property
    def changes_stems(self) -> bool:
        return self.remix or (self.gain and self.gain_db > 0) or (self.dropout and self.dropout_p > 0)

    @property
    def enabled(self) -> bool:
        return self.changes_stems or self.masks_enabled

    @property
    def masks_enabled(self) -> bool:
        return (self.freq_mask and self.n_freq_masks > 0 and self.freq_mask_param > 0) or (
            self.time_mask and self.n_time_masks > 0 and self.time_mask_param > 0
        )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if data["dropout_stems"] is not None:
            data["dropout_stems"] = list(data["dropout_stems"])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "OnlineAugmentConfig":
        return dataclass_from_dict(cls, data, "online augmentation", tuples=["dropout_stems"])


# --------------------------------------------------------------------------- single steps


def mix(stems: tf.Tensor, axis: int = 0) -> tf.Tensor:
    """Mixture STFT of stems ``(S, [C,] T, F, 2)``: their sum over the stem axis `axis`."""
    return tf.reduce_sum(stems, axis=axis)


def _per_stem(values: tf.Tensor, stems: tf.Tensor) -> tf.Tensor:
    """(S,) values shaped to broadcast over stems (S, ...): the same value on every channel and bin."""
    return tf.reshape(values, [-1] + [1] * (stems.shape.rank - 1))


def random_gain(stems: tf.Tensor, gain_db: float, seed: tf.Tensor) -> tf.Tensor:
    """Scale each stem of ``(S, [C,] T, F, 2)`` by a gain uniform in [-gain_db, +gain_db] dB (one
    gain per stem, shared by its channels)."""
    n_stems = tf.shape(stems)[0]
    db = tf.random.stateless_uniform(tf.stack([n_stems]), seed, -float(gain_db), float(gain_db))
    return stems * _per_stem(tf.pow(10.0, db / 20.0), stems)


def stem_dropout(
    stems: tf.Tensor, p: float, seed: tf.Tensor, droppable: Sequence[int] | None = None
) -> tf.Tensor:
    """Zero each droppable stem of ``(S, [C,] T, F, 2)`` (all its channels) with probability `p`.

    `droppable`: stem indices that may be dropped (None: all). If every stem would be dropped,
    none is.
    """
    n_stems = stems.shape[0]
    if n_stems is None:
        raise ConfigError("stem_dropout needs a static number of stems")
    drop = tf.random.stateless_uniform([n_stems], seed) < p
    if droppable is not None:
        drop = tf.logical_and(drop, tf.constant([i in set(droppable) for i in range(n_stems)]))
    drop = tf.logical_and(drop, tf.logical_not(tf.reduce_all(drop)))  # never silence every stem
    return tf.where(_per_stem(drop, stems), tf.zeros([], stems.dtype), stems)


def spec_masks(mixture: tf.Tensor, config: OnlineAugmentConfig, seed: tf.Tensor | None) -> tf.Tensor:
    """The enabled SpecAugment masks on a ``([C,] T, F, 2)`` mixture (None seed: unseeded, tfio if
    selected); a stereo mixture gets the same masks on both channels."""
    if mixture.shape.rank == 4:  # (C, T, F, 2): the channels join real/imaginary as mask channels
        folded = tf.reshape(tf.transpose(mixture, [1, 2, 0, 3]), tf.concat([tf.shape(mixture)[1:3], [-1]], 0))  # (T, F, 2C)
        masked = spec_masks(folded, config, seed)
        unfolded = tf.reshape(masked, tf.concat([tf.shape(mixture)[1:3], tf.shape(mixture)[:1], [2]], 0))  # (T, F, C, 2)
        return tf.transpose(unfolded, [2, 0, 1, 3])  # (C, T, F, 2)
    n_freq = int(config.n_freq_masks) if config.freq_mask else 0
    n_time = int(config.n_time_masks) if config.time_mask else 0
    seeds = None if seed is None else tf.random.experimental.stateless_split(seed, max(1, n_freq + n_time))
    for i in range(n_freq):
        mixture = specaugment.freq_mask(mixture, config.freq_mask_param, None if seeds is None else seeds[i])
    for i in range(n_time):
        mixture = specaugment.time_mask(mixture, config.time_mask_param, None if seeds is None else seeds[n_freq + i])
    return mixture


def remix_group(stems: tf.Tensor, seed: tf.Tensor, p: float = 1.0) -> tf.Tensor:
    """Permute each stem index independently across a window ``(K, S, [C,] T, F, 2)`` of examples
    (a stem moves with all its channels).

    Output ``[j, s] = stems[perm_s[j], s]``. With ``p`` < 1 only a random subset of the K
    examples (each with probability p) takes part; the others keep their own stems.
    """
    n_stems = stems.shape[1]
    if n_stems is None:
        raise ConfigError("remix needs a static number of stems")
    k = tf.shape(stems)[0]
    seeds = tf.random.experimental.stateless_split(seed, n_stems + 1)
    index = tf.range(k)
    if p >= 1.0:
        selected_index = index
    else:
        selected = tf.random.stateless_uniform(tf.stack([k]), seeds[n_stems]) < p
        selected_index = tf.boolean_mask(index, selected)
    out = []
    for s in range(n_stems):
        keys = tf.random.stateless_uniform(tf.shape(selected_index), seeds[s])
        shuffled = tf.gather(selected_index, tf.argsort(keys))
        perm = tf.tensor_scatter_nd_update(index, selected_index[:, None], shuffled)
        out.append(tf.gather(stems[:, s], perm))
    return tf.stack(out, axis=1)


def remix(
    ds: tf.data.Dataset, group_size: int = 16, seed: int | None = None, p: float = 1.0, start: int = 0
) -> tf.data.Dataset:
    """Remix an unbatched ``(stems, mixture)`` stream; the mixture becomes the sum of the new stems.

    Windows of `group_size` consecutive examples (the last one may be shorter) are remixed by
    :func:`remix_group` and unbatched, so the stream keeps its element structure and length.
    `start` is the stream position of the first element (a multiple of `group_size`): window w
    of the whole stream draws its permutations from the key of index w.
    """
    if group_size < 2:
        raise ConfigError(f"remix group_size must be >= 2, got {group_size}")
    if start % group_size:
        raise ConfigError(f"a remixed stream must start at a window boundary (a multiple of {group_size}), got {start}")
    windows = ds.map(lambda stems, mixture: stems).batch(group_size)
    windows = tf.data.Dataset.zip((windows, element_seeds(seed, start // group_size, REMIX_SALT)))

    def remix_window(stems: tf.Tensor, key: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        stems = remix_group(stems, key, p)
        return stems, mix(stems, axis=1)

    windows = windows.map(remix_window, num_parallel_calls=tf.data.AUTOTUNE, deterministic=_deterministic(seed))
    return windows.unbatch()


# --------------------------------------------------------------------------- entry points


def augment_example(
    stems: tf.Tensor, mixture: tf.Tensor, config: OnlineAugmentConfig, seed: tf.Tensor, seeded: bool = True,
    names: Sequence[str] = STEMS,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Gain, dropout, mixture and masks (steps 2-5) on one example, with a shape-[2] stateless seed.

    ``seeded=False`` lets the masks use the unseeded (tfio) path; `names` are the stems' names in order.
    """
    seeds = tf.random.experimental.stateless_split(seed, 3)
    if config.gain and config.gain_db > 0:
        stems = random_gain(stems, config.gain_db, seeds[0])
    if config.dropout and config.dropout_p > 0:
        droppable = None if config.dropout_stems is None else [list(names).index(s) for s in config.dropout_stems]
        stems = stem_dropout(stems, config.dropout_p, seeds[1], droppable)
    if config.changes_stems:
        mixture = mix(stems)
    if config.masks_enabled:
        mixture = spec_masks(mixture, config, seeds[2] if seeded else None)
    return stems, mixture


def apply_online(
    ds: tf.data.Dataset, config: OnlineAugmentConfig, seed: int | None = None, start: int = 0,
    stems: Sequence[str] = STEMS,
) -> tf.data.Dataset:
    """Apply the enabled online augmentations to an unbatched ``(stems, mixture)`` dataset.

    Args:
        ds: elements ``(stems (S, [C,] T, F, 2), mixture ([C,] T, F, 2))`` float32, S static (4 in
            shards), the channel axis C in stereo streams only; with remixing, T and F must be
            equal across examples (fixed-length crops).
        config: which steps run.
        seed: makes the output deterministic (given a deterministic input order).
        start: the stream position of the first element of `ds` (a resumed run starts its
            stream where it stopped); with remixing, a multiple of ``remix_group``.
        stems: the names of the S stems, in order (a shard folder's manifest "stems"): what
            ``dropout_stems`` names (ConfigError for a name not among them).

    Returns:
        The same structure, shapes and dtypes.
    """
    if not config.enabled:
        return ds
    unknown = [s for s in config.dropout_stems or () if s not in stems]
    if unknown and config.dropout:
        raise ConfigError(f"online dropout_stems {unknown} are not stems of the data (it has: {list(stems)})")
    if config.remix:
        ds = remix(ds, config.remix_group, seed, config.remix_p, start)
    per_example = (config.gain and config.gain_db > 0) or (config.dropout and config.dropout_p > 0)
    if not (per_example or config.masks_enabled):
        return ds  # remix alone: its mixture is already the sum of the stems
    ds = tf.data.Dataset.zip((ds, element_seeds(seed, start, AUGMENT_SALT)))
    seeded = seed is not None
    return ds.map(
        lambda example, key: augment_example(example[0], example[1], config, key, seeded, tuple(stems)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=_deterministic(seed),
    )


# --------------------------------------------------------------------------- seeds


# Salts keep the streams of different random steps apart: the key of element i of step k is
# (seed * SALTS + k, i), so no two steps (nor two seeds) share a key.
SALTS = 8
CROP_SALT, REMIX_SALT, AUGMENT_SALT = 0, 1, 2


def element_seeds(seed: int | None, start: int = 0, salt: int = 0) -> tf.data.Dataset:
    """An endless stream of shape-[2] int64 stateless seeds, one per element index from `start`.

    Element i gets the key ``(seed * SALTS + salt, i)``: a pure function of the seed and the
    element's position in the stream, so a stream restarted at position `start` (a resumed
    training run) draws exactly what the uninterrupted stream drew there. Zip it into a stream
    (``Dataset.zip((ds, element_seeds(seed)))``) to give each element its own seed for
    ``tf.random.stateless_*`` ops: unlike seeded stateful ops in a parallel ``map``, the values
    do not depend on thread scheduling. Without a seed, a random one is drawn.
    """
    if seed is None:
        seed = random_seed()
    base = tf.constant(int(seed) * SALTS + int(salt), tf.int64)
    return tf.data.Dataset.range(int(start), tf.int64.max).map(lambda i: tf.stack([base, i]))


def random_seed() -> int:
    """A fresh random seed (for unseeded streams)."""
    import secrets

    return secrets.randbits(31)


def _deterministic(seed: int | None) -> bool | None:
    return True if seed is not None else None
