"""Supervised NMF baseline: per-source dictionaries learnt offline, activations solved per mixture.

Training learns, for each source s, a non-negative dictionary W_s (bins x rank) from the
magnitude spectrograms of that source alone, by beta-divergence multiplicative updates
(Fevotte & Idier 2011). Separation keeps W = [W_vocals | W_drums | ...] fixed, estimates the
activations H of the mixture magnitude V ~ W H by multiplicative updates on H only, and
filters the complex mixture with soft masks

    mask_s = (W_s H_s)^p / sum_k (W_k H_k)^p,    estimate_s = mask_s * mixture STFT,

so the mixture phase is kept and, for every p, the estimates of all sources sum to the mixture.

Tensor layout is that of every separator in mss_tf (see unet.py): the mixture comes in as
float32 (batch, frames, bins, 2) real/imaginary and the estimates go out as
(batch, targets, frames, bins, 2). Internally spectrograms are kept frames-first, so
V is (..., frames, bins), W is (bins, components) and H is (..., frames, components) and
the model W H reads `H @ W^T`.

The updates use the majorisation-minimisation exponent gamma(beta) (1/(2-beta) below 1,
1 on [1, 2], 1/(beta-1) above 2), which makes the objective non-increasing at every step
for every beta, including Itakura-Saito (beta=0). The objective is D_beta(V + eps | WH + eps);
the offset keeps every divergence finite on silent bins without breaking that guarantee.

A fitted model is saved as one .npz (`save`/`load`, `nmf.npz` in a run directory). Separation
is a fixed-count `tf.while_loop` over the dictionary variable, so a run exports to a SavedModel
like the neural models (`train.py --model nmf --export`, `python -m mss_tf.export RUN OUT`).
"""

from __future__ import annotations

import functools
import json
import math
from numbers import Real
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from mss_tf import TARGETS
from mss_tf.errors import CheckpointError, ConfigError, DataError
from mss_tf.utils import atomic_path

FORMAT = "mss-tf-nmf"
FORMAT_VERSION = 1
NMF_FILE = "nmf.npz"  # file name `save`/`load` use when given a directory
REST = "rest"  # hidden source for the stems that are not targets (trained, never output)
BETA_NAMES = {"is": 0.0, "itakura-saito": 0.0, "kl": 1.0, "kullback-leibler": 1.0, "euclidean": 2.0, "eu": 2.0}
_TINY = 1e-30  # floor of update denominators and column norms (representable in float32)
_SILENT_FRAME = 1e-5  # training frames whose mean magnitude per bin is below this are skipped
FIT_BLOCK = 25  # fit iterations per graph call (the progress bar moves once per block)


def resolve_beta(beta: float | str) -> float:
    """A beta-divergence parameter from a number or a name ("kl", "euclidean", "is", ...)."""
    if isinstance(beta, str):
        try:
            return BETA_NAMES[beta.strip().lower()]
        except KeyError:
            raise ConfigError(
                f"unknown NMF beta {beta!r}: give a number (0 = Itakura-Saito, 1 = KL, 2 = Euclidean) "
                f"or one of {', '.join(sorted(BETA_NAMES))}"
            ) from None
    if isinstance(beta, bool) or not isinstance(beta, Real) or not math.isfinite(float(beta)):
        raise ConfigError(
            f"NMF beta must be a finite number or one of {', '.join(sorted(BETA_NAMES))}, got {beta!r}"
        )
    return float(beta)


def mu_exponent(beta: float) -> float:
    """Exponent gamma(beta) of the multiplicative updates that guarantees a monotone descent."""
    if beta < 1.0:
        return 1.0 / (2.0 - beta)
    if beta > 2.0:
        return 1.0 / (beta - 1.0)
    return 1.0


def _last(x: tf.Tensor) -> int:
    return len(x.shape) - 1


def reconstruct(h: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
    """W H in frames-first layout: h (..., frames, K), w (bins, K) -> (..., frames, bins)."""
    return tf.tensordot(h, w, [[_last(h)], [1]])


def beta_divergence(v: tf.Tensor, y: tf.Tensor, beta: float) -> tf.Tensor:
    """Sum over all entries of d_beta(v | y), for strictly positive v and y."""
    if beta == 0.0:
        ratio = v / y
        return tf.reduce_sum(ratio - tf.math.log(ratio) - 1.0)
    if beta == 1.0:
        return tf.reduce_sum(v * tf.math.log(v / y) - v + y)
    if beta == 2.0:
        return 0.5 * tf.reduce_sum(tf.square(v - y))
    y_power = tf.pow(y, beta - 1.0)
    terms = tf.pow(v, beta) + (beta - 1.0) * y * y_power - beta * v * y_power
    return tf.reduce_sum(terms) / (beta * (beta - 1.0))


def _weighted(v: tf.Tensor, y: tf.Tensor, beta: float) -> tuple[tf.Tensor, tf.Tensor | None]:
    """(v * y^(beta-2), y^(beta-1)); None for the second when it is 1 (KL)."""
    if beta == 1.0:
        return v / y, None
    if beta == 2.0:
        return v, y
    if beta == 0.0:
        inverse = 1.0 / y
        return v * tf.square(inverse), inverse
    y_power = tf.pow(y, beta - 2.0)
    return v * y_power, y_power * y


def _apply_ratio(x: tf.Tensor, numerator: tf.Tensor, denominator: tf.Tensor, gamma: float) -> tf.Tensor:
    ratio = numerator / tf.maximum(denominator, _TINY)
    return x * (ratio if gamma == 1.0 else tf.pow(ratio, gamma))


def update_activations(v: tf.Tensor, w: tf.Tensor, h: tf.Tensor, beta: float, eps: float) -> tf.Tensor:
    """One multiplicative update of h (..., frames, K) for v (..., frames, bins) ~ h w^T, w fixed."""
    y = reconstruct(h, w) + eps  # (..., frames, bins)
    weighted_v, y_power = _weighted(v, y, beta)
    numerator = tf.tensordot(weighted_v, w, [[_last(v)], [0]])  # (..., frames, K)
    if y_power is None:
        denominator = tf.reduce_sum(w, axis=0)  # (K,)
    else:
        denominator = tf.tensordot(y_power, w, [[_last(v)], [0]])  # (..., frames, K)
    return _apply_ratio(h, numerator, denominator, mu_exponent(beta))


def update_dictionary(
    v: tf.Tensor, w: tf.Tensor, h: tf.Tensor, beta: float, eps: float
) -> tuple[tf.Tensor, tf.Tensor]:
    """One multiplicative update of w (bins, K) for v (frames, bins) ~ h w^T, then unit-L1 columns.

    The column norms move into h, so W H (and the objective) is unchanged by the normalisation.
    """
    y = reconstruct(h, w) + eps  # (frames, bins)
    weighted_v, y_power = _weighted(v, y, beta)
    numerator = tf.tensordot(weighted_v, h, [[0], [0]])  # (bins, K)
    if y_power is None:
        denominator = tf.reduce_sum(h, axis=0)  # (K,)
    else:
        denominator = tf.tensordot(y_power, h, [[0], [0]])  # (bins, K)
    w = _apply_ratio(w, numerator, denominator, mu_exponent(beta))
    norms = tf.maximum(tf.reduce_sum(w, axis=0), _TINY)  # (K,)
    return w / norms, h * norms


@functools.lru_cache(maxsize=None)
def _fit_block(beta: float, eps: float) -> Callable[..., tuple[tf.Tensor, tf.Tensor, tf.Tensor]]:
    """A graph running `n` alternating updates (H, then W) of v (frames, bins) ~ h w^T.

    One graph per (beta, eps), traced once for every shape; it returns w, h and the n losses.
    """
    matrix = tf.TensorSpec([None, None], tf.float64)

    @tf.function(input_signature=[matrix, matrix, matrix, tf.TensorSpec([], tf.int32)], autograph=False)
    def block(v: tf.Tensor, w: tf.Tensor, h: tf.Tensor, n: tf.Tensor) -> tuple[tf.Tensor, ...]:
        def body(i: tf.Tensor, w: tf.Tensor, h: tf.Tensor, losses: tf.TensorArray) -> tuple[Any, ...]:
            h = update_activations(v, w, h, beta, eps)
            w, h = update_dictionary(v, w, h, beta, eps)
            return i + 1, w, h, losses.write(i, beta_divergence(v, reconstruct(h, w) + eps, beta))

        losses = tf.TensorArray(tf.float64, size=n)
        _, w, h, losses = tf.while_loop(lambda i, *_: i < n, body, [tf.constant(0), w, h, losses])
        return w, h, losses.stack()

    return block


def mixture_magnitude(mixture: tf.Tensor) -> tf.Tensor:
    """(..., frames, bins, 2) real/imaginary -> (..., frames, bins) magnitude, float32."""
    mixture = tf.cast(mixture, tf.float32)
    return tf.sqrt(tf.reduce_sum(tf.square(mixture), axis=-1))


class FrameReservoir:
    """A uniform random sample of at most `capacity` spectrogram frames from a stream (algorithm R)."""

    def __init__(self, capacity: int, rng: np.random.Generator) -> None:
        self.capacity = capacity
        self.rng = rng
        self.frames: np.ndarray | None = None  # (capacity, bins) once the first frames arrive
        self.filled = 0
        self.seen = 0

    def add(self, frames: np.ndarray) -> None:
        """Offer frames (n, bins) to the sample."""
        if self.frames is None:
            self.frames = np.zeros((self.capacity, frames.shape[1]), np.float32)
        take = min(len(frames), self.capacity - self.filled)
        self.frames[self.filled : self.filled + take] = frames[:take]
        self.filled += take
        self.seen += take
        rest = frames[take:]
        if len(rest):
            index = np.arange(self.seen, self.seen + len(rest))  # global index of each frame
            slots = self.rng.integers(0, index + 1)  # frame i replaces slot j < capacity w.p. capacity/(i+1)
            keep = slots < self.capacity
            slots, rest = slots[keep], rest[keep]
            # sequential semantics: when two frames draw the same slot the later one wins
            _, last = np.unique(slots[::-1], return_index=True)
            last = len(slots) - 1 - last
            self.frames[slots[last]] = rest[last]
            self.seen += len(index)

    def sample(self) -> np.ndarray:
        return np.zeros((0, 0), np.float32) if self.frames is None else self.frames[: self.filled]


class NMFSeparator:
    """Supervised NMF separator with the call signature of the neural models.

    Not a Keras model: it has no gradient-trained weights. `fit`, given an iterable of training
    examples (as the neural models are given a dataset), learns the dictionaries, `save`/`load`
    keep them in one .npz, and calling the object on a (B, T, F, 2) mixture STFT returns
    (B, n_targets, T, F, 2) float32, eagerly or inside a `tf.function` (the activation solve is a
    `tf.while_loop`).

    Args:
        targets: sources to estimate, a subset of the data's stems, in output order. When they
            are not all of them, the remaining stems are modelled by one hidden "rest" dictionary
            learnt from their sum, so they compete for the mixture but are not returned.
        rank: dictionary atoms per source; an int, or a mapping target -> int (a "rest" key
            sets the hidden source's rank, else it takes the largest target rank).
        beta: beta-divergence of both the fit and the activation solve; a number
            (0 Itakura-Saito, 1 Kullback-Leibler, 2 Euclidean, anything finite in between)
            or a name from BETA_NAMES.
        fit_iterations: multiplicative updates (of H, then W) when learning each dictionary.
        separate_iterations: multiplicative updates of H on each mixture.
        mask_power: exponent p of the soft masks (1 ratio of magnitudes, 2 Wiener-like).
        eps: offset added to V and W H (keeps silent bins finite) and floor of the masks.
        max_frames: frames per source kept (uniform random sample) for learning its dictionary.
        seed: seed of the frame sample and of the dictionary initialisation.
        name: model name (the preset name in the registry).
        stems: the stems of the data it learns from (None: MUSDB18's four); decides whether
            there is a hidden "rest" source.
    """

    def __init__(
        self,
        targets: Sequence[str] = TARGETS,
        rank: int | Mapping[str, int] = 32,
        beta: float | str = 1.0,
        fit_iterations: int = 200,
        separate_iterations: int = 100,
        mask_power: float = 1.0,
        eps: float = 1e-10,
        max_frames: int = 10000,
        seed: int = 0,
        name: str = "nmf",
        stems: Sequence[str] | None = None,
    ) -> None:
        if isinstance(targets, str):
            targets = [targets]
        self.targets = [str(t) for t in targets]
        self.stems = [str(s) for s in stems] if stems is not None else None
        known = self.stems if self.stems is not None else list(TARGETS)
        unknown = [t for t in self.targets if t not in known or t == REST]
        if not self.targets or unknown or len(set(self.targets)) != len(self.targets):
            raise ConfigError(
                f"NMF targets must be distinct names from {known}, got {list(self.targets)}"
            )
        self.sources = self.targets + ([REST] if set(known) - set(self.targets) else [])
        self.ranks = self._resolve_ranks(rank)
        self.rank = {k: int(v) for k, v in rank.items()} if isinstance(rank, Mapping) else int(rank)
        self.beta = resolve_beta(beta)
        self.fit_iterations = _positive_int("fit_iterations", fit_iterations)
        self.separate_iterations = _positive_int("separate_iterations", separate_iterations)
        self.max_frames = _positive_int("max_frames", max_frames)
        self.mask_power = _positive_float("mask_power", mask_power)
        self.eps = _positive_float("eps", eps)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"NMF seed must be an integer, got {seed!r}")
        self.seed = seed
        self.name = str(name)
        self.n_components = sum(self.ranks.values())
        self.fit_info: dict[str, Any] = {}
        self._fitted = False
        self._n_bins: int | None = None
        # shape-less, so a refit with another STFT size reuses the variable any tf.function captured
        self._dictionary = tf.Variable(
            tf.zeros([0, self.n_components]), shape=tf.TensorShape(None), trainable=False, name="dictionary"
        )
        self._separate_graph = tf.function(
            self._separate, input_signature=[tf.TensorSpec([None, None, None, 2], tf.float32)]
        )

    def _resolve_ranks(self, rank: int | Mapping[str, int]) -> dict[str, int]:
        if isinstance(rank, Mapping):
            extra = [k for k in rank if k not in self.sources]
            missing = [t for t in self.targets if t not in rank]
            if extra or missing:
                raise ConfigError(
                    f"NMF rank mapping must name exactly the targets {self.targets} (plus optionally "
                    f"{REST!r}); unknown {extra}, missing {missing}"
                )
            ranks = {t: _positive_int(f"rank[{t!r}]", rank[t]) for t in self.targets}
            if REST in self.sources:
                ranks[REST] = _positive_int(f"rank[{REST!r}]", rank.get(REST, max(ranks.values())))
            return ranks
        value = _positive_int("rank", rank)
        return {s: value for s in self.sources}

    # ----------------------------------------------------------------------------- state

    @property
    def fitted(self) -> bool:
        return self._fitted

    @property
    def n_bins(self) -> int | None:
        """Frequency bins of the learnt dictionaries (None before fit)."""
        return self._n_bins

    @property
    def dictionary(self) -> np.ndarray:
        """The concatenated dictionary W = [W_s for s in sources], (bins, components), a copy."""
        self._check_fitted()
        return self._dictionary.numpy().copy()

    @property
    def dictionaries(self) -> dict[str, np.ndarray]:
        """Each source's dictionary (bins, rank), unit-L1 columns; includes "rest" when present."""
        full = self.dictionary
        return {s: full[:, a:b] for s, (a, b) in self._slices().items()}

    def _slices(self) -> dict[str, tuple[int, int]]:
        bounds, start = {}, 0
        for source in self.sources:
            bounds[source] = (start, start + self.ranks[source])
            start += self.ranks[source]
        return bounds

    def _set_dictionary(self, dictionary: np.ndarray) -> None:
        dictionary = np.asarray(dictionary, np.float32)
        if dictionary.ndim != 2 or dictionary.shape[1] != self.n_components:
            raise ConfigError(
                f"NMF dictionary must be (bins, {self.n_components}), got {dictionary.shape}"
            )
        if not np.all(np.isfinite(dictionary)) or np.any(dictionary < 0):
            raise ConfigError("NMF dictionary must be finite and non-negative")
        self._dictionary.assign(dictionary)
        self._n_bins = int(dictionary.shape[0])
        self._fitted = True

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise ConfigError(
                f"NMF model {self.name!r} has no dictionaries yet: call fit(examples), "
                f"or load a saved one with NMFSeparator.load(path)"
            )

    def count_params(self) -> int:
        """Number of dictionary entries (bins x all components), the model's only parameters."""
        self._check_fitted()
        return int(self._n_bins * self.n_components)  # type: ignore[operator]

    def get_config(self) -> dict[str, Any]:
        return {
            "targets": list(self.targets),
            "rank": self.rank,
            "beta": self.beta,
            "fit_iterations": self.fit_iterations,
            "separate_iterations": self.separate_iterations,
            "mask_power": self.mask_power,
            "eps": self.eps,
            "max_frames": self.max_frames,
            "seed": self.seed,
            "name": self.name,
            **({"stems": list(self.stems)} if self.stems is not None else {}),  # MUSDB18's: as before
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "NMFSeparator":
        return cls(**config)

    def with_config(self, **overrides: Any) -> "NMFSeparator":
        """A copy sharing these dictionaries with other separation settings (mask_power, beta,
        separate_iterations, eps, name): tune them without refitting."""
        fixed = [k for k in ("targets", "rank") if k in overrides and overrides[k] != self.get_config()[k]]
        if fixed:
            raise ConfigError(f"NMF {fixed} define the dictionaries; refit instead of overriding them")
        model = type(self).from_config({**self.get_config(), **overrides})
        if self._fitted:
            model.fit_info = dict(self.fit_info)
            model._set_dictionary(self._dictionary.numpy())
        return model

    @property
    def variables(self) -> list[tf.Variable]:
        """The dictionary variable (for wrappers that must track it, e.g. a SavedModel export)."""
        return [self._dictionary]

    @property
    def trainable_variables(self) -> list[tf.Variable]:
        """None: the dictionaries are fitted by `fit`, not by gradient descent."""
        return []

    def summary(self, print_fn: Any = print) -> None:
        """Print the configuration and dictionary sizes (the analogue of keras' summary)."""
        print_fn(f"NMFSeparator {self.name!r}: beta={self.beta:g}, mask power {self.mask_power:g}, "
                 f"{self.separate_iterations} activation updates per mixture")
        for source, rank in self.ranks.items():
            role = "" if source in self.targets else " (hidden, not returned)"
            print_fn(f"  {source:<8} rank {rank}{role}")
        if self._fitted:
            print_fn(f"  {self._n_bins} bins: {self.count_params():,} dictionary entries")
        else:
            print_fn("  not fitted")

    # ----------------------------------------------------------------------------- training

    def fit(
        self,
        examples: Iterable[Mapping[str, Any]],
        max_frames: int | None = None,
        stems: Sequence[str] = TARGETS,
        seed: int | None = None,
        progress: bool = False,
        stft: Mapping[str, int] | None = None,
    ) -> dict[str, list[float]]:
        """Learn every source's dictionary from the stems of training examples.

        Args:
            examples: dicts with "stems" (n_stems, frames, bins, 2) real/imaginary STFTs in the
                order `stems` (`mss_tf.training.run` streams a shard folder's examples). Read
                once, streaming: only a random sample of `max_frames` frames per source is kept.
            max_frames: overrides the configured frame budget per source.
            stems: names of the stems in the examples, in order.
            seed: overrides the configured seed.
            progress: show a progress bar per source.
            stft: the examples' STFT config (`SpectrogramConfig.to_dict()`), recorded in fit_info
                and named in the error when a mixture of another size is separated.

        Returns:
            The beta-divergence after initialisation and after each iteration, per source (also
            kept in `fit_info["loss_history"]`); non-increasing by construction.
        """
        stems = list(stems)
        missing = [t for t in self.targets if t not in stems]
        if missing:
            raise ConfigError(f"NMF targets {missing} are not among the examples' stems {stems}")
        if bool(set(stems) - set(self.targets)) != (REST in self.sources):
            raise ConfigError(f"NMF built for stems {self.stems or list(TARGETS)}, the examples hold {stems} "
                              "(build it with stems= the data's stems)")
        budget = self.max_frames if max_frames is None else _positive_int("max_frames", max_frames)
        rng = np.random.default_rng(self.seed if seed is None else seed)
        reservoirs = {source: FrameReservoir(budget, rng) for source in self.sources}
        rest_index = [i for i, s in enumerate(stems) if s not in self.targets]
        n_bins, n_examples = None, 0
        for example in examples:
            spec = np.asarray(example["stems"], np.float32)  # (n_stems, frames, bins, 2)
            if spec.ndim != 4 or spec.shape[0] != len(stems) or spec.shape[-1] != 2:
                raise DataError(
                    f"NMF fit: example stems must be ({len(stems)}, frames, bins, 2), got {spec.shape}"
                )
            if n_bins is not None and spec.shape[2] != n_bins:
                raise DataError(f"NMF fit: examples mix {n_bins} and {spec.shape[2]} frequency bins")
            n_bins = spec.shape[2]
            n_examples += 1
            for source in self.sources:
                if source == REST:
                    complex_sum = spec[rest_index].sum(axis=0)  # (frames, bins, 2)
                    magnitude = np.sqrt(np.sum(np.square(complex_sum), axis=-1))
                else:
                    magnitude = np.sqrt(np.sum(np.square(spec[stems.index(source)]), axis=-1))
                active = magnitude.mean(axis=1) > _SILENT_FRAME  # (frames,)
                reservoirs[source].add(magnitude[active])
        if n_examples == 0:
            raise DataError("NMF fit: no training examples")
        dictionaries, history, frames = [], {}, {}
        for index, source in enumerate(self.sources):
            sample = reservoirs[source].sample()
            if len(sample) == 0:
                raise DataError(f"NMF fit: every training frame of {source!r} is silent")
            w, history[source] = self._fit_source(source, sample, rng, progress)
            dictionaries.append(w)
            frames[source] = {"used": int(len(sample)), "active": int(reservoirs[source].seen)}
        self._set_dictionary(np.concatenate(dictionaries, axis=1))
        self.fit_info = {
            "stft": dict(stft) if stft is not None else None,
            "examples": n_examples,
            "frames": frames,
            "loss_history": history,
        }
        return history

    def _fit_source(
        self, source: str, magnitudes: np.ndarray, rng: np.random.Generator, progress: bool
    ) -> tuple[np.ndarray, list[float]]:
        """Dictionary (bins, rank) and loss history for frames (n, bins); float64 throughout."""
        rank = self.ranks[source]
        beta, eps = self.beta, self.eps
        v = tf.constant(magnitudes.astype(np.float64) + eps)  # (n, bins)
        w0 = rng.uniform(0.1, 1.0, size=(magnitudes.shape[1], rank))
        w0 /= w0.sum(axis=0, keepdims=True)  # unit-L1 atoms
        scale = float(np.mean(magnitudes.sum(axis=1))) / rank / 0.55  # W H0 matches the mean frame L1
        h0 = rng.uniform(0.1, 1.0, size=(magnitudes.shape[0], rank)) * scale

        w, h = tf.constant(w0), tf.constant(h0)
        history = [float(beta_divergence(v, reconstruct(h, w) + eps, beta))]
        with tqdm(total=self.fit_iterations, desc=f"nmf {source}", disable=not progress, leave=False) as bar:
            while len(history) <= self.fit_iterations:
                block = min(FIT_BLOCK, self.fit_iterations + 1 - len(history))
                w, h, losses = _fit_block(beta, eps)(v, w, h, tf.constant(block))
                history.extend(float(x) for x in losses.numpy())
                bar.update(block)
        if not all(math.isfinite(x) for x in history):
            raise DataError(f"NMF fit of {source!r} diverged (non-finite loss); check the data")
        return w.numpy().astype(np.float32), history

    # ----------------------------------------------------------------------------- separation

    def _separate(self, mixture: tf.Tensor) -> tf.Tensor:
        """(B, T, F, 2) -> (B, n_targets, T, F, 2); graph-friendly (fixed-count tf.while_loop)."""
        v = mixture_magnitude(mixture) + self.eps  # (B, T, F)
        w = tf.reshape(tf.convert_to_tensor(self._dictionary), [-1, self.n_components])  # (F, K)
        # unit-L1 atoms: equal activations of sum_f V / K reproduce each frame's L1 norm
        h = tf.tile(tf.reduce_sum(v, axis=-1, keepdims=True) / self.n_components, [1, 1, self.n_components])
        beta, eps = self.beta, self.eps

        def body(i: tf.Tensor, h: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return i + 1, update_activations(v, w, h, beta, eps)

        _, h = tf.while_loop(
            lambda i, h: i < self.separate_iterations, body, [tf.constant(0), h]
        )  # h: (B, T, K)
        models = tf.stack(
            [reconstruct(h[..., a:b], w[:, a:b]) for a, b in self._slices().values()], axis=1
        )  # (B, sources, T, F)
        # softmax of p log(W_s H_s): exactly (W_s H_s)^p / sum_k (W_k H_k)^p, sums to 1 even on silence
        masks = tf.nn.softmax(self.mask_power * tf.math.log(models + eps), axis=1)
        masks = masks[:, : len(self.targets)]  # (B, targets, T, F)
        return masks[..., tf.newaxis] * mixture[:, tf.newaxis]  # (B, targets, T, F, 2)

    def __call__(self, mixture: tf.Tensor | np.ndarray, training: bool | None = False) -> tf.Tensor:
        """Separate mixture STFTs (B, T, F, 2) into (B, n_targets, T, F, 2) float32 (`training` ignored)."""
        self._check_fitted()
        mixture = tf.convert_to_tensor(mixture)
        shape = mixture.shape
        if shape.rank != 4 or shape[-1] != 2:
            raise ConfigError(f"NMF input must be (batch, frames, bins, 2) real/imaginary, got {shape}")
        if shape[2] is not None and shape[2] != self._n_bins:
            stft = self.fit_info.get("stft")
            raise ConfigError(
                f"mixture has {shape[2]} frequency bins, NMF model {self.name!r} was fitted on "
                f"{self._n_bins}" + (f" (STFT {stft})" if stft else "")
            )
        return self._separate_graph(tf.cast(mixture, tf.float32))

    def separate_spectrogram(self, mixture: tf.Tensor | np.ndarray) -> tf.Tensor:
        """Same as calling the model: (B, T, F, 2) -> (B, n_targets, T, F, 2)."""
        return self(mixture, training=False)

    # ----------------------------------------------------------------------------- files

    def save(self, path: str | Path) -> Path:
        """Write config and dictionaries to one .npz (into `path/nmf.npz` if `path` is a folder)."""
        self._check_fitted()
        path = Path(path)
        if path.is_dir():
            path = path / NMF_FILE
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "config": self.get_config(), "fit_info": self.fit_info}
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:  # a file object: numpy adds no ".npz"
            np.savez(handle, meta=np.array(json.dumps(meta)), dictionary=self._dictionary.numpy())
        return path

    @classmethod
    def load(cls, path: str | Path) -> "NMFSeparator":
        """Rebuild a fitted model from `save`'s file (or a folder holding `nmf.npz`)."""
        path = Path(path)
        if path.is_dir():
            path = path / NMF_FILE
        if not path.is_file():
            raise CheckpointError(f"{path}: no saved NMF model")
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                dictionary = data["dictionary"]
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path}: not a saved NMF model ({exc})") from None
        if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
            raise CheckpointError(f"{path}: not an {FORMAT} file of version {FORMAT_VERSION}")
        model = cls.from_config(meta["config"])
        model.fit_info = meta.get("fit_info", {})
        model._set_dictionary(dictionary)
        return model


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"NMF {name} must be a positive integer, got {value!r}")
    return int(value)


def _positive_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not (math.isfinite(value) and value > 0):
        raise ConfigError(f"NMF {name} must be a positive finite number, got {value!r}")
    return float(value)
