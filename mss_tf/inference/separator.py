"""Separators: a run's model in this process (`Separator`) and what every separator offers
(`WaveformSeparator`: in memory, streaming, files), on the chunk plan of `mss_tf.inference.chunks`.

`Separator.from_run` rebuilds a run's model from its checkpoint; `separate_file` streams a file
block by block, so memory is bounded by the chunk, not the song, with the output of `separate`;
`wiener_filter` is the optional multichannel Wiener post-filter.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from mss_tf import TARGETS
from mss_tf.audio import io as audio_io
from mss_tf.audio.spectrogram import SpectrogramConfig, istft, stft
from mss_tf.audio.waveform import fit_length
from mss_tf.checkpoints import restore_weights
from mss_tf.config import TrainConfig
from mss_tf.errors import AudioError, ConfigError
from mss_tf.inference.chunks import ChunkPlan, OverlapAdd, model_channels, separate_chunks
from mss_tf.models.registry import MODEL_CLASSES, build_model, example_mixture, get_preset, is_neural, precision_scope

DEFAULT_CHUNK_SECONDS = 10.0  # a model class may set its own `default_chunk_seconds` (BSRNN: 5 s)
DEFAULT_OVERLAP_SECONDS = 1.0


def check_separation_options(chunks_per_call: int, wiener_iterations: int) -> None:
    """ConfigError unless chunks_per_call >= 1 and wiener_iterations >= 0 (every separator's options)."""
    if int(chunks_per_call) < 1 or int(wiener_iterations) < 0:
        raise ConfigError(f"chunks_per_call must be >= 1 and wiener_iterations >= 0, got "
                          f"{chunks_per_call} and {wiener_iterations}")


class WaveformSeparator:
    """What every separator offers (a run's model in this process, `Separator`; an export,
    `mss_tf.export.SavedModelSeparator`), on top of the subclass's per-chunk model call.

    Subclasses set `stft_config`, `targets`, `name`, `plan` (a `ChunkPlan` at the model's rate)
    and `model_channels` (1: each channel separated on its own; 2: a stereo model), and implement
    `separate_chunks` (one model call, as the function `separate_chunks`). `separate` (any rate,
    in memory), `separate_model_rate` and the streaming path (`StreamingSeparation`,
    `separate_file`) build on it through `OverlapAdd`: the same code for every kind of separator.
    `chunks_per_call` chunks go into one model call; `wiener_iterations` > 0 turns on the
    per-chunk Wiener post-filter of stereo input.
    """

    stft_config: SpectrogramConfig
    targets: list[str]
    name: str
    plan: ChunkPlan
    model_channels: int = 1
    chunks_per_call: int = 1
    wiener_iterations: int = 0
    stems: Sequence[str] = TARGETS  # the stems of the training data: targets short of them leave a residual

    @property
    def sample_rate(self) -> int:
        return self.stft_config.sample_rate

    @property
    def chunk(self) -> int:
        return self.plan.chunk

    @property
    def overlap(self) -> int:
        return self.plan.overlap

    def separate_chunks(self, pieces: np.ndarray) -> np.ndarray:
        """(k, channels, samples) at the model rate, samples <= chunk -> (k, targets, channels,
        samples): one model call."""
        raise NotImplementedError

    def check_channels(self, n_channels: int, source: str | os.PathLike = "audio") -> None:
        """AudioError (one line naming `source`) for audio a stereo model cannot take: more than
        two channels. A mono model takes any number (each separately); a stereo one mono or stereo."""
        if self.model_channels == 2 and n_channels > 2:
            raise AudioError(f"{source}: {n_channels} channels; {self.name} is a stereo model and separates "
                             "mono or stereo audio only (downmix it to stereo first)")

    def separate_pieces(self, pieces: np.ndarray) -> np.ndarray:
        """`separate_chunks`, then each piece's Wiener post-filter (when enabled), before the
        crossfade: its memory is bounded by the chunk too. The per-chunk function of `OverlapAdd`."""
        estimates = self.separate_chunks(pieces)  # (k, S, C, samples)
        if not self.wiener_iterations or pieces.shape[1] < 2:
            return estimates
        residual = set(self.targets) != set(self.stems)
        return np.stack([wiener_filter(piece, estimate, self.stft_config, self.wiener_iterations, residual=residual)
                         for piece, estimate in zip(pieces, estimates)])

    def overlap_add_engine(self, n_channels: int) -> OverlapAdd:
        """A streaming `OverlapAdd` of this separator's plan for a track of `n_channels`."""
        return OverlapAdd(self.plan, self.separate_pieces, len(self.targets), n_channels, self.chunks_per_call)

    def separate_model_rate(self, waves: np.ndarray) -> np.ndarray:
        """(channels, samples) at the model rate -> (targets, channels, samples), whole track."""
        waves = np.asarray(waves, np.float32)
        self.check_channels(waves.shape[0])
        engine = self.overlap_add_engine(waves.shape[0])
        return np.concatenate([engine.push(waves), engine.finish()], axis=-1)

    def separate(self, audio: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
        """(samples, channels) audio at any rate -> {target: (samples, channels)} at that rate,
        in memory (`separate_file` streams a file instead, with the same result)."""
        audio = np.asarray(audio, np.float32)
        if audio.ndim == 1:
            audio = audio[:, None]
        self.check_channels(audio.shape[1])
        model_audio = audio_io.resample(audio, sample_rate, self.sample_rate)
        estimates = self.separate_model_rate(model_audio.T)  # (S, C, samples)
        result = {}
        for name, estimate in zip(self.targets, estimates):
            back = audio_io.resample(estimate.T, self.sample_rate, sample_rate)
            result[name] = fit_length(back, audio.shape[0])
        return result


class StreamingSeparation:
    """`separator.separate(audio, sample_rate)` for audio that arrives in blocks.

    `push((frames, channels))` returns `(targets, m, channels)`, the separated frames ready so
    far (in the order of `targets`); `finish()` returns the rest, so that the outputs hold exactly
    as many frames as were pushed. In between: a streaming soxr resampler to the model's rate
    (`audio_io.StreamResampler`, the same samples as `audio_io.resample`), the separator's
    `OverlapAdd`, and a streaming resampler back, only for `targets`. Memory is bounded by the
    chunk and the blocks. `source` names the input in errors (AudioError for more than two
    channels given to a stereo model).
    """

    def __init__(self, separator: WaveformSeparator, sample_rate: int, n_channels: int,
                 targets: Sequence[str] | None = None, source: str | os.PathLike = "audio") -> None:
        self.separator = separator
        self.sample_rate, self.n_channels = int(sample_rate), int(n_channels)
        self.targets = list(targets or separator.targets)
        unknown = [t for t in self.targets if t not in separator.targets]
        if unknown:
            raise ConfigError(f"targets {', '.join(unknown)}: {separator.name} separates only "
                              f"{', '.join(separator.targets)}")
        separator.check_channels(self.n_channels, source)
        self._index = [separator.targets.index(t) for t in self.targets]
        self._to_model = audio_io.StreamResampler(self.sample_rate, separator.sample_rate, self.n_channels)
        self.engine = separator.overlap_add_engine(self.n_channels)
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
        AudioError for an unreadable input, a failed write or more than two channels given to a
        stereo model; ConfigError for unknown targets.
    """
    outputs = {target: Path(out) for target, out in outputs.items()}
    with audio_io.AudioReader(path) as reader:
        stream = StreamingSeparation(separator, reader.sample_rate, reader.channels, list(outputs), source=path)
        if block_seconds is None:
            block_seconds = separator.plan.step * max(1, separator.chunks_per_call) / separator.sample_rate
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
    """The chunk length a run separates with unless told: its model class's `default_chunk_seconds`
    (BSRNN: 5 s, whose BLSTM activations grow fast with the chunk), else 10 s."""
    return float(getattr(MODEL_CLASSES[get_preset(preset).model], "default_chunk_seconds", DEFAULT_CHUNK_SECONDS))


class Separator(WaveformSeparator):
    """A trained model with its STFT config: waveform in, one waveform per target out.

    Long inputs are separated in chunks of `chunk_seconds` overlapping by `overlap_seconds` and
    overlap-added (`ChunkPlan`), so memory is bounded by the chunk, not the song. Every chunk is
    real signal: a track no longer than one chunk is separated in one call at its own length, and
    the last chunk of a longer one is its final `chunk_seconds`. So the model never sees
    zero-padding as signal: BSRNN-SE's squeeze (a mean over the chunk) and BSRNN's time BLSTMs
    see only the track. A track shorter than a chunk costs one more trace.

    A mono model separates each channel of a track on its own (channels as batch items); a stereo
    model (`channels=2`, `model_channels`) takes both at once, a mono track duplicated to two
    channels (its output is the mean of the two channel estimates), and refuses more than two.

    Args:
        model: a separator mapping (B, T, F, 2) mixture STFTs to (B, n_targets, T, F, 2), or, with
            `channels = 2`, (B, 2, T, F, 2) to (B, n_targets, 2, T, F, 2).
        stft_config: the STFT the model was trained with.
        targets: names of the model's outputs in order.
        chunk_seconds: chunk length in seconds at the model's sample rate.
        overlap_seconds: overlap between consecutive chunks (None: 1 s).
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
        chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
        overlap_seconds: float | None = DEFAULT_OVERLAP_SECONDS,
        name: str | None = None,
        chunks_per_call: int = 1,
        wiener_iterations: int = 0,
    ) -> None:
        overlap_seconds = DEFAULT_OVERLAP_SECONDS if overlap_seconds is None else overlap_seconds
        self.plan = ChunkPlan.from_seconds(chunk_seconds, overlap_seconds, stft_config.sample_rate)
        check_separation_options(chunks_per_call, wiener_iterations)
        self.model = model
        self.stft_config = stft_config
        self.targets = list(targets)
        self.model_channels = model_channels(model)
        self.chunks_per_call = int(chunks_per_call)
        self.wiener_iterations = int(wiener_iterations)
        self.name = name or model.name
        # autograph off (as the training step and the export): the models and the chunk engine are
        # written with explicit TensorFlow control flow, and converting their Python costs seconds a trace
        self._separate_chunks = tf.function(functools.partial(separate_chunks, model, stft_config),
                                            reduce_retracing=True, autograph=False)

    @classmethod
    def from_run(
        cls, run_dir: str | Path, which: str = "best", precision: str = "float32", config: TrainConfig | None = None,
        **kwargs: Any,
    ) -> "Separator":
        """Rebuild the model of a run directory (its preset with the run's `model_kwargs`, e.g.
        `channels`) and load its best (or latest) checkpoint. `kwargs`: the Separator's options;
        `chunk_seconds` None is the model family's `default_chunk_seconds`.

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
            model(example_mixture(model, spec.n_frames(spec.hop * 8), spec.n_bins), training=False)
            restore_weights(model, run_dir, which)
        separator = cls(model, spec, config.targets or [], name=config.model, **kwargs)
        if config.data is not None and config.data.get("stems"):
            separator.stems = tuple(config.data["stems"])
        return separator

    def separate_chunks(self, pieces: np.ndarray) -> np.ndarray:
        """(k, channels, samples) at the model rate -> (k, targets, channels, samples): one model call."""
        return self._separate_chunks(tf.constant(np.asarray(pieces, np.float32))).numpy()


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
