"""Separation of audio of any length with a trained run (evaluate.py, separate.py).

`Separator.from_run` rebuilds a run's model from its checkpoint. `WaveformSeparator.separate`
separates a track in memory; `separate_file` streams a file block by block (separate.py), so
memory is bounded by the chunk, not the song, with the same output. `wiener_filter` is the
optional multichannel Wiener post-filter. Exports (`mss_tf.export`) run the same chunking in
their graph.

Chunks: a track no longer than one chunk is one model call at its own length; a longer one is
cut into chunks every `chunk - overlap` samples (the last ending at the track's end), each
channel separated as a mono signal, and overlap-added with Hann crossfades divided by the
summed weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from mss_tf.audio import io as audio_io
from mss_tf.audio.spectrogram import SpectrogramConfig, istft, stft
from mss_tf.audio.waveform import fit_length
from mss_tf import TARGETS
from mss_tf.config import TrainConfig
from mss_tf.errors import ConfigError
from mss_tf.models.registry import build_model, get_preset, is_neural, precision_scope
from mss_tf.checkpoints import restore_weights


def crossfade_window(length: int, fade: int) -> np.ndarray:
    """Weights for overlap-add of chunks: Hann (raised-cosine) fades of `fade` samples at both
    ends, flat in between. Overlap-add divides by the summed weights, so any overlap works."""
    window = np.ones(length, np.float32)
    if fade > 0:
        ramp = (0.5 - 0.5 * np.cos(np.pi * (np.arange(fade) + 0.5) / fade)).astype(np.float32)
        window[:fade] = ramp
        window[-fade:] = ramp[::-1]
    return window


def chunk_starts(n_samples: int, chunk: int, step: int) -> list[int]:
    """Where the chunks of a track longer than one chunk start: every `step` samples, and the
    last chunk is the final `chunk` samples (it may overlap its neighbour by more than the
    others do), so no chunk reaches past the end of the track."""
    if n_samples <= chunk:
        return [0]
    starts = list(range(0, n_samples - chunk, step))
    return starts + [n_samples - chunk]


class WaveformSeparator:
    """What every separator offers, on top of the subclass's model calls.

    Subclasses set `stft_config`, `targets`, `name`, `chunk` and `overlap` (samples at the
    model's rate), and implement `separate_batch` (one model call on a batch of mono signals of
    one length, no longer than a chunk) and `separate_model_rate` ((channels, samples) at
    `sample_rate` -> (targets, channels, samples), whole track). `separate` (any rate, in
    memory) and the streaming path (`StreamingSeparation`, `separate_file`) build on them.
    `wiener_iterations` > 0 turns on the per-chunk Wiener post-filter of stereo input.
    """

    stft_config: SpectrogramConfig
    targets: list[str]
    name: str
    chunk: int
    overlap: int
    chunks_per_call: int = 1
    wiener_iterations: int = 0

    @property
    def sample_rate(self) -> int:
        return self.stft_config.sample_rate

    def separate_model_rate(self, waves: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def separate_batch(self, waves: np.ndarray) -> np.ndarray:
        """(B, samples) mono signals at the model rate -> (B, targets, samples): one model call."""
        raise NotImplementedError

    def separate_pieces(self, pieces: np.ndarray) -> np.ndarray:
        """(k, channels, samples) pieces of a track -> (k, targets, channels, samples): every
        channel of every piece in one `separate_batch` call, then each piece's Wiener
        post-filter (when enabled)."""
        k, n_channels, n_samples = pieces.shape
        estimates = self.separate_batch(pieces.reshape(k * n_channels, n_samples))  # (k*C, S, samples)
        estimates = estimates.reshape(k, n_channels, len(self.targets), n_samples).transpose(0, 2, 1, 3)  # (k, S, C, samples)
        return np.stack([self._post_filter(pieces[j], estimates[j]) for j in range(k)])

    def _post_filter(self, waves: np.ndarray, estimates: np.ndarray) -> np.ndarray:
        """The Wiener post-filter of one chunk's (S, C, samples) estimates (when enabled), before
        the crossfade: its memory is bounded by the chunk too."""
        if not self.wiener_iterations or waves.shape[0] < 2:
            return estimates
        return wiener_filter(waves, estimates, self.stft_config, self.wiener_iterations,
                             residual=set(self.targets) != set(TARGETS))

    def separate(self, audio: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
        """(samples, channels) audio at any rate -> {target: (samples, channels)} at that rate,
        in memory (`separate_file` streams a file instead, with the same result)."""
        audio = np.asarray(audio, np.float32)
        if audio.ndim == 1:
            audio = audio[:, None]
        model_audio = audio_io.resample(audio, sample_rate, self.sample_rate)
        estimates = self.separate_model_rate(model_audio.T)  # (S, C, samples)
        result = {}
        for name, estimate in zip(self.targets, estimates):
            back = audio_io.resample(estimate.T, self.sample_rate, sample_rate)
            result[name] = fit_length(back, audio.shape[0])
        return result


def _chunk_window(chunk: int, fade: int, first: bool, last: bool) -> np.ndarray:
    """The crossfade weights of one chunk of a track longer than one chunk."""
    window = crossfade_window(chunk, fade)
    if first:
        window[:fade] = 1.0  # nothing to fade in from
    if last:
        window[fade:] = 1.0  # nothing to fade out into
    return window


def chunk_windows(n_samples: int, chunk: int, overlap: int) -> list[tuple[int, np.ndarray]]:
    """(start, crossfade weights) of each chunk of a track longer than one chunk: Hann fades of
    `overlap` samples (at most half a chunk) between chunks, none at the track's two ends."""
    fade = min(overlap, chunk // 2)
    starts = chunk_starts(n_samples, chunk, max(1, chunk - overlap))
    return [(start, _chunk_window(chunk, fade, i == 0, i == len(starts) - 1)) for i, start in enumerate(starts)]


class OverlapAdd:
    """Chunked overlap-add of a track that arrives in pieces, at the model's rate.

    `push((channels, n))` appends samples and returns the separated samples that are final,
    `(targets, channels, m)`; `finish()` (at the end of the track) returns the rest. The chunks,
    their crossfades, their batching (`separator.chunks_per_call`) and the order in which each
    sample's contributions are summed are those of the whole track at once (`chunk_windows`),
    so the output does not depend on how the track is cut into pushes.

    The track's length is known only at `finish`, so is the start of its last chunk (the final
    `chunk` samples). A regular chunk k (start k * step) exists once more than k * step + chunk
    samples have arrived; a sample is final once no later chunk can reach it: it lies before the
    next regular chunk's start and more than `chunk` samples before the newest sample (the last
    chunk starts no earlier than that). So at most about `chunk + chunks_per_call * step` samples
    (plus one push) are held, input and output, whatever the track's length.
    """

    def __init__(self, separator: WaveformSeparator, n_channels: int) -> None:
        self.separator = separator
        self.chunk = int(separator.chunk)
        self.step = max(1, self.chunk - int(separator.overlap))
        self.fade = min(int(separator.overlap), self.chunk // 2)
        self.per_call = max(1, int(getattr(separator, "chunks_per_call", 1)))
        self.n_targets, self.n_channels = len(separator.targets), int(n_channels)
        self.received = 0  # samples pushed
        self.emitted = 0  # samples returned
        self.peak_held = 0  # most samples held at once (input or output buffer), for tests
        self._input = np.zeros((self.n_channels, 0), np.float32)  # samples [_input_start, received)
        self._input_start = 0
        self._next = 0  # index of the next regular chunk
        self._queued: list[tuple[int, np.ndarray]] = []  # chunks waiting for a full batch
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
        while self._next * self.step + self.chunk < self.received:  # regular chunk `_next` exists
            self._queue(self._next * self.step, _chunk_window(self.chunk, self.fade, self._next == 0, False))
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
        if n_samples == 0:
            return np.zeros((self.n_targets, self.n_channels, 0), np.float32)
        if n_samples <= self.chunk:  # one call at the track's own length: no padding
            self.emitted = n_samples
            return self.separator.separate_pieces(self._input[np.newaxis])[0]
        self._queue(n_samples - self.chunk, _chunk_window(self.chunk, self.fade, False, True))
        if self._queued:
            self._run()
        return self._release(final=True)

    def _queue(self, start: int, window: np.ndarray) -> None:
        self._queued.append((start, window))
        if len(self._queued) == self.per_call:
            self._run()

    def _run(self) -> None:
        """Separate the queued chunks in one batch and add them, weighted, into the sums."""
        batch, self._queued = self._queued, []
        offset = self._input_start
        pieces = np.stack([self._input[:, start - offset : start - offset + self.chunk] for start, _ in batch])
        estimates = self.separator.separate_pieces(pieces)  # (k, S, C, chunk)
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
        pending = self._queued[0][0] if self._queued else self._next * self.step  # next chunk to add
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


def overlap_add(separator: WaveformSeparator, waves: np.ndarray) -> np.ndarray:
    """(channels, samples) at the model rate -> (targets, channels, samples), whole track at once."""
    waves = np.asarray(waves, np.float32)
    engine = OverlapAdd(separator, waves.shape[0])
    return np.concatenate([engine.push(waves), engine.finish()], axis=-1)


class StreamingSeparation:
    """`separator.separate(audio, sample_rate)` for audio that arrives in blocks.

    `push((frames, channels))` returns `(targets, m, channels)`, the separated frames ready so
    far (in the order of `targets`); `finish()` returns the rest, so that the outputs hold exactly
    as many frames as were pushed. In between: a streaming soxr resampler to the model's rate
    (`audio_io.StreamResampler`, the same samples as `audio_io.resample`), `OverlapAdd`, and a
    streaming resampler back, only for `targets`. Memory is bounded by the chunk and the blocks.
    """

    def __init__(self, separator: WaveformSeparator, sample_rate: int, n_channels: int,
                 targets: Sequence[str] | None = None) -> None:
        self.separator = separator
        self.sample_rate, self.n_channels = int(sample_rate), int(n_channels)
        self.targets = list(targets or separator.targets)
        unknown = [t for t in self.targets if t not in separator.targets]
        if unknown:
            raise ConfigError(f"targets {', '.join(unknown)}: {separator.name} separates only "
                              f"{', '.join(separator.targets)}")
        self._index = [separator.targets.index(t) for t in self.targets]
        self._to_model = audio_io.StreamResampler(self.sample_rate, separator.sample_rate, self.n_channels)
        self.engine = OverlapAdd(separator, self.n_channels)
        self._from_model = audio_io.StreamResampler(separator.sample_rate, self.sample_rate,
                                                    len(self.targets) * self.n_channels)
        self.frames_in = 0
        self.frames_out = 0
        self._held = np.zeros((0, len(self.targets) * self.n_channels), np.float32)

    def push(self, block: np.ndarray) -> np.ndarray:
        """Separate the next (frames, channels) block; returns (targets, frames ready, channels)."""
        block = np.asarray(block, np.float32)
        if block.ndim == 1:
            block = block[:, np.newaxis]
        if block.ndim != 2 or block.shape[1] != self.n_channels:
            raise ConfigError(f"expected (frames, {self.n_channels}) audio blocks, got {block.shape}")
        self.frames_in += block.shape[0]
        finished = self.engine.push(self._to_model.process(block).T)
        return self._back(finished, final=False)

    def finish(self) -> np.ndarray:
        """The input has ended; returns the remaining (targets, frames, channels)."""
        finished = np.concatenate([self.engine.push(self._to_model.flush().T), self.engine.finish()], axis=-1)
        return self._back(finished, final=True)

    def _back(self, finished: np.ndarray, final: bool) -> np.ndarray:
        """(S, C, m) at the model rate -> (targets, m', C) at the input's rate, never past the
        input's length; at the end, padded to it (as `fit_length`)."""
        n_targets, n_channels = len(self.targets), self.n_channels
        picked = finished[self._index].reshape(n_targets * n_channels, -1).T  # (m, T*C)
        back = self._from_model.process(picked)
        if final:
            back = np.concatenate([back, self._from_model.flush()])
        if self._held.shape[0]:
            back = np.concatenate([self._held, back])
        n = min(back.shape[0], self.frames_in - self.frames_out)
        out, self._held = back[:n], back[n:]
        if final:
            missing = self.frames_in - self.frames_out - n
            out = np.concatenate([out, np.zeros((missing, out.shape[1]), np.float32)])
            self._held = self._held[:0]
        self.frames_out += out.shape[0]
        return np.ascontiguousarray(out.reshape(-1, n_targets, n_channels).transpose(1, 0, 2))


def separate_file(
    separator: WaveformSeparator,
    path: str | os.PathLike,
    outputs: Mapping[str, str | os.PathLike],
    block_seconds: float | None = None,
    progress: Callable[[int, int | None, int], None] | None = None,
) -> dict[str, object]:
    """Separate an audio file into one file per target, streaming: the result of
    `separator.separate(audio, rate)` on the whole file, with memory bounded by the chunk.

    The input is read in blocks (`audio_io.AudioReader`: wav, flac, ogg, mp3 through
    libsndfile; other formats, e.g. m4a through ffmpeg, are decoded whole first and are NOT
    bounded), separated by `StreamingSeparation`, and each target written in blocks at the
    input's rate and channel count, exactly as many frames as the input holds
    (`audio_io.AudioWriter`: `.wav` 32-bit float, `.flac` 16-bit). Each output is written under
    a temporary name beside it and renamed into place once every output is complete; on any
    error (or interrupt) the temporary files, and the folders this call created, are removed.

    Args:
        outputs: {target: output path}, the format following the extension.
        block_seconds: seconds read per block (default: the chunk step times chunks_per_call,
            so each block feeds about one model call).
        progress: called as `progress(frames written, frames in the file or None, sample rate)`
            once before the first block and after each one.
    Returns:
        {"frames", "sample_rate", "channels", "seconds", "streamed"} of the input.
    Raises:
        AudioError for an unreadable input or a failed write, ConfigError for unknown targets.
    """
    outputs = {target: Path(out) for target, out in outputs.items()}
    with audio_io.AudioReader(path) as reader:
        stream = StreamingSeparation(separator, reader.sample_rate, reader.channels, list(outputs))
        if block_seconds is None:
            block_seconds = max(1, separator.chunk - separator.overlap) * max(1, separator.chunks_per_call) / separator.sample_rate
        block_frames = max(1024, int(round(block_seconds * reader.sample_rate)))
        created = sorted({folder for out in outputs.values() for folder in [out.parent, *out.parent.parents]
                          if not folder.exists()}, key=lambda f: len(f.parts), reverse=True)
        writers: dict[str, audio_io.AudioWriter] = {}

        def write(stems: np.ndarray) -> None:
            if stems.shape[1]:
                for target, stem in zip(stream.targets, stems):
                    writers[target].write(stem)
                if progress is not None:
                    progress(stream.frames_out, reader.frames, reader.sample_rate)

        try:
            for target, out in outputs.items():
                writers[target] = audio_io.AudioWriter(out, reader.sample_rate, reader.channels, reader.frames)
            if progress is not None:
                progress(0, reader.frames, reader.sample_rate)
            for block in reader.blocks(block_frames):
                write(stream.push(block))
            write(stream.finish())
            for writer in writers.values():
                writer.commit()
        except BaseException:
            for writer in writers.values():
                writer.abort()
            for folder in created:  # deepest first; only if still empty
                try:
                    folder.rmdir()
                except OSError:
                    pass
            raise
        return {"frames": stream.frames_in, "sample_rate": reader.sample_rate, "channels": reader.channels,
                "seconds": stream.frames_in / reader.sample_rate, "streamed": reader.streamed}


def default_chunk_seconds(preset: str) -> float:
    """The chunk length a run separates with unless told: 10 s, and 5 s for BSRNNs, whose BLSTM
    activations grow fast with the chunk (the paper-size model peaks at 2.1 GB with 10 s chunks and
    1.5 GB with 5 s, at the same speed; benchmarks/RESULTS.md, "Inference")."""
    return 5.0 if get_preset(preset).model == "BSRNN" else 10.0


class Separator(WaveformSeparator):
    """A trained model with its STFT config: waveform in, one waveform per target out.

    Long inputs are cut into `chunk_seconds` chunks overlapping by `overlap_seconds`; each chunk
    is separated (all channels as one batch of mono signals) and the chunks are overlap-added
    with Hann crossfades normalised by the summed weights, so memory is bounded by the chunk,
    not the song. Every chunk of a track longer than one chunk is real signal: the last chunk is
    the final `chunk_seconds` of the track, overlapping its neighbour by `overlap_seconds` or more.

    A track no longer than one chunk is separated in one call at its own length. So the model
    never sees zero-padding as signal: BSRNN-SE's squeeze (a mean over the chunk) and BSRNN's
    time BLSTMs see only the track. (Models that must run padded batches, such as exports,
    pass BSRNN its `valid_frames` instead.) A track shorter than a chunk costs one more trace.

    Args:
        model: a separator mapping (B, T, F, 2) mixture STFTs to (B, n_targets, T, F, 2).
        stft_config: the STFT the model was trained with.
        targets: names of the model's outputs in order.
        chunk_seconds: chunk length in seconds at the model's sample rate.
        overlap_seconds: overlap between consecutive chunks.
        chunks_per_call: chunks separated together in one batch (more is faster on a GPU and
            costs memory in proportion); the output does not depend on it.
        wiener_iterations: N > 0 applies the multichannel Wiener post-filter (norbert, N EM
            iterations) to the estimates of a stereo input; 0 (default) leaves them as the
            model made them. See `wiener_filter`.
    """

    def __init__(
        self,
        model: keras.Model,
        stft_config: SpectrogramConfig,
        targets: Sequence[str],
        chunk_seconds: float = 10.0,
        overlap_seconds: float = 1.0,
        name: str | None = None,
        chunks_per_call: int = 1,
        wiener_iterations: int = 0,
    ) -> None:
        if not chunk_seconds > 0 or not 0 <= overlap_seconds < chunk_seconds:
            raise ConfigError(
                f"chunk {chunk_seconds} s / overlap {overlap_seconds} s: need 0 <= overlap < chunk"
            )
        if int(chunks_per_call) < 1 or int(wiener_iterations) < 0:
            raise ConfigError(f"chunks_per_call must be >= 1 and wiener_iterations >= 0, got "
                              f"{chunks_per_call} and {wiener_iterations}")
        self.model = model
        self.stft_config = stft_config
        self.targets = list(targets)
        self.chunk = int(round(chunk_seconds * stft_config.sample_rate))
        self.overlap = int(round(overlap_seconds * stft_config.sample_rate))
        self.chunks_per_call = int(chunks_per_call)
        self.wiener_iterations = int(wiener_iterations)
        self.name = name or model.name
        self._separate_chunk = tf.function(self._separate_chunk_fn, reduce_retracing=True)

    @classmethod
    def from_run(
        cls, run_dir: str | Path, which: str = "best", precision: str = "float32", config: TrainConfig | None = None,
        **kwargs: float,
    ) -> "Separator":
        """Rebuild the model of a run directory and load its best (or latest) checkpoint.

        `precision` is the Keras dtype policy the model runs in (`mixed_bfloat16` computes the
        layers in bfloat16 with float32 weights; STFT, masks and iSTFT stay float32), whatever
        precision the run was trained in: checkpoints hold float32 weights either way.
        `config` is the run's `TrainConfig.load(run_dir)` when the caller has read it already.
        """
        config = config if config is not None else TrainConfig.load(run_dir)
        spec = config.spectrogram
        if kwargs.get("chunk_seconds") is None:
            kwargs["chunk_seconds"] = default_chunk_seconds(config.model)
        if not is_neural(config.model):
            from mss_tf.models.nmf import NMFSeparator

            model = NMFSeparator.load(run_dir)
        else:
            with precision_scope(precision):
                model = build_model(config.model, stft=spec, **config.model_kwargs)
            model(tf.zeros([1, spec.n_frames(spec.hop * 8), spec.n_bins, 2]), training=False)
            restore_weights(model, run_dir, which)
        return cls(model, spec, config.targets or [], name=config.model, **kwargs)

    def _separate_chunk_fn(self, waves: tf.Tensor) -> tf.Tensor:
        spec = stft(waves, self.stft_config)  # (B, T, F) complex
        mixture = tf.stack([tf.math.real(spec), tf.math.imag(spec)], axis=-1)  # (B, T, F, 2)
        estimate = tf.cast(self.model(mixture, training=False), tf.float32)  # (B, S, T, F, 2)
        estimate = tf.complex(estimate[..., 0], estimate[..., 1])  # (B, S, T, F)
        return istft(estimate, self.stft_config, tf.shape(waves)[-1])  # (B, S, samples)

    def separate_batch(self, waves: np.ndarray) -> np.ndarray:
        """(B, samples) mono signals at the model rate -> (B, targets, samples): one model call."""
        return self._separate_chunk(tf.constant(np.asarray(waves, np.float32))).numpy()

    def separate_model_rate(self, waves: np.ndarray) -> np.ndarray:
        """(channels, samples) at the model rate -> (targets, channels, samples)."""
        return overlap_add(self, waves)


def wiener_filter(
    mixture: np.ndarray,
    estimates: np.ndarray,
    stft_config: SpectrogramConfig,
    iterations: int,
    residual: bool = False,
    block_frames: int = 300,
) -> np.ndarray:
    """Multichannel Wiener post-filter of separated stems (norbert, as Open-Unmix and
    Spleeter's `--mwf` apply it).

    The magnitudes of the estimates' STFTs are the sources' spectrogram models; norbert's EM
    (`iterations` steps) fits each source's spatial covariance and returns the posterior mean
    of every source from the complex stereo mixture, so the stems also sum to the mixture.
    With `residual`, the mixture minus the estimates' sum is one more source (for models that
    do not separate every stem) and is dropped afterwards. Frames are processed in blocks of
    `block_frames` (Open-Unmix's `wiener_win_len`), bounding the EM's memory.

    Args:
        mixture: (channels, samples) at the STFT's rate; channels >= 2 is where it helps.
        estimates: (targets, channels, samples).
    Returns:
        (targets, channels, samples) float32.
    """
    import norbert

    n_samples = mixture.shape[-1]
    x = stft(tf.constant(mixture, tf.float32), stft_config).numpy()  # (C, T, F)
    sources = list(estimates)
    if residual:
        sources.append(mixture - np.sum(estimates, axis=0))
    v = np.abs(stft(tf.constant(np.stack(sources), tf.float32), stft_config).numpy())  # (S, C, T, F)
    x = np.transpose(x, (1, 2, 0)).astype(np.complex128)  # (T, F, C)
    v = np.transpose(v, (2, 3, 1, 0)).astype(np.float64)  # (T, F, C, S)
    y = np.zeros(v.shape, np.complex64)
    for start in range(0, x.shape[0], block_frames):
        block = slice(start, start + block_frames)
        y[block] = norbert.wiener(v[block], x[block].copy(), iterations, use_softmask=False)
    y = np.transpose(y, (3, 2, 0, 1))[: len(estimates)]  # (targets, C, T, F)
    return istft(tf.constant(y), stft_config, n_samples).numpy().astype(np.float32)
