"""The chunk plan and the model call on one chunk: how a track of any length becomes model calls.

`ChunkPlan` says where the chunks of a track start and how they are crossfaded; `separate_chunks`
is one model call on a batch of chunks (STFT -> model -> iSTFT), mono models channel by channel
and stereo models (`channels=2`) on both channels at once. Two overlap-add loops follow the plan,
summing in the same order: `OverlapAdd` in NumPy, streaming (every separator of this package, for
runs and exports alike), and `overlap_add_graph` in TensorFlow ops (an export's whole-track
signature, `mss_tf.export`). A caller with nothing but a per-chunk function (a LiteRT or ONNX
graph of one chunk) separates a track with `overlap_add(plan, function, waves, n_targets)`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from mss_tf.audio.spectrogram import SpectrogramConfig, istft, stft
from mss_tf.errors import ConfigError

# (k, channels, samples) chunks -> (k, targets, channels, samples) estimates: one model call
ChunkFunction = Callable[[np.ndarray], np.ndarray]


class _Python:
    """The plan's arithmetic on Python numbers (`tf` is the same on tensors, inside a graph)."""

    minimum, maximum = staticmethod(min), staticmethod(max)

    @staticmethod
    def where(condition: bool, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a if condition else b


def _ops(*values: Any) -> Any:
    return tf if any(tf.is_tensor(v) for v in values) else _Python


@dataclasses.dataclass(frozen=True)
class ChunkPlan:
    """How a track of any length is cut into model calls and put back together: the one plan of
    the in-process separators (`OverlapAdd`), the exported graph (`overlap_add_graph`) and any
    caller that has only a per-chunk function (`overlap_add(plan, function, waves, n_targets)`).

    A track of n samples is
      * n == 0: no chunk;
      * n <= chunk: one chunk, the whole track at its own length (never zero-padded), weight 1;
      * n > chunk: `n_chunks(n)` chunks of exactly `chunk` samples, chunk i starting at
        `start(i, n)` = i * step, except the last, which is the track's final `chunk` samples
        (it may overlap its neighbour by more than `overlap`), so every chunk is real signal.
        Chunk i is weighted by `window(i == 0, i == n_chunks - 1)`: Hann fades of `fade` samples
        towards its neighbours, none at the track's two ends. The output is the sum of the
        weighted estimates divided by the sum of the weights, summed in chunk order.

    `n_chunks`, `start` and `window` take Python numbers and return NumPy values, or take int32 /
    bool tensors and return tensors: the same code runs eagerly and traced inside a graph. A
    per-chunk function of a fixed chunk size (a LiteRT or ONNX graph) pads the one piece shorter
    than `chunk` (a whole track no longer than a chunk) and cuts its output back.

    Args:
        chunk: samples per chunk, >= 1.
        overlap: samples consecutive chunks share, 0 <= overlap < chunk.
    """

    chunk: int
    overlap: int

    def __post_init__(self) -> None:
        if not 0 <= int(self.overlap) < int(self.chunk):
            raise ConfigError(f"chunk {self.chunk} / overlap {self.overlap} samples: need 0 <= overlap < chunk")
        object.__setattr__(self, "chunk", int(self.chunk))
        object.__setattr__(self, "overlap", int(self.overlap))

    @classmethod
    def from_seconds(cls, chunk_seconds: float, overlap_seconds: float, sample_rate: int) -> "ChunkPlan":
        """The plan of `chunk_seconds` chunks overlapping by `overlap_seconds` at `sample_rate`."""
        if not (chunk_seconds > 0 and 0 <= overlap_seconds < chunk_seconds):
            raise ConfigError(f"chunk {chunk_seconds} s / overlap {overlap_seconds} s: need 0 <= overlap < chunk")
        return cls(max(1, round(chunk_seconds * sample_rate)), round(overlap_seconds * sample_rate))

    @property
    def step(self) -> int:
        """Samples between the starts of consecutive chunks (but the last)."""
        return self.chunk - self.overlap

    @property
    def fade(self) -> int:
        """Length of each crossfade: the overlap, at most half a chunk."""
        return min(self.overlap, self.chunk // 2)

    def n_chunks(self, n_samples: Any) -> Any:
        """Chunks of a track of `n_samples`: 0, 1, or 1 + ceil((n - chunk) / step)."""
        ops = _ops(n_samples)
        past_first = ops.maximum(n_samples - self.chunk, 0)  # samples after the first chunk
        return (past_first + self.step - 1) // self.step + ops.minimum(n_samples, 1)

    def start(self, index: Any, n_samples: Any) -> Any:
        """Where chunk `index` of a track of `n_samples` starts."""
        ops = _ops(index, n_samples)
        return ops.maximum(ops.minimum(index * self.step, n_samples - self.chunk), 0)

    def starts(self, n_samples: int) -> list[int]:
        """Where every chunk of a track of `n_samples` starts, in order."""
        return [self.start(i, n_samples) for i in range(self.n_chunks(n_samples))]

    def is_regular(self, index: Any, n_samples: Any) -> Any:
        """Whether chunk `index` starts at index * step and is not the last: true once more than
        its end has arrived, whatever the track's final length (streaming relies on it)."""
        return index * self.step + self.chunk < n_samples

    def window(self, first: Any, last: Any) -> Any:
        """float32 (chunk,) weights of the first / last / any other chunk of a track longer than
        one chunk (bools, or bool tensors in a graph)."""
        ops = _ops(first, last)
        return ops.where(first, self._ones, self._fade_in) * ops.where(last, self._ones, self._fade_out)

    @functools.cached_property
    def _ones(self) -> np.ndarray:
        return np.ones(self.chunk, np.float32)

    @functools.cached_property
    def _fade_in(self) -> np.ndarray:
        window = np.ones(self.chunk, np.float32)
        fade = self.fade
        window[:fade] = (0.5 - 0.5 * np.cos(np.pi * (np.arange(fade) + 0.5) / max(fade, 1))).astype(np.float32)
        return window

    @functools.cached_property
    def _fade_out(self) -> np.ndarray:
        return np.ascontiguousarray(self._fade_in[::-1])

    def to_dict(self) -> dict[str, int]:
        return {"chunk_samples": self.chunk, "overlap_samples": self.overlap}


def model_channels(model: Any) -> int:
    """Channels a model separates at once: its `channels` (BSRNN(channels=2), the RoFormers), else
    1, a mono model (the U-Net, NMF), which separates each channel of a track on its own."""
    return int(getattr(model, "channels", 1))


def separate_chunks(model: Any, stft_config: SpectrogramConfig, pieces: tf.Tensor) -> tf.Tensor:
    """One model call on a batch of chunks: (k, C, samples) float32 -> (k, targets, C, samples).

    A mono model takes (B, T, F, 2) STFTs: each channel of each chunk is one batch item. A stereo
    model (`model_channels` 2) takes (B, 2, T, F, 2) and returns (B, S, 2, T, F, 2), both channels
    at once; a mono chunk is duplicated to two channels and gets the mean of the two channel
    estimates; more than two channels fail here (`WaveformSeparator.check_channels` refuses them
    first). Estimates are float32 whatever the model computes in. TensorFlow ops only: the
    in-process separators trace it with `tf.function`, and an export holds it in its graph.
    """
    pieces = tf.convert_to_tensor(pieces, tf.float32)
    k, n_channels, n_samples = tf.unstack(tf.shape(pieces))
    stereo = model_channels(model) == 2
    if stereo:
        waves = tf.broadcast_to(pieces, [k, 2, n_samples])  # (k, 2, samples): a mono chunk duplicated
    else:
        waves = tf.reshape(pieces, [k * n_channels, n_samples])  # (k*C, samples)
    spec = stft(waves, stft_config)  # (k*C, T, F) or (k, 2, T, F) complex
    mixture = tf.stack([tf.math.real(spec), tf.math.imag(spec)], axis=-1)  # (k*C, T, F, 2) or (k, 2, T, F, 2)
    estimate = tf.cast(model(mixture, training=False), tf.float32)  # (k*C, S, T, F, 2) or (k, S, 2, T, F, 2)
    estimate = istft(tf.complex(estimate[..., 0], estimate[..., 1]), stft_config, n_samples)  # (k*C, S, n) or (k, S, 2, n)
    n_targets = tf.shape(estimate)[1]
    if stereo:  # C = 2: (k, S, 2, 1, n), unchanged; C = 1: (k, S, 1, 2, n), the two estimates' mean
        return tf.reduce_mean(tf.reshape(estimate, [k, n_targets, n_channels, 2 // n_channels, n_samples]), axis=3)
    return tf.transpose(tf.reshape(estimate, [k, n_channels, n_targets, n_samples]), [0, 2, 1, 3])  # (k, S, C, n)


class OverlapAdd:
    """The chunk plan's overlap-add of a track that arrives in pieces, in NumPy.

    `push((channels, n))` appends samples and returns the separated samples that are final,
    `(targets, channels, m)`; `finish()` (at the end of the track) returns the rest. `separate`
    is the per-chunk function, (k, channels, samples) -> (k, targets, channels, samples), called
    with up to `chunks_per_call` chunks at once; the chunks, their weights and the order in which
    each sample's contributions are summed are those of `plan` for the whole track, so the output
    depends neither on how the track is cut into pushes nor on `chunks_per_call`.

    The track's length is known only at `finish`, so is the start of its last chunk (the final
    `chunk` samples). Regular chunks (`plan.is_regular`) are separated as soon as they have
    arrived; a sample is final once no later chunk can reach it: it lies before the next regular
    chunk's start and more than `chunk` samples before the newest sample (the last chunk starts no
    earlier than that). So at most about `chunk + chunks_per_call * step` samples (plus one push)
    are held, input and output, whatever the track's length.
    """

    def __init__(self, plan: ChunkPlan, separate: ChunkFunction, n_targets: int, n_channels: int,
                 chunks_per_call: int = 1) -> None:
        self.plan, self.separate = plan, separate
        self.chunk = plan.chunk
        self.per_call = max(1, int(chunks_per_call))
        self.n_targets, self.n_channels = int(n_targets), int(n_channels)
        self.received = 0  # samples pushed
        self.emitted = 0  # samples returned
        self.peak_held = 0  # most samples held at once (input or output buffer), for tests
        self._input = np.zeros((self.n_channels, 0), np.float32)  # samples [_input_start, received)
        self._input_start = 0
        self._next = 0  # index of the next regular chunk
        self._queued: list[tuple[int, np.ndarray]] = []  # (start, weights) of chunks waiting for a full batch
        self._sum = np.zeros((self.n_targets, self.n_channels, 0), np.float32)  # weighted sums from `emitted`
        self._weight = np.zeros(0, np.float32)
        self._finished = False

    def push(self, waves: np.ndarray) -> np.ndarray:
        """Append (channels, n) samples; returns the (targets, channels, m) samples now final."""
        waves = np.asarray(waves, np.float32)
        if self._finished:
            raise ConfigError("OverlapAdd.push after finish")
        if waves.ndim != 2 or waves.shape[0] != self.n_channels:
            raise ConfigError(f"expected ({self.n_channels}, samples) audio, got {waves.shape}")
        if waves.shape[1]:
            self._input = np.concatenate([self._input, waves], axis=1) if self._input.shape[1] else waves
            self.received += waves.shape[1]
        done = []
        while self.plan.is_regular(self._next, self.received):
            self._queue(self.plan.start(self._next, self.received), self.plan.window(self._next == 0, False))
            self._next += 1
            if not self._queued:  # a batch ran: release as we go, so the sums stay one chunk long
                done.append(self._release(final=False))
        done.append(self._release(final=False))
        return np.concatenate(done, axis=-1) if len(done) > 1 else done[0]

    def finish(self) -> np.ndarray:
        """The track has ended: separate its last chunk; returns the remaining samples."""
        if self._finished:
            raise ConfigError("OverlapAdd.finish called twice")
        self._finished = True
        n_samples = self.received
        n_chunks = self.plan.n_chunks(n_samples)
        if n_chunks == 0:
            return np.zeros((self.n_targets, self.n_channels, 0), np.float32)
        if n_chunks == 1:  # the whole track at its own length, weight 1
            self.emitted = n_samples
            return self.separate(self._input[np.newaxis])[0]
        last = n_chunks - 1  # == self._next: every earlier chunk was regular
        self._queue(self.plan.start(last, n_samples), self.plan.window(False, True))
        if self._queued:
            self._run()
        return self._release(final=True)

    def _queue(self, start: int, window: np.ndarray) -> None:
        self._queued.append((start, window))
        if len(self._queued) == self.per_call:
            self._run()

    def _run(self) -> None:
        """Separate the queued chunks in one call and add them, weighted, into the sums."""
        batch, self._queued = self._queued, []
        offset = self._input_start
        pieces = np.stack([self._input[:, start - offset : start - offset + self.chunk] for start, _ in batch])
        estimates = self.separate(pieces)  # (k, S, C, chunk)
        grow = batch[-1][0] + self.chunk - (self.emitted + self._weight.shape[0])
        if grow > 0:
            self._sum = np.concatenate([self._sum, np.zeros((self.n_targets, self.n_channels, grow), np.float32)], -1)
            self._weight = np.concatenate([self._weight, np.zeros(grow, np.float32)])
        for (start, window), estimate in zip(batch, estimates):
            at = start - self.emitted
            self._sum[:, :, at : at + self.chunk] += estimate * window
            self._weight[at : at + self.chunk] += window

    def _release(self, final: bool) -> np.ndarray:
        """Return the samples no later chunk can reach, normalised; drop input no chunk needs."""
        pending = self._queued[0][0] if self._queued else self._next * self.plan.step  # next chunk to add
        earliest = min(pending, self.received - self.chunk)  # the last chunk starts no earlier
        boundary = self.received if final else earliest
        self.peak_held = max(self.peak_held, self._input.shape[1], self._weight.shape[0])
        n = boundary - self.emitted
        if n > 0:
            out = self._sum[:, :, :n] / self._weight[:n]
            self._sum, self._weight = self._sum[:, :, n:], self._weight[n:]
            self.emitted += n
        else:
            out = np.zeros((self.n_targets, self.n_channels, 0), np.float32)
        drop = max(0, earliest) - self._input_start
        if drop > 0:
            self._input = self._input[:, drop:]
            self._input_start += drop
        return out


def overlap_add(plan: ChunkPlan, separate: ChunkFunction, waves: np.ndarray, n_targets: int,
                chunks_per_call: int = 1) -> np.ndarray:
    """(channels, samples) -> (targets, channels, samples): `OverlapAdd` on a whole track.
    `separate`: the per-chunk function, (k, channels, samples) -> (k, targets, channels, samples)."""
    waves = np.asarray(waves, np.float32)
    engine = OverlapAdd(plan, separate, n_targets, waves.shape[0], chunks_per_call)
    return np.concatenate([engine.push(waves), engine.finish()], axis=-1)


def overlap_add_graph(plan: ChunkPlan, separate: Callable[[tf.Tensor], tf.Tensor], waveform: tf.Tensor,
                      n_targets: int) -> tf.Tensor:
    """`overlap_add` in TensorFlow ops, for a graph (the export's whole-track signature):
    (channels, samples) -> (targets, channels, samples), one chunk per `separate` call.

    A `tf.while_loop` adds the chunks in order. Chunk starts increase, so once chunk i is added
    every sample before its start is final: those samples are normalised and written out, and
    only the last `chunk` samples stay pending. Memory is the output plus one chunk, and each
    sample is summed in `OverlapAdd`'s order, from the same plan.
    """
    chunk = plan.chunk
    n_channels, n_samples = tf.shape(waveform)[0], tf.shape(waveform)[1]
    n_chunks = plan.n_chunks(n_samples)

    def body(i, done, pending, pending_norm, pieces):  # type: ignore[no-untyped-def]
        # pending (chunk, S, C), pending_norm (chunk,): weighted sums of samples [done, done + chunk)
        start = plan.start(i, n_samples)
        piece = tf.ensure_shape(tf.slice(waveform, [0, start], [n_channels, chunk]), [None, chunk])  # (C, chunk)
        estimate = separate(piece[tf.newaxis])[0]  # (S, C, chunk)
        window = plan.window(tf.equal(i, 0), tf.equal(i, n_chunks - 1))  # (chunk,)
        weighted = tf.transpose(estimate, [2, 0, 1]) * window[:, tf.newaxis, tf.newaxis]  # (chunk, S, C)
        final = start - done  # samples no later chunk reaches, 0 <= final <= chunk
        pieces = pieces.write(i, pending[:final] / pending_norm[:final, tf.newaxis, tf.newaxis])  # (final, S, C)
        pending = tf.concat([pending[final:], tf.zeros([final, n_targets, n_channels])], 0) + weighted
        pending_norm = tf.concat([pending_norm[final:], tf.zeros([final])], 0) + window
        return i + 1, start, pending, pending_norm, pieces

    def chunked() -> tf.Tensor:
        pieces = tf.TensorArray(tf.float32, size=n_chunks + 1, infer_shape=False,
                                element_shape=tf.TensorShape([None, n_targets, None]))
        loop_vars = (tf.constant(0), tf.constant(0), tf.zeros([chunk, n_targets, n_channels]), tf.zeros([chunk]), pieces)
        # parallel_iterations=1: one chunk in flight
        _, _, pending, pending_norm, pieces = tf.while_loop(lambda i, *_: i < n_chunks, body, loop_vars,
                                                            parallel_iterations=1)
        pieces = pieces.write(n_chunks, pending / pending_norm[:, tf.newaxis, tf.newaxis])  # the last chunk_samples
        return tf.transpose(pieces.concat(), [1, 2, 0])  # (samples, S, C) -> (S, C, samples)

    return tf.case(
        [(tf.equal(n_chunks, 0), lambda: tf.zeros([n_targets, n_channels, 0])),
         (tf.equal(n_chunks, 1), lambda: separate(waveform[tf.newaxis])[0])],  # one call at its own length
        default=chunked,
    )
