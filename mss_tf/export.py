"""SavedModel export of a trained separator: waveform in, stems out, for plain TensorFlow.

`python -m mss_tf.export RUN_DIR OUT` (or `train.py ... --export`) writes a SavedModel that needs
neither mss_tf nor tensorflow-io to run. Two signatures:

    serving_default   the whole track, any length, memory bounded by the output plus one chunk
        inputs:  waveform  float32 [channels, samples]                   at the model's sample rate
        outputs: stems     float32 [targets, channels, samples]          one waveform per target
    separate_chunks   one model call on a batch of chunks (what a caller's own overlap-add calls)
        inputs:  pieces    float32 [chunks, channels, samples]           samples <= chunk_samples
        outputs: stems     float32 [chunks, targets, channels, samples]

Both run `mss_tf.inference`'s code in the graph: `separate_chunks` (STFT -> model -> iSTFT; a mono
model separates each channel on its own, a stereo model (`channels` 2) both at once, a mono input
duplicated and its two estimates averaged, and more than two channels refused), and for
serving_default `overlap_add_graph` on the export's `ChunkPlan` (`chunk_samples`,
`overlap_samples`), the plan and the sums of the in-process separators. The export is float32
whatever precision the run was trained in.

Metadata, readable from plain TensorFlow on the loaded object (`tf.saved_model.load(OUT)`):
`sample_rate`, `n_fft`, `hop`, `chunk_samples`, `overlap_samples`, `channels` (int32 variables),
`targets` (string vector, output order), `model_name` and `format` ("mss-tf-saved-model") (string
scalars), `metadata_json` (all of it as JSON). The same JSON is `OUT/assets.extra/mss_tf.json`;
it also holds the run's `model_kwargs` and the checkpoint path of each saved variable
(`weight_paths`), so `train.py --init-from OUT` can fine-tune from an export.

`--format litert` / `--format onnx` write a folder holding a LiteRT (.tflite) or ONNX file of one
chunk (waveform chunk in, stems chunk out, STFT and iSTFT inside, static shapes) and its
mss_tf.json; the caller resamples and overlap-adds with the chunk plan (`mss_tf.portable`,
`examples/litert_separate.py`). `--variant float16|int8` are LiteRT's smaller variants.

`load_saved_model(OUT)` wraps an export in a separator with the interface of `Separator`: the
in-process `OverlapAdd` over the export's `separate_chunks`, the code a run goes through, and
`load_separator(PATH)` opens a run directory or an export alike (evaluate.py, separate.py).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

if __name__ == "__main__":  # `python -m mss_tf.export`: the CLI plumbing first, so TensorFlow starts quietly
    from mss_tf import cli

import keras
import numpy as np
import tensorflow as tf

from mss_tf import __version__, portable
from mss_tf.audio.spectrogram import SpectrogramConfig
from mss_tf.checkpoints import EXPORT_METADATA_DIR, EXPORT_METADATA_FILE, weight_paths
from mss_tf.config import TrainConfig, model_channels
from mss_tf.errors import CheckpointError, ConfigError
from mss_tf.inference import (DEFAULT_OVERLAP_SECONDS, ChunkPlan, Separator, WaveformSeparator, check_separation_options,
                              overlap_add_graph, separate_chunks)
from mss_tf.models.registry import count_values, get_preset, model_parameters

FORMAT = "mss-tf-saved-model"
FORMAT_VERSION = 2  # 2: the separate_chunks signature, channels
METADATA_DIR, METADATA_FILE = EXPORT_METADATA_DIR, EXPORT_METADATA_FILE
SIGNATURE = "serving_default"
CHUNK_SIGNATURE = "separate_chunks"
EXPORT_DIR = "export"  # where `train.py --export` writes, inside the run directory
SIGNATURES = {
    SIGNATURE: {"inputs": {"waveform": "float32 [channels, samples]"},
                "outputs": {"stems": "float32 [targets, channels, samples]"}},
    CHUNK_SIGNATURE: {"inputs": {"pieces": "float32 [chunks, channels, samples <= chunk_samples]"},
                      "outputs": {"stems": "float32 [chunks, targets, channels, samples]"}},
}


class ExportModule(tf.Module):
    """What the SavedModel holds: the float32 model's variables, the metadata and the two signatures.

    Args:
        separator: the in-process separator of a float32 model (its model, STFT, targets, chunk
            plan and channel count).
        metadata: the JSON-able description stored beside the graph.
    """

    def __init__(self, separator: Separator, metadata: dict[str, Any]) -> None:
        super().__init__(name="mss_tf_export")
        self.model_variables = list(separator.model.variables)  # tracked: saved with the graph that reads them
        # a plain function (not tracked): the one model call on a batch of chunks
        self._separate = functools.partial(separate_chunks, separator.model, separator.stft_config)
        self._plan, self._n_targets = separator.plan, len(separator.targets)
        self._stereo = separator.model_channels == 2
        self._refusal = f"{separator.name} is a stereo model: it separates 1 or 2 channels"

        def constant(value: Any, dtype: tf.DType) -> tf.Variable:
            return tf.Variable(value, dtype=dtype, trainable=False)

        spec = separator.stft_config
        self.format = constant(FORMAT, tf.string)
        self.metadata_json = constant(json.dumps(metadata, sort_keys=True), tf.string)
        self.model_name = constant(metadata["model"], tf.string)
        self.targets = constant(list(separator.targets), tf.string)
        self.sample_rate = constant(spec.sample_rate, tf.int32)
        self.n_fft = constant(spec.n_fft, tf.int32)
        self.hop = constant(spec.hop, tf.int32)
        self.chunk_samples = constant(separator.plan.chunk, tf.int32)
        self.overlap_samples = constant(separator.plan.overlap, tf.int32)
        self.channels = constant(separator.model_channels, tf.int32)

    def _checked(self, waves: tf.Tensor) -> tf.Tensor:
        """`waves` (..., channels, samples), after refusing more than 2 channels for a stereo model."""
        if not self._stereo:
            return waves
        with tf.control_dependencies([tf.debugging.assert_less_equal(tf.shape(waves)[-2], 2, message=self._refusal)]):
            return tf.identity(waves)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="waveform")], autograph=False)
    def serve(self, waveform: tf.Tensor) -> dict[str, tf.Tensor]:
        """waveform (channels, samples) at the model rate -> {"stems": (targets, channels, samples)}."""
        stems = overlap_add_graph(self._plan, self._separate, self._checked(waveform), self._n_targets)
        return {"stems": tf.ensure_shape(stems, [self._n_targets, None, None])}

    @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.float32, name="pieces")], autograph=False)
    def separate_chunks(self, pieces: tf.Tensor) -> dict[str, tf.Tensor]:
        """pieces (k, channels, samples) -> {"stems": (k, targets, channels, samples)}: one model call."""
        return {"stems": tf.ensure_shape(self._separate(self._checked(pieces)), [None, self._n_targets, None, None])}


def _metadata(separator: Separator, extra: dict[str, Any]) -> dict[str, Any]:
    spec = separator.stft_config
    paths = weight_paths(separator.model) if isinstance(separator.model, keras.layers.Layer) else {}  # not NMF
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "mss_tf_version": __version__,
        "tensorflow_version": tf.__version__, "model": separator.name, "targets": list(separator.targets),
        "params": model_parameters(separator.model), "channels": separator.model_channels,
        "sample_rate": spec.sample_rate, "stft": spec.to_dict(), "precision": "float32",
        **separator.plan.to_dict(),
        "chunk_seconds": separator.chunk / spec.sample_rate, "overlap_seconds": separator.overlap / spec.sample_rate,
        "signatures": SIGNATURES,
        # the checkpoint path of each of `model_variables`, in order (None: not a weight): what
        # `train.py --init-from EXPORT` copies from
        "weight_paths": [paths.get(id(v)) for v in separator.model.variables],
        **extra,
    }


def _is_export(path: Path) -> bool:
    """An mss-tf SavedModel, LiteRT or ONNX export folder."""
    return (path / METADATA_DIR / METADATA_FILE).is_file() or (path / portable.METADATA_FILE).is_file()


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
    module = ExportModule(separator, metadata)

    def write(folder: Path) -> None:
        tf.saved_model.save(module, str(folder), signatures={SIGNATURE: module.serve,
                                                             CHUNK_SIGNATURE: module.separate_chunks})
        (folder / METADATA_DIR).mkdir(exist_ok=True)
        (folder / METADATA_DIR / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")

    _replace_dir_atomically(out, write)
    return out


def export_run(run_dir: str | Path, out: str | Path, which: str = "best", chunk_seconds: float | None = None,
               overlap_seconds: float = DEFAULT_OVERLAP_SECONDS, fmt: str = "saved_model", variant: str = "float32",
               channels: int = 2) -> Path:
    """Export the best (or latest) checkpoint of a run directory to `out`, separating in chunks of
    `chunk_seconds` (None: the model family's default) overlapping by `overlap_seconds`: a float32
    SavedModel (`fmt` "saved_model"), or a folder with a LiteRT or ONNX file of one chunk of
    `channels` channels in `variant` (`mss_tf.portable`). CheckpointError (one line naming the path)
    for a folder that is not a run or has no checkpoint; ConfigError (naming the model or option)
    for what the format cannot express; both before anything is written.
    """
    run_dir = Path(run_dir)
    if which not in ("best", "latest"):
        raise ConfigError(f"which checkpoint: 'best' or 'latest', got {which!r}")
    if (run_dir / "saved_model.pb").is_file():
        raise CheckpointError(f"{run_dir}: is a SavedModel, not a run directory")
    _check_replaceable(Path(out))
    config = TrainConfig.load(run_dir)
    model_class = get_preset(config.model).model
    portable.check_options(fmt, variant, model_class, config.model, model_channels(config.model, config.model_kwargs),
                           int(channels))
    if fmt != "saved_model":  # the implementations that convert; the same weights
        config.model_kwargs = {**config.model_kwargs, **portable.RUNTIME_KWARGS[model_class]}
    separator = Separator.from_run(run_dir, which=which, precision="float32", config=config,
                                   chunk_seconds=chunk_seconds, overlap_seconds=overlap_seconds)
    extra = {"run_dir": str(run_dir.resolve()), "checkpoint": which, "trained_precision": config.precision,
             "model_kwargs": config.model_kwargs}
    if fmt == "saved_model":
        return export_separator(separator, out, extra)
    metadata = _metadata(separator, extra)
    portable.StaticSTFT(separator.stft_config, separator.plan.chunk)  # ConfigError for an STFT it cannot frame
    _replace_dir_atomically(Path(out), lambda folder: portable.write_portable(separator, folder, fmt, variant,
                                                                              int(channels), metadata))
    return Path(out)


class SavedModelSeparator(WaveformSeparator):
    """An exported SavedModel with the interface of `Separator` (targets, sample_rate, stft_config,
    name, params, separate, separate_model_rate, and the streaming path of `separate_file`);
    `model` is the loaded TensorFlow object.

    It runs what a run's `Separator` runs: `mss_tf.inference`'s `OverlapAdd`, each model call the
    export's `separate_chunks` signature (the graph of `mss_tf.inference.separate_chunks`), and,
    with `wiener_iterations` > 0, the Wiener post-filter of each stereo chunk (NumPy, norbert)
    before the crossfade. The chunk plan is the export's unless `chunk_seconds` / `overlap_seconds`
    say otherwise (that signature takes chunks of any length); `chunks_per_call` chunks go into one
    call. With the export's plan it gives its serving_default signature's output.
    """

    def __init__(self, path: Path, loaded: Any, metadata: dict[str, Any], wiener_iterations: int = 0,
                 chunk_seconds: float | None = None, overlap_seconds: float | None = None,
                 chunks_per_call: int = 1) -> None:
        check_separation_options(chunks_per_call, wiener_iterations)
        self.path = path
        self.model = loaded
        self.metadata = metadata
        self.name = str(metadata["model"])
        self.targets = [str(t) for t in metadata["targets"]]
        self.stft_config = SpectrogramConfig.from_dict(metadata["stft"])
        self.model_channels = int(metadata.get("channels", 1))
        rate = self.stft_config.sample_rate
        if chunk_seconds is None and overlap_seconds is None:
            self.plan = ChunkPlan(int(metadata["chunk_samples"]), int(metadata["overlap_samples"]))
        else:
            self.plan = ChunkPlan.from_seconds(
                int(metadata["chunk_samples"]) / rate if chunk_seconds is None else chunk_seconds,
                int(metadata["overlap_samples"]) / rate if overlap_seconds is None else overlap_seconds, rate)
        self.chunks_per_call = int(chunks_per_call)
        self.wiener_iterations = int(wiener_iterations)
        self._serve = loaded.signatures[SIGNATURE]
        self._separate = loaded.signatures[CHUNK_SIGNATURE]

    @property
    def params(self) -> int:
        """The model's parameter count as `model_parameters` gave it at export time (else the
        number of values in the export's variables)."""
        if "params" in self.metadata:
            return int(self.metadata["params"])
        variables = getattr(self.model, "model_variables", None) or getattr(self.model, "variables", [])
        return count_values(variables)

    def separate_chunks(self, pieces: np.ndarray) -> np.ndarray:
        """(k, channels, samples) -> (k, targets, channels, samples): one call of the export's
        `separate_chunks` signature."""
        return self._separate(pieces=tf.constant(np.asarray(pieces, np.float32)))["stems"].numpy()


def load_saved_model(path: str | Path, wiener_iterations: int = 0, chunk_seconds: float | None = None,
                     overlap_seconds: float | None = None, chunks_per_call: int = 1,
                     precision: str = "float32") -> SavedModelSeparator:
    """Load an export of `export_run` as a `SavedModelSeparator` (the other arguments are its own).

    CheckpointError (one line naming `path`) for a folder that is not a SavedModel, a SavedModel
    without mss-tf metadata (another tool's) or an export of an earlier format; ConfigError for a
    `precision` other than float32 (an export's precision is fixed when it is written).
    """
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
    if int(metadata["format_version"]) < FORMAT_VERSION:
        raise CheckpointError(f"{path}: an export of an earlier mss-tf (format version {metadata['format_version']}, "
                              f"without the {CHUNK_SIGNATURE} signature); export its run again "
                              "(python -m mss_tf.export RUN_DIR OUT)")
    if precision != "float32":
        raise ConfigError(f"{path}: a SavedModel computes in float32, fixed when it was exported; precision "
                          f"{precision} needs the run directory it was exported from")
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # TensorFlow raises many kinds on a corrupt SavedModel
        raise CheckpointError(f"{path}: unreadable SavedModel ({str(exc).splitlines()[0][:200]})") from None
    missing = [name for name in (SIGNATURE, CHUNK_SIGNATURE) if name not in loaded.signatures]
    if missing:
        raise CheckpointError(f"{path}: SavedModel has no {' or '.join(missing)} signature")
    return SavedModelSeparator(path, loaded, metadata, wiener_iterations, chunk_seconds, overlap_seconds,
                               chunks_per_call)


def load_separator(path: str | Path, which: str = "best", precision: str = "float32",
                   chunk_seconds: float | None = None, overlap_seconds: float | None = None,
                   chunks_per_call: int = 1, wiener_iterations: int = 0,
                   config: TrainConfig | None = None) -> WaveformSeparator:
    """A run directory's `Separator` (its `which` checkpoint, in `precision`) or an export's
    `SavedModelSeparator`, with the same separation options, run by the same code; None for
    `chunk_seconds` / `overlap_seconds` is the model's own (a run: its family's default chunk and
    1 s; an export: the plan it was exported with). CheckpointError for a folder that is neither.
    `config`: a run's `TrainConfig.load(path)` when the caller has read it already."""
    path = Path(path)
    options = {"chunk_seconds": chunk_seconds, "overlap_seconds": overlap_seconds, "chunks_per_call": chunks_per_call,
               "wiener_iterations": wiener_iterations}
    if (path / "saved_model.pb").is_file():
        return load_saved_model(path, precision=precision, **options)
    if config is not None or (path / "config.json").is_file():
        return Separator.from_run(path, which=which, precision=precision, config=config, **options)
    raise CheckpointError(f"{path}: neither a train.py run directory (config.json) nor a SavedModel (saved_model.pb)")


def build_parser(parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags of `python -m mss_tf.export` (which passes `mss_tf.cli.ArgumentParser`: one-line errors)."""
    parser = parser_class(
        prog="python -m mss_tf.export",
        description="Export a trained run as a float32 SavedModel whose serving_default signature maps a "
        "waveform [channels, samples] at the model's sample rate to stems [targets, channels, samples] "
        "(STFT, model, iSTFT and chunked overlap-add in the graph; any length), and whose separate_chunks "
        "signature is one model call on a batch of chunks. Runs in plain TensorFlow.",
    )
    parser.add_argument("run_dir", nargs="?", type=Path, metavar="RUN_DIR",
                        help="run directory written by train.py (config.json and checkpoints)")
    parser.add_argument("out", nargs="?", type=Path, metavar="OUT",
                        help="SavedModel folder to write; an earlier export there is replaced once the new one is complete")
    parser.add_argument("--which", choices=["best", "latest"], default="best",
                        help="checkpoint to export: best (by validation loss, the default) or latest")
    parser.add_argument("--chunk-seconds", type=float,
                        help="chunk length the export separates at a time, in seconds (default 10; 5 for BSRNNs); "
                             "bounds memory. evaluate.py and separate.py use it unless told otherwise")
    parser.add_argument("--overlap", type=float, default=DEFAULT_OVERLAP_SECONDS,
                        help="overlap of consecutive chunks in seconds, crossfaded with Hann fades (default 1)")
    parser.add_argument("--format", choices=portable.FORMATS, default="saved_model",
                        help="saved_model (default: the whole track in plain TensorFlow); litert: a .tflite file of "
                             "one chunk, builtin ops only, for Android/iOS; onnx: an .onnx file of one chunk (opset "
                             f"{portable.ONNX_OPSET}). litert/onnx: waveform [channels, chunk] in, stems [targets, "
                             "channels, chunk] out at the model's rate; the caller overlap-adds (examples/litert_separate.py)")
    parser.add_argument("--variant", choices=portable.VARIANTS, default="float32",
                        help="litert only: float32 (default), float16 (weights in float16) or int8 (dynamic-range "
                             "quantised weights); the uSDR each costs is in benchmarks/RESULTS.md")
    parser.add_argument("--channels", type=int, default=2,
                        help="litert/onnx: channels of the exported chunk, 1 or 2 (default 2; a stereo model takes 2)")
    parser.add_argument("--info", type=Path, metavar="EXPORT",
                        help="print the metadata of an existing export (SavedModel, LiteRT or ONNX folder: model, "
                             "targets, sample rate, STFT, chunking) and exit")
    return parser


def main(argv: list[str] | None = None, parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser) -> int:
    parser = build_parser(parser_class)
    args = parser.parse_args(argv)
    if args.info is not None:
        if (args.info / portable.METADATA_FILE).is_file():  # a LiteRT or ONNX export
            metadata = portable.PortableSeparator(args.info).metadata
        else:
            metadata = load_saved_model(args.info).metadata
        print(json.dumps(metadata, indent=2, sort_keys=True))
        return 0
    if args.run_dir is None or args.out is None:
        parser.error("RUN_DIR and OUT are required (or --info SAVED_MODEL)")
    out = export_run(args.run_dir, args.out, args.which, args.chunk_seconds, args.overlap, fmt=args.format,
                     variant=args.variant, channels=args.channels)
    what = "SavedModel" if args.format == "saved_model" else f"{args.format} {portable.FILES[args.format]}"
    print(f"exported {args.run_dir} ({args.which} checkpoint, {args.variant}, {what}) to {out}")
    return 0


if __name__ == "__main__":
    cli.run(lambda: main(parser_class=cli.ArgumentParser))
