"""LiteRT (.tflite) and ONNX exports of a trained separator: one waveform chunk in, its stems out,
with the STFT, the model and the inverse STFT inside, for phones and runtimes without TensorFlow.

`python -m mss_tf.export RUN OUT --format litert|onnx` writes the folder OUT holding

    model.tflite | model.onnx   the graph of one chunk at the model's sample rate, static shapes:
        input  "waveform"  float32 [channels, chunk_samples]
        output "stems"     float32 [targets, channels, chunk_samples]
    mss_tf.json                 sample_rate, chunk_samples, overlap_samples, targets, channels, the
                                STFT, the variant, the ONNX opset, the tensor names

What the graph does: the suite's STFT (`mss_tf.audio.spectrogram`: periodic Hann window, centre
padding, n_fft, hop of the run's `SpectrogramConfig`) as matrix products with fixed DFT bases
(`mss_tf.audio.dft.StaticSTFT`: the same numbers as `tf.signal.stft`), the model, and the inverse
STFT with its window-sum normalisation fixed for the chunk length. A mono model separates each
input channel on its own; a stereo model (`channels` 2) both at once. LiteRT files hold only
builtin ops (the converter is given `TFLITE_BUILTINS` alone: no Flex / SELECT_TF_OPS), so they
run on the stock LiteRT runtime of Android and iOS.

What stays with the caller, exactly as `mss_tf.inference` does it:
  * resampling: the graph works at the model's rate (`sample_rate`, 16 kHz for the U-Net and the
    small presets); a file at another rate is resampled before and after, as `Separator.separate`
    does (soxr in this package);
  * the chunk plan and overlap-add: `mss_tf.inference.overlap_add(ChunkPlan(chunk_samples,
    overlap_samples), run_chunk, waves, n_targets)` with a `run_chunk` that calls the graph once per
    chunk; the one piece shorter than a chunk (a whole track shorter than one chunk) is zero-padded
    to the chunk and its output cut back. `examples/litert_separate.py` holds a NumPy-only copy of
    the plan (tests/test_portable.py checks it against `ChunkPlan`) and the reference loop.

Variants (LiteRT): "float32"; "float16" (weights stored in float16, computed in float32); "int8"
(dynamic-range quantisation: weights, the DFT bases included, in int8). ONNX: float32, opset
`ONNX_OPSET`. Models: the U-Net, BSRNN(-SE) (its BLSTMs exported through the Keras LSTM path, the
same weights as the fused kernel, which converts to neither format) and the RoFormers (attention
by `einsum`, the same weights); NMF is refused (it fits its activations per track).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from mss_tf.audio.dft import StaticSTFT
from mss_tf.audio.spectrogram import SpectrogramConfig
from mss_tf.errors import CheckpointError, ConfigError
from mss_tf.inference import ChunkPlan, WaveformSeparator

FORMATS = ("saved_model", "litert", "onnx")
VARIANTS = ("float32", "float16", "int8")
FORMAT_VARIANTS = {"saved_model": ("float32",), "litert": VARIANTS, "onnx": ("float32",)}
FILES = {"litert": "model.tflite", "onnx": "model.onnx"}
METADATA_FILE = "mss_tf.json"
FORMAT_NAMES = {"litert": "mss-tf-litert", "onnx": "mss-tf-onnx"}
ONNX_OPSET = 17
INPUT, OUTPUT = "waveform", "stems"
# Model classes the static graph can hold, and the implementation switches the export builds them
# with (the same weights: checkpoints do not depend on them): the Keras LSTM converts to LiteRT's
# WHILE and ONNX's Loop, the fused BlockLSTM to neither; einsum attention has no while loop.
RUNTIME_KWARGS: dict[str, dict[str, str]] = {
    "UNet": {},
    "BSRNN": {"lstm_implementation": "keras"},
    "BSRoformer": {"attention_implementation": "einsum"},
    "MelBandRoformer": {"attention_implementation": "einsum"},
}


def check_options(fmt: str, variant: str, model_class: str, model: str, model_channels: int, channels: int) -> None:
    """ConfigError (one line naming the model or option) for what a format cannot express; called
    before anything is built or written."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: choose from {', '.join(FORMATS)}")
    if variant not in FORMAT_VARIANTS[fmt]:
        raise ConfigError(f"--variant {variant}: the {fmt} export is {' or '.join(FORMAT_VARIANTS[fmt])} only "
                          f"(float16 and int8 are LiteRT variants)")
    if fmt == "saved_model":
        return
    if model_class not in RUNTIME_KWARGS:
        raise ConfigError(f"{model} ({model_class}) cannot be exported to {fmt}: it fits per track, outside a "
                          f"static graph; export it as a SavedModel or use the run directory")
    if channels not in (1, 2):
        raise ConfigError(f"--channels {channels}: a {fmt} export takes 1 or 2 channels")
    if model_channels == 2 and channels != 2:
        raise ConfigError(f"{model}: a stereo model; its {fmt} export takes 2 channels (--channels 2)")


def chunk_graph(model: Any, stft: StaticSTFT, channels: int, n_targets: int) -> Callable[[tf.Tensor], tf.Tensor]:
    """The graph of one chunk: waveform (channels, chunk) -> stems (targets, channels, chunk), float32."""
    n, t, f = stft.n_samples, stft.n_frames, stft.config.n_bins
    stereo = int(getattr(model, "channels", 1)) == 2

    @tf.function(input_signature=[tf.TensorSpec([channels, n], tf.float32, name=INPUT)])
    def separate(waveform: tf.Tensor) -> tf.Tensor:
        spectrum = stft.stft(waveform)  # (C, T, F, 2)
        if stereo:  # both channels at once: (1, 2, T, F, 2) -> (1, S, 2, T, F, 2)
            estimate = model(spectrum[tf.newaxis], training=False)  # (1, S, 2, T, F, 2)
            flat = tf.reshape(tf.cast(estimate, tf.float32), [n_targets * channels, t, f, 2])  # (S*C, T, F, 2): no 6-D slice
            return tf.reshape(stft.istft(flat), [n_targets, channels, n])  # (S, C, n)
        estimate = tf.cast(model(spectrum, training=False), tf.float32)  # (C, S, T, F, 2): channels as batch items
        waves = tf.reshape(stft.istft(tf.reshape(estimate, [channels * n_targets, t, f, 2])), [channels, n_targets, n])
        return tf.transpose(waves, [1, 0, 2])  # (S, C, n)

    return separate


def frozen_graph(separate: Callable[[tf.Tensor], tf.Tensor]) -> Any:
    """The chunk graph's concrete function with the model's variables made constants (while loops
    kept as functional While ops, which both converters take) and its output tensor named "stems"
    (the converters name tensors after the graph's nodes)."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(separate.get_concrete_function(), lower_control_flow=False)
    graph_def = frozen.graph.as_graph_def()
    output = frozen.outputs[0].name.split(":")[0]
    for node in graph_def.node:
        if node.name == output:  # the function's final Identity, which nothing in the graph reads
            node.name = OUTPUT
    wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
    return wrapped.prune(wrapped.graph.get_tensor_by_name(f"{INPUT}:0"), wrapped.graph.get_tensor_by_name(f"{OUTPUT}:0"))


def litert_model(frozen: Any, variant: str) -> bytes:
    """The .tflite bytes of a frozen chunk graph, builtin ops only, in `variant`."""
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex: the stock runtime
    if variant in ("float16", "int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # alone: dynamic-range int8 weights
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def _log1p(ctx: Any, node: Any, name: str, args: Any) -> None:
    """tf2onnx handler for TensorFlow's Log1p, which ONNX lacks: Log(x + 1)."""
    from tf2onnx import utils

    one = ctx.make_const(utils.make_name("one"), np.array(1.0, np.float32))
    shifted = ctx.make_node("Add", [node.input[0], one.output[0]])
    ctx.replace_inputs(node, [shifted.output[0]])
    node.type = "Log"


def onnx_model(frozen: Any, metadata: dict[str, Any]) -> bytes:
    """The .onnx bytes of a frozen chunk graph (tf2onnx from its GraphDef, opset ONNX_OPSET), with
    `metadata` in the model's metadata_props."""
    import tf2onnx

    proto, _ = tf2onnx.convert.from_graph_def(frozen.graph.as_graph_def(), input_names=[f"{INPUT}:0"],
                                              output_names=[f"{OUTPUT}:0"], opset=ONNX_OPSET,
                                              custom_op_handlers={"Log1p": (_log1p, [])})
    renames = {f"{INPUT}:0": INPUT, f"{OUTPUT}:0": OUTPUT}  # tf2onnx keeps TensorFlow's ":0"
    for node in proto.graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
        node.output[:] = [renames.get(name, name) for name in node.output]
    for value in [*proto.graph.input, *proto.graph.output]:
        value.name = renames.get(value.name, value.name)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "mss_tf", json.dumps(metadata, sort_keys=True)
    return proto.SerializeToString()


def portable_metadata(fmt: str, variant: str, channels: int, plan: ChunkPlan, base: dict[str, Any]) -> dict[str, Any]:
    """mss_tf.json of a LiteRT or ONNX export: the SavedModel's metadata (`base`) with this format's
    file, variant, channel count and tensors."""
    shapes = {INPUT: f"float32 [{channels}, {plan.chunk}]",
              OUTPUT: f"float32 [{len(base['targets'])}, {channels}, {plan.chunk}]"}
    meta = {**{k: v for k, v in base.items() if k not in ("signatures", "format", "format_version", "precision")},
            "format": FORMAT_NAMES[fmt], "format_version": 1, "file": FILES[fmt], "variant": variant,
            "channels": channels, "model_channels": base["channels"], "inputs": {INPUT: shapes[INPUT]},
            "outputs": {OUTPUT: shapes[OUTPUT]},
            "caller": "resample to sample_rate; overlap-add chunks with the chunk plan "
                      "(mss_tf.inference.ChunkPlan, examples/litert_separate.py); pad a short piece to chunk_samples"}
    if fmt == "onnx":
        meta["opset"] = ONNX_OPSET
    return meta


def write_portable(separator: Any, folder: Path, fmt: str, variant: str, channels: int, metadata: dict[str, Any]) -> None:
    """Build, convert and write `separator` (a float32 model built with RUNTIME_KWARGS) into `folder`
    (the temporary folder of an atomic export): the model file and mss_tf.json."""
    stft = StaticSTFT(separator.stft_config, separator.plan.chunk)
    separate = chunk_graph(separator.model, stft, channels, len(separator.targets))
    frozen = frozen_graph(separate)
    meta = portable_metadata(fmt, variant, channels, separator.plan, metadata)
    data = litert_model(frozen, variant) if fmt == "litert" else onnx_model(frozen, meta)
    (folder / FILES[fmt]).write_bytes(data)
    (folder / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")



class PortableSeparator(WaveformSeparator):
    """A LiteRT or ONNX export run in its own runtime, with the interface of `Separator` (separate,
    separate_model_rate, the streaming path): the chunk plan and overlap-add of `mss_tf.inference`
    around one runtime call per chunk. What benchmarks/export.py measures and evaluates.

    A piece shorter than the export's chunk is zero-padded to it and its output cut back; a mono
    piece given to a 2-channel export is duplicated and the two estimates averaged, each channel of
    a stereo piece given to a 1-channel export is separated on its own.

    Args:
        path: the export folder (mss_tf.json and the model file).
        threads: the runtime's threads (LiteRT interpreter threads, ONNX Runtime intra-op threads).
    """

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        self.path = Path(path)
        meta_path = self.path / METADATA_FILE
        try:
            self.metadata = json.loads(meta_path.read_text())
            self.fmt = {name: fmt for fmt, name in FORMAT_NAMES.items()}[self.metadata["format"]]
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{self.path}: not a LiteRT or ONNX export of mss-tf ({exc})") from None
        meta = self.metadata
        self.name, self.targets = str(meta["model"]), [str(t) for t in meta["targets"]]
        self.stft_config = SpectrogramConfig.from_dict(meta["stft"])
        self.plan = ChunkPlan(int(meta["chunk_samples"]), int(meta["overlap_samples"]))
        self.channels = int(meta["channels"])
        self.model_channels = int(meta.get("model_channels", 1))
        model_file = self.path / meta["file"]
        if self.fmt == "litert":
            from ai_edge_litert.interpreter import Interpreter

            self.interpreter = Interpreter(model_path=str(model_file), num_threads=int(threads))
            self.interpreter.allocate_tensors()
            self._input = self.interpreter.get_input_details()[0]["index"]
            self._output = self.interpreter.get_output_details()[0]["index"]
        else:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = int(threads), 1
            self.session = onnxruntime.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])

    def run_chunk(self, piece: np.ndarray) -> np.ndarray:
        """(channels, chunk_samples) -> (targets, channels, chunk_samples): one runtime call."""
        piece = np.ascontiguousarray(piece, np.float32)
        if self.fmt == "onnx":
            return self.session.run([OUTPUT], {INPUT: piece})[0]
        self.interpreter.set_tensor(self._input, piece)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output).copy()

    def separate_chunks(self, pieces: np.ndarray) -> np.ndarray:
        """(k, channels, samples <= chunk) -> (k, targets, channels, samples): one call per chunk."""
        out = []
        for piece in np.asarray(pieces, np.float32):
            n_channels, n = piece.shape
            padded = np.pad(piece, [(0, 0), (0, self.plan.chunk - n)])  # (C, chunk)
            if n_channels == self.channels:
                estimate = self.run_chunk(padded)
            elif self.channels == 2:  # a mono piece, a stereo export: duplicated, the estimates averaged
                estimate = self.run_chunk(np.repeat(padded, 2, axis=0)).mean(axis=1, keepdims=True)
            else:  # each channel on its own
                estimate = np.concatenate([self.run_chunk(channel[np.newaxis]) for channel in padded], axis=1)
            out.append(estimate[:, :, :n])
        return np.stack(out)
