"""SavedModel export of a trained separator: waveform in, stems out, for plain TensorFlow.

`python -m mss_tf.export RUN_DIR OUT` (or `train.py ... --export`) writes a SavedModel that needs
neither mss_tf nor tensorflow-io to run. Its signature `serving_default`:

    inputs:  waveform  float32 [channels, samples]           at the model's sample rate, any length
    outputs: stems     float32 [targets, channels, samples]  one waveform per target, same length

STFT, model, inverse STFT and the chunked overlap-add of `mss_tf.inference.Separator` run inside
the graph, with the Separator's semantics: a track no longer than one chunk is separated in one
call at its own length; a longer one in chunks of `chunk_samples` every `chunk - overlap` samples
(the last chunk is the track's final `chunk_samples`), overlap-added with Hann crossfades and
divided by the summed weights. A `tf.while_loop` adds one chunk at a time into the output, so
memory is bounded by the output, not by all chunks. Each channel is separated as a mono signal.
The export is float32 whatever precision the run was trained in.

Metadata, readable from plain TensorFlow on the loaded object (`tf.saved_model.load(OUT)`):
`sample_rate`, `n_fft`, `hop`, `chunk_samples`, `overlap_samples` (int32 variables), `targets`
(string vector, output order), `model_name` and `format` ("mss-tf-saved-model") (string
scalars), `metadata_json` (all of it as JSON). The same JSON is `OUT/assets.extra/mss_tf.json`.

`load_saved_model(OUT)` wraps an export in a separator with the interface of `Separator`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

if __name__ == "__main__":  # `python -m mss_tf.export`: the CLI plumbing first, so TensorFlow starts quietly
    from mss_tf import cli

import numpy as np
import tensorflow as tf

from mss_tf import __version__
from mss_tf.audio.spectrogram import SpectrogramConfig, istft, stft
from mss_tf.config import TrainConfig
from mss_tf.errors import CheckpointError, ConfigError
from mss_tf.models.registry import count_values, model_parameters
from mss_tf.inference import Separator, WaveformSeparator, crossfade_window, overlap_add

FORMAT = "mss-tf-saved-model"
FORMAT_VERSION = 1
METADATA_DIR = "assets.extra"  # TensorFlow's folder for files a SavedModel carries but never reads
METADATA_FILE = "mss_tf.json"
SIGNATURE = "serving_default"
EXPORT_DIR = "export"  # where `train.py --export` writes, inside the run directory


def tf_chunk_starts(n_samples: tf.Tensor, chunk: int, step: int) -> tf.Tensor:
    """`mss_tf.inference.chunk_starts` in the graph: int32 (n_chunks,) for n_samples > chunk."""
    n_regular = (n_samples - chunk + step - 1) // step  # len(range(0, n_samples - chunk, step))
    return tf.concat([tf.range(n_regular) * step, [n_samples - chunk]], axis=0)


def _chunk_separator(model: Any, stft_config: SpectrogramConfig) -> Callable[[tf.Tensor], tf.Tensor]:
    """(channels, samples) -> (channels, targets, samples): one model call on one piece of signal."""

    def separate_chunk(waves: tf.Tensor) -> tf.Tensor:
        spec = stft(waves, stft_config)  # (C, T, F) complex
        mixture = tf.stack([tf.math.real(spec), tf.math.imag(spec)], axis=-1)  # (C, T, F, 2)
        estimate = tf.cast(model(mixture, training=False), tf.float32)  # (C, S, T, F, 2)
        estimate = tf.complex(estimate[..., 0], estimate[..., 1])  # (C, S, T, F)
        return istft(estimate, stft_config, tf.shape(waves)[-1])  # (C, S, samples)

    return separate_chunk


class ExportModule(tf.Module):
    """What the SavedModel holds: the float32 model's variables, the metadata and `serve`.

    Args:
        model: a float32 separator mapping (B, T, F, 2) mixture STFTs to (B, S, T, F, 2).
        stft_config, targets, chunk, overlap: as in `Separator` (chunk and overlap in samples).
        metadata: the JSON-able description stored beside the graph.
    """

    def __init__(self, model: Any, stft_config: SpectrogramConfig, targets: Sequence[str], chunk: int,
                 overlap: int, metadata: dict[str, Any]) -> None:
        super().__init__(name="mss_tf_export")
        self.model_variables = list(model.variables)  # tracked: saved with the graph that reads them
        self._separate_chunk = _chunk_separator(model, stft_config)  # a plain function: not tracked
        self._n_targets = len(targets)
        self._chunk, self._overlap = int(chunk), int(overlap)

        def constant(value: Any, dtype: tf.DType) -> tf.Variable:
            return tf.Variable(value, dtype=dtype, trainable=False)

        self.format = constant(FORMAT, tf.string)
        self.metadata_json = constant(json.dumps(metadata, sort_keys=True), tf.string)
        self.model_name = constant(metadata["model"], tf.string)
        self.targets = constant(list(targets), tf.string)
        self.sample_rate = constant(stft_config.sample_rate, tf.int32)
        self.n_fft = constant(stft_config.n_fft, tf.int32)
        self.hop = constant(stft_config.hop, tf.int32)
        self.chunk_samples = constant(self._chunk, tf.int32)
        self.overlap_samples = constant(self._overlap, tf.int32)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="waveform")])
    def serve(self, waveform: tf.Tensor) -> dict[str, tf.Tensor]:
        """waveform (channels, samples) at the model rate -> {"stems": (targets, channels, samples)}."""
        n_samples = tf.shape(waveform)[1]
        stems = tf.case(
            [(tf.equal(n_samples, 0), lambda: tf.zeros([self._n_targets, tf.shape(waveform)[0], 0])),
             (n_samples <= self._chunk, lambda: self._separate_whole(waveform))],
            default=lambda: self._separate_chunked(waveform),
        )
        return {"stems": tf.ensure_shape(stems, [self._n_targets, None, None])}

    def _separate_whole(self, waveform: tf.Tensor) -> tf.Tensor:
        """A track no longer than one chunk: one call at its own length, no padding."""
        return tf.transpose(self._separate_chunk(waveform), [1, 0, 2])  # (S, C, samples)

    def _separate_chunked(self, waveform: tf.Tensor) -> tf.Tensor:
        """Chunks overlap-added one at a time, as Separator.separate_model_rate does.

        Chunk starts increase, so once chunk i is added every sample before its start is final:
        those samples are normalised and written out, and only the last `chunk` samples stay
        pending. Memory is the output plus one chunk, and each sample is summed in the
        Separator's order (earlier chunks first), so the results agree to the last bit.
        """
        chunk, n_targets = self._chunk, self._n_targets
        fade = min(self._overlap, chunk // 2)
        n_channels, n_samples = tf.shape(waveform)[0], tf.shape(waveform)[1]
        starts = tf_chunk_starts(n_samples, chunk, max(1, chunk - self._overlap))  # (n_chunks,)
        n_chunks = tf.shape(starts)[0]
        middle = crossfade_window(chunk, fade)
        first, last = middle.copy(), middle.copy()
        first[:fade] = 1.0  # nothing to fade in from
        last[fade:] = 1.0  # nothing to fade out into

        def body(i, done, pending, pending_norm, pieces):  # type: ignore[no-untyped-def]
            # pending (chunk, S, C), pending_norm (chunk,): weighted sums of samples [done, done + chunk)
            start = starts[i]
            piece = tf.slice(waveform, [0, start], [n_channels, chunk])  # (C, chunk)
            estimate = self._separate_chunk(tf.ensure_shape(piece, [None, chunk]))  # (C, S, chunk)
            window = tf.where(tf.equal(i, 0), first, tf.where(tf.equal(i, n_chunks - 1), last, middle))  # (chunk,)
            weighted = tf.transpose(estimate, [2, 1, 0]) * window[:, tf.newaxis, tf.newaxis]  # (chunk, S, C)
            final = start - done  # samples no later chunk reaches, 0 <= final <= chunk
            pieces = pieces.write(i, pending[:final] / pending_norm[:final, tf.newaxis, tf.newaxis])  # (final, S, C)
            pending = tf.concat([pending[final:], tf.zeros([final, n_targets, n_channels])], 0) + weighted
            pending_norm = tf.concat([pending_norm[final:], tf.zeros([final])], 0) + window
            return i + 1, start, pending, pending_norm, pieces

        pieces = tf.TensorArray(tf.float32, size=n_chunks + 1, infer_shape=False,
                                element_shape=tf.TensorShape([None, n_targets, None]))
        loop_vars = (tf.constant(0), tf.constant(0), tf.zeros([chunk, n_targets, n_channels]), tf.zeros([chunk]), pieces)
        # parallel_iterations=1: one chunk in flight
        _, done, pending, pending_norm, pieces = tf.while_loop(lambda i, *_: i < n_chunks, body, loop_vars,
                                                               parallel_iterations=1)
        pieces = pieces.write(n_chunks, pending / pending_norm[:, tf.newaxis, tf.newaxis])  # the last chunk_samples
        return tf.transpose(pieces.concat(), [1, 2, 0])  # (samples, S, C) -> (S, C, samples)


def _metadata(separator: Separator, extra: dict[str, Any]) -> dict[str, Any]:
    spec = separator.stft_config
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "mss_tf_version": __version__,
        "tensorflow_version": tf.__version__, "model": separator.name, "targets": list(separator.targets),
        "params": model_parameters(separator.model),
        "sample_rate": spec.sample_rate, "stft": spec.to_dict(), "precision": "float32",
        "chunk_samples": separator.chunk, "overlap_samples": separator.overlap,
        "chunk_seconds": separator.chunk / spec.sample_rate, "overlap_seconds": separator.overlap / spec.sample_rate,
        "signature": {"name": SIGNATURE, "inputs": {"waveform": "float32 [channels, samples]"},
                      "outputs": {"stems": "float32 [targets, channels, samples]"}},
        **extra,
    }


def _is_export(path: Path) -> bool:
    return (path / METADATA_DIR / METADATA_FILE).is_file()


def _check_replaceable(out: Path) -> None:
    """Only an earlier export or an empty folder may be replaced by an export."""
    if out.exists() and not (out.is_dir() and (_is_export(out) or not any(out.iterdir()))):
        raise ConfigError(f"{out}: exists and is not an mss-tf export; refusing to replace it")


def _replace_dir_atomically(out: Path, write: Callable[[Path], None]) -> None:
    """`write` fills a temporary sibling folder of `out`, which is renamed to `out` once complete,
    so `out` is never half-written and an earlier export there is replaced only then."""
    _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp's folder is private; the export is not
        write(tmp)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            out.rename(old / out.name)
            try:
                tmp.rename(out)
            except BaseException:
                (old / out.name).rename(out)  # put the earlier export back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def export_separator(separator: Separator, out: str | Path, extra_metadata: dict[str, Any] | None = None) -> Path:
    """Write `separator` (a float32 model) as a SavedModel in `out`, atomically; returns `out`."""
    out = Path(out)
    dtype = getattr(separator.model, "compute_dtype", "float32")
    if dtype != "float32":
        raise ConfigError(f"{separator.name}: exports are float32, the model computes in {dtype} "
                          "(rebuild it with Separator.from_run(..., precision='float32'))")
    if getattr(separator, "wiener_iterations", 0):
        raise ConfigError(f"{separator.name}: the Wiener post-filter (norbert) cannot run inside a SavedModel; "
                          "export with wiener_iterations=0")
    metadata = _metadata(separator, extra_metadata or {})
    module = ExportModule(separator.model, separator.stft_config, separator.targets, separator.chunk,
                          separator.overlap, metadata)

    def write(folder: Path) -> None:
        tf.saved_model.save(module, str(folder), signatures={SIGNATURE: module.serve})
        (folder / METADATA_DIR).mkdir(exist_ok=True)
        (folder / METADATA_DIR / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")

    _replace_dir_atomically(out, write)
    return out


def export_run(run_dir: str | Path, out: str | Path, which: str = "best", chunk_seconds: float | None = None,
               overlap_seconds: float = 1.0) -> Path:
    """Export the best (or latest) checkpoint of a run directory as a float32 SavedModel in `out`.

    CheckpointError (one line naming the path) for a folder that is not a run or has no checkpoint.
    """
    run_dir = Path(run_dir)
    if which not in ("best", "latest"):
        raise ConfigError(f"which checkpoint: 'best' or 'latest', got {which!r}")
    if (run_dir / "saved_model.pb").is_file():
        raise CheckpointError(f"{run_dir}: is a SavedModel, not a run directory")
    _check_replaceable(Path(out))
    config = TrainConfig.load(run_dir)
    separator = Separator.from_run(run_dir, which=which, precision="float32", config=config,
                                   chunk_seconds=chunk_seconds, overlap_seconds=overlap_seconds)
    extra = {"run_dir": str(run_dir.resolve()), "checkpoint": which, "trained_precision": config.precision}
    return export_separator(separator, out, extra)


class SavedModelSeparator(WaveformSeparator):
    """An exported SavedModel with the interface of `Separator` (targets, sample_rate, stft_config,
    name, params, separate, separate_model_rate); `model` is the loaded TensorFlow object.

    `wiener_iterations` > 0 applies the multichannel Wiener post-filter to stereo output: the
    graph is then called one chunk at a time (`mss_tf.inference.overlap_add`, the export's own
    chunking) and each chunk's estimates are filtered before the crossfade, as `Separator`
    does; the filter runs in NumPy (norbert), outside the exported graph.
    """

    def __init__(self, path: Path, loaded: Any, metadata: dict[str, Any], wiener_iterations: int = 0) -> None:
        if int(wiener_iterations) < 0:
            raise ConfigError(f"wiener_iterations must be >= 0, got {wiener_iterations}")
        self.path = path
        self.model = loaded
        self.metadata = metadata
        self.name = str(metadata["model"])
        self.targets = [str(t) for t in metadata["targets"]]
        self.stft_config = SpectrogramConfig.from_dict(metadata["stft"])
        self.chunk = int(metadata["chunk_samples"])
        self.overlap = int(metadata["overlap_samples"])
        self.wiener_iterations = int(wiener_iterations)
        self._serve = loaded.signatures[SIGNATURE]

    @property
    def params(self) -> int:
        """The model's parameter count as `model_parameters` gave it at export time (else the
        number of values in the export's variables)."""
        if "params" in self.metadata:
            return int(self.metadata["params"])
        variables = getattr(self.model, "model_variables", None) or getattr(self.model, "variables", [])
        return count_values(variables)

    def separate_model_rate(self, waves: np.ndarray) -> np.ndarray:
        """(channels, samples) at the model rate -> (targets, channels, samples): one graph call
        (its own chunking); with the Wiener post-filter on stereo, the graph chunk by chunk and
        each chunk filtered before the crossfade, as `Separator` does (`overlap_add`)."""
        waves = np.asarray(waves, np.float32)
        if self.wiener_iterations and waves.shape[0] >= 2:
            return overlap_add(self, waves)
        return self._serve(waveform=tf.constant(waves))["stems"].numpy()

    def separate_batch(self, waves: np.ndarray) -> np.ndarray:
        """(B, samples) mono signals no longer than a chunk -> (B, targets, samples): the graph
        separates a piece no longer than its chunk in one model call, so the streaming
        overlap-add of `mss_tf.inference` (separate.py) can call it one chunk at a time."""
        stems = self._serve(waveform=tf.constant(np.asarray(waves, np.float32)))["stems"].numpy()  # (S, B, samples)
        return np.transpose(stems, (1, 0, 2))


def load_saved_model(path: str | Path, wiener_iterations: int = 0) -> SavedModelSeparator:
    """Load an export of `export_run`; CheckpointError (one line naming `path`) for a folder that
    is not a SavedModel or a SavedModel without mss-tf metadata (another tool's).
    `wiener_iterations`: see SavedModelSeparator."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such SavedModel directory")
    if not (path / "saved_model.pb").is_file():
        raise CheckpointError(f"{path}: not a SavedModel (no saved_model.pb)")
    meta_path = path / METADATA_DIR / METADATA_FILE
    if not meta_path.is_file():
        raise CheckpointError(f"{path}: a SavedModel without mss-tf metadata ({METADATA_DIR}/{METADATA_FILE}); "
                              "not written by python -m mss_tf.export")
    try:
        metadata = json.loads(meta_path.read_text())
        if metadata.get("format") != FORMAT or int(metadata.get("format_version", 0)) > FORMAT_VERSION:
            raise ValueError(f"format {metadata.get('format')!r} version {metadata.get('format_version')!r}")
        SpectrogramConfig.from_dict(metadata["stft"])
        [metadata[key] for key in ("model", "targets", "chunk_samples", "overlap_samples")]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ConfigError) as exc:
        raise CheckpointError(f"{meta_path}: unreadable mss-tf metadata ({exc})") from None
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # TensorFlow raises many kinds on a corrupt SavedModel
        raise CheckpointError(f"{path}: unreadable SavedModel ({str(exc).splitlines()[0][:200]})") from None
    if SIGNATURE not in loaded.signatures:
        raise CheckpointError(f"{path}: SavedModel has no {SIGNATURE} signature")
    return SavedModelSeparator(path, loaded, metadata, wiener_iterations)


def build_parser(parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags of `python -m mss_tf.export` (which passes `mss_tf.cli.ArgumentParser`: one-line errors)."""
    parser = parser_class(
        prog="python -m mss_tf.export",
        description="Export a trained run as a float32 SavedModel whose serving_default signature maps a "
        "waveform [channels, samples] at the model's sample rate to stems [targets, channels, samples] "
        "(STFT, model, iSTFT and chunked overlap-add in the graph; any length). Runs in plain TensorFlow.",
    )
    parser.add_argument("run_dir", nargs="?", type=Path, metavar="RUN_DIR",
                        help="run directory written by train.py (config.json and checkpoints)")
    parser.add_argument("out", nargs="?", type=Path, metavar="OUT",
                        help="SavedModel folder to write; an earlier export there is replaced once the new one is complete")
    parser.add_argument("--which", choices=["best", "latest"], default="best",
                        help="checkpoint to export: best (by validation loss, the default) or latest")
    parser.add_argument("--chunk-seconds", type=float,
                        help="chunk length the graph separates at a time, in seconds (default 10; 5 for BSRNNs); bounds memory")
    parser.add_argument("--overlap", type=float, default=1.0,
                        help="overlap of consecutive chunks in seconds, crossfaded with Hann fades (default 1)")
    parser.add_argument("--info", type=Path, metavar="SAVED_MODEL",
                        help="print the metadata of an existing export (model, targets, sample rate, STFT, chunking) and exit")
    return parser


def main(argv: list[str] | None = None, parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser) -> int:
    parser = build_parser(parser_class)
    args = parser.parse_args(argv)
    if args.info is not None:
        separator = load_saved_model(args.info)
        print(json.dumps(separator.metadata, indent=2, sort_keys=True))
        return 0
    if args.run_dir is None or args.out is None:
        parser.error("RUN_DIR and OUT are required (or --info SAVED_MODEL)")
    out = export_run(args.run_dir, args.out, args.which, args.chunk_seconds, args.overlap)
    print(f"exported {args.run_dir} ({args.which} checkpoint, float32) to {out}")
    return 0


if __name__ == "__main__":
    cli.run(lambda: main(parser_class=cli.ArgumentParser))
