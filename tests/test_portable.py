"""LiteRT and ONNX exports (mss_tf.portable): each exported file runs in its own runtime, in a fresh
process where neither mss_tf nor TensorFlow can be imported, separates a multi-chunk signal with
the example's reference loop (examples/litert_separate.py, the project's chunk plan) and matches
the in-process Separator; LiteRT files hold builtin ops only; bad options fail before any file."""

import importlib.util
import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from mss_tf.audio.dft import StaticSTFT
from mss_tf.audio.spectrogram import SpectrogramConfig, istft, stft
from mss_tf.checkpoints import write_untrained_run
from mss_tf.config import TrainConfig
from mss_tf.errors import ConfigError
from mss_tf.export import export_run
from mss_tf.inference import ChunkPlan, Separator, overlap_add
from tests.conftest import REPO
from tests.test_export import stereo_run

EXAMPLE = REPO / "examples" / "litert_separate.py"
CHUNK_SECONDS, OVERLAP_SECONDS = 1.0, 0.25  # 1 s chunks: the signals below span several
FLOAT32_DB = 60.0  # float32 exports: the difference at least this far below the signal

# Runs in a fresh interpreter outside the repository, mss_tf and TensorFlow made unimportable:
# only NumPy, the runtime and the example's reference loop.
FRESH = r"""
import json, sys
sys.modules["mss_tf"] = sys.modules["tensorflow"] = None  # importing either now fails
job = json.loads(sys.argv[1])
sys.path.insert(0, job["examples"])
import numpy as np
import litert_separate as example

meta = json.load(open(job["export"] + "/mss_tf.json"))
path = job["export"] + "/" + meta["file"]
report = {"meta": meta}
if job["runtime"] == "litert":
    from ai_edge_litert.interpreter import Interpreter
    run_chunk = example.litert_chunk_function(path)
    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    report["ops"] = sorted({op["op_name"] for op in interpreter._get_ops_details()})
    report["inputs"] = [[d["name"], d["shape"].tolist()] for d in interpreter.get_input_details()]
    report["outputs"] = [[d["name"], d["shape"].tolist()] for d in interpreter.get_output_details()]
else:
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    run_chunk = lambda piece: session.run(["stems"], {"waveform": piece})[0]
    report["inputs"] = [[d.name, d.shape] for d in session.get_inputs()]
    report["outputs"] = [[d.name, d.shape] for d in session.get_outputs()]
    report["metadata"] = json.loads(session.get_modelmeta().custom_metadata_map["mss_tf"])
plan = example.ChunkPlan(meta["chunk_samples"], meta["overlap_samples"])
inputs = np.load(job["inputs"])
np.savez(job["outputs"], **{k: example.overlap_add(plan, run_chunk, inputs[k], len(meta["targets"]))
                             for k in inputs.files})
report["modules"] = sorted(m.split(".")[0] for m in sys.modules if m.split(".")[0] in ("mss_tf", "tensorflow")
                           and sys.modules[m] is not None)
print(json.dumps(report))
"""


def run_fresh(runtime: str, export: Path, inputs: dict[str, np.ndarray], tmp: Path) -> tuple[dict, dict]:
    """Separate `inputs` ((channels, n) each) with `export` in a fresh process (see FRESH)."""
    np.savez(tmp / f"{runtime}-inputs.npz", **inputs)
    job = {"runtime": runtime, "export": str(export), "examples": str(EXAMPLE.parent),
           "inputs": str(tmp / f"{runtime}-inputs.npz"), "outputs": str(tmp / f"{runtime}-outputs.npz")}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", FRESH, json.dumps(job)], capture_output=True, text=True, cwd=tmp,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = np.load(job["outputs"])
    return json.loads(result.stdout.strip().splitlines()[-1]), {k: outputs[k] for k in outputs.files}


def difference_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """How far below the reference's energy the difference lies, in dB."""
    error = np.sum((np.asarray(reference, np.float64) - estimate) ** 2)
    return float(10 * np.log10(np.sum(np.asarray(reference, np.float64) ** 2) / max(error, 1e-30)))


def load_example():
    spec = importlib.util.spec_from_file_location("litert_separate", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def signals(rate: int, seconds: float, seed: int) -> dict[str, np.ndarray]:
    """A stereo signal of several chunks (tones and noise) and one shorter than a chunk."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
    long = np.stack([tone + 0.05 * rng.standard_normal(t.size), 0.6 * tone + 0.05 * rng.standard_normal(t.size)])
    return {"long": long.astype(np.float32), "short": long[:, : int(0.6 * rate)].astype(np.float32)}


def expected(run: Path, waves: np.ndarray) -> np.ndarray:
    """What the in-process Separator gives at the model's rate (a track shorter than a chunk: the
    export's fixed chunk zero-padded, as the reference loop does)."""
    separator = Separator.from_run(run, chunk_seconds=CHUNK_SECONDS, overlap_seconds=OVERLAP_SECONDS)
    if waves.shape[1] >= separator.plan.chunk:
        return separator.separate_model_rate(waves)
    padded = np.pad(waves, [(0, 0), (0, separator.plan.chunk - waves.shape[1])])
    return separator.separate_chunks(padded[np.newaxis])[0, :, :, : waves.shape[1]]


@pytest.fixture(scope="module")
def unet_exports(tmp_path_factory):
    """unet-tiny (untrained weights) exported once to LiteRT and to ONNX, 1 s chunks."""
    root = tmp_path_factory.mktemp("portable")
    run = write_untrained_run(root / "run", "unet-tiny")
    exports = {fmt: export_run(run, root / fmt, chunk_seconds=CHUNK_SECONDS, overlap_seconds=OVERLAP_SECONDS,
                               fmt=fmt) for fmt in ("litert", "onnx")}
    return run, exports


def test_static_stft_is_the_suite_stft():
    """The matrix-product STFT and iSTFT of an export against tf.signal's (zero and reflect
    padding, hop n_fft/2 and n_fft/4, lengths on and off the hop grid)."""
    rng = np.random.default_rng(0)
    for config, n in [(SpectrogramConfig(16000, 1024, 512), 8000), (SpectrogramConfig(16000, 512, 128, "reflect"), 3001)]:
        x = rng.standard_normal((2, n)).astype(np.float32)
        static = StaticSTFT(config, n)
        reference = stft(x, config).numpy()
        ours = static.stft(x).numpy()
        assert ours.shape == reference.shape + (2,)
        assert np.abs(ours[..., 0] + 1j * ours[..., 1] - reference).max() < 1e-5 * np.abs(reference).max()
        back = static.istft(ours).numpy()
        assert np.abs(back - istft(reference, config, n).numpy()).max() < 1e-5
        assert np.abs(back - x).max() < 1e-4  # and it inverts
    with pytest.raises(ConfigError, match="hop must divide n_fft"):
        StaticSTFT(SpectrogramConfig(16000, 1024, 384), 8000)


@pytest.mark.parametrize("runtime", ["litert", "onnx"])
def test_export_separates_in_its_own_runtime_like_the_separator(unet_exports, runtime, tmp_path):
    """The exported file in its runtime (fresh process, no mss_tf, no TensorFlow) with the
    example's reference loop against the in-process Separator: a 2.7 s stereo signal (4 chunks of
    1 s) and one shorter than a chunk; float32, at least 60 dB below the signal."""
    run, exports = unet_exports
    inputs = signals(16000, 2.7, seed=1)
    report, outputs = run_fresh(runtime, exports[runtime], inputs, tmp_path)
    assert report["modules"] == []
    assert report["inputs"] == [["waveform", [2, 16000]]] and report["outputs"] == [["stems", [4, 2, 16000]]]
    assert report["meta"]["sample_rate"] == 16000 and report["meta"]["targets"] == ["vocals", "drums", "bass", "other"]
    for name, waves in inputs.items():
        reference = expected(run, waves)
        assert outputs[name].shape == reference.shape
        db = difference_db(reference, outputs[name])
        print(f"{runtime} {name}: difference {db:.1f} dB below the signal")
        assert db > FLOAT32_DB, (name, db)
    if runtime == "litert":  # builtin ops only: no Flex (TensorFlow) op, no custom op
        assert report["ops"] and not [op for op in report["ops"] if op.startswith("Flex") or op == "CUSTOM"], report["ops"]
        assert {"BATCH_MATMUL", "FULLY_CONNECTED"} & set(report["ops"])  # the DFT as a matrix product
    else:
        assert report["metadata"]["opset"] == report["meta"]["opset"] == 17


def test_info_prints_a_portable_exports_metadata(unet_exports, capsys):
    """`python -m mss_tf.export --info FOLDER` reads a LiteRT or ONNX export's mss_tf.json."""
    from mss_tf.export import main

    for fmt, name in [("litert", "model.tflite"), ("onnx", "model.onnx")]:
        assert main(["--info", str(unet_exports[1][fmt])]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert printed["file"] == name and printed["chunk_samples"] == 16000 and printed["overlap_samples"] == 4000


def test_example_chunk_plan_is_the_projects(tmp_path):
    """examples/litert_separate.py's NumPy copy of the plan: the same starts and windows as
    ChunkPlan, and its overlap-add the same sums as mss_tf.inference.overlap_add."""
    example = load_example()
    for chunk, overlap in [(16000, 4000), (1000, 999), (1000, 0), (10, 7)]:
        ours, theirs = example.ChunkPlan(chunk, overlap), ChunkPlan(chunk, overlap)
        for n in [0, 1, chunk - 1, chunk, chunk + 1, 3 * chunk + 17, 10 * chunk]:
            assert ours.starts(n) == theirs.starts(n), (chunk, overlap, n)
        for first in (False, True):
            for last in (False, True):
                np.testing.assert_array_equal(ours.window(first, last), theirs.window(first, last))
    plan = ChunkPlan(1000, 300)
    waves = np.random.default_rng(2).standard_normal((2, 4321)).astype(np.float32)
    gains = np.array([0.5, -1.0, 2.0], np.float32)[:, np.newaxis, np.newaxis]

    def run_chunk(piece):  # (C, n) -> (3, C, n): something that depends on position within the chunk
        return gains * piece * np.linspace(0.5, 1.5, piece.shape[-1], dtype=np.float32)

    mine = example.overlap_add(example.ChunkPlan(1000, 300), run_chunk, waves, 3)
    reference = overlap_add(plan, lambda pieces: np.stack([run_chunk(p) for p in pieces]), waves, 3)
    np.testing.assert_allclose(mine, reference, rtol=1e-6, atol=1e-6)


def write_pcm16(path: Path, audio: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(audio.shape[0])
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(np.round(np.clip(audio, -1, 0.99) * 32767).astype("<i2").T.tobytes())


def test_example_separates_a_wav(unet_exports, tmp_path):
    """examples/litert_separate.py in a subprocess on a 44.1 kHz stereo wav: one 16-bit wav per
    target, at the input's rate and length, equal (within 16-bit rounding) to the in-process
    Separator run between the example's own resampling steps."""
    run, exports = unet_exports
    audio = signals(44100, 2.3, seed=3)["long"]
    write_pcm16(tmp_path / "song.wav", audio, 44100)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, str(EXAMPLE), str(exports["litert"]), str(tmp_path / "song.wav"), "--out",
                             str(tmp_path / "stems")], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    example = load_example()
    read, rate = example.read_wav(tmp_path / "song.wav")
    model_rate = example.resample(read, 44100, 16000)
    stems = expected(run, model_rate)
    for target, stem in zip(["vocals", "drums", "bass", "other"], stems):
        written, written_rate = example.read_wav(tmp_path / "stems" / f"{target}.wav")
        assert written_rate == 44100 and written.shape == audio.shape
        back = example.resample(stem, 16000, 44100)[:, : audio.shape[1]]
        assert difference_db(back, written) > 35.0, target  # 16-bit PCM of a quiet stem
    bad = subprocess.run([sys.executable, str(EXAMPLE), str(tmp_path), str(tmp_path / "song.wav"), "--out",
                          str(tmp_path / "x")], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "mss_tf.json" in bad.stderr
    assert not (tmp_path / "x").exists()


def test_bad_options_fail_before_anything_is_written(tmp_path):
    """What a format cannot express is a one-line ConfigError naming the model or option, and no
    file or folder appears."""
    nmf = tmp_path / "nmf-run"
    nmf.mkdir()
    TrainConfig(model="nmf").resolve().save(nmf)
    stereo = tmp_path / "stereo-run"
    stereo.mkdir()
    TrainConfig(model="bsrnn-tiny", model_kwargs={"channels": 2}).resolve().save(stereo)
    cases = [
        (nmf, {"fmt": "litert"}, "nmf (NMFSeparator) cannot be exported to litert"),
        (nmf, {"fmt": "onnx"}, "nmf (NMFSeparator) cannot be exported to onnx"),
        (nmf, {"fmt": "onnx", "variant": "int8"}, "--variant int8: the onnx export is float32 only"),
        (nmf, {"fmt": "saved_model", "variant": "float16"}, "--variant float16"),
        (nmf, {"fmt": "tflite"}, "--format 'tflite'"),
        (stereo, {"fmt": "litert", "channels": 1}, "bsrnn-tiny: a stereo model"),
        (stereo, {"fmt": "onnx", "channels": 3}, "--channels 3"),
    ]
    for run, options, message in cases:
        with pytest.raises(ConfigError) as caught:
            export_run(run, tmp_path / "out", **options)
        assert message in str(caught.value) and "\n" not in str(caught.value), (options, caught.value)
        assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nmf-run", "stereo-run"]  # no temporary folder left


def test_cli_format_flag(tmp_path, capsys):
    """`mss-export RUN OUT --format onnx --variant int8` (the CLI's main and error handling, in this
    process) is refused with one `error:` line, exit code 2, before anything is written; an unknown
    --format is refused by the parser."""
    from mss_tf import cli
    from mss_tf.cli.export import main

    run = tmp_path / "run"
    run.mkdir()
    TrainConfig(model="unet-tiny").resolve().save(run)
    for flags, message in [(["--format", "onnx", "--variant", "int8"], "--variant int8"),
                           (["--format", "tflite"], "--format")]:
        with pytest.raises(SystemExit) as exited:
            cli.run(lambda: main([str(run), str(tmp_path / "out"), *flags]))
        assert exited.value.code == 2
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert lines[-1].startswith("error: ") and message in lines[-1], lines
        assert not (tmp_path / "out").exists()
    from mss_tf.cli.train import main as train_main  # train.py --export-format: refused before training

    with pytest.raises(SystemExit) as exited:
        cli.run(lambda: train_main(["--model", "nmf", "--export", "--export-format", "onnx", "--run-dir",
                                    str(tmp_path / "nmf-run")]))
    assert exited.value.code == 2 and "nmf (NMFSeparator) cannot be exported to onnx" in capsys.readouterr().err
    assert not (tmp_path / "nmf-run").exists()


STEREO = "bs-roformer-tiny-stereo"  # bs-roformer-tiny with channels=2: both channels in one model call


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["bsrnn-small", "bsrnn-se-small", "bs-roformer-small", "mel-roformer-small", STEREO])
def test_larger_models_export_and_separate_in_both_runtimes(preset, tmp_path):
    """bsrnn-small / bsrnn-se-small (their BLSTMs through the Keras LSTM: LiteRT WHILE, ONNX Loop),
    the small RoFormers (einsum attention) and a stereo RoFormer: LiteRT float32 and ONNX, in their
    runtimes, within 60 dB of the in-process Separator (which runs the fused LSTM / blocked
    attention) on 4 chunks."""
    run = stereo_run(tmp_path / "run", "bs-roformer-tiny") if preset == STEREO else write_untrained_run(tmp_path / "run", preset)
    inputs = {"long": signals(16000, 2.7, seed=4)["long"]}
    reference = expected(run, inputs["long"])
    for runtime in ("litert", "onnx"):
        export = export_run(run, tmp_path / runtime, chunk_seconds=CHUNK_SECONDS, overlap_seconds=OVERLAP_SECONDS,
                            fmt=runtime)
        report, outputs = run_fresh(runtime, export, inputs, tmp_path)
        db = difference_db(reference, outputs["long"])
        print(f"{preset} {runtime}: difference {db:.1f} dB below the signal")
        assert db > FLOAT32_DB, (preset, runtime, db)
        if runtime == "litert":
            assert not [op for op in report["ops"] if op.startswith("Flex") or op == "CUSTOM"], report["ops"]


@pytest.mark.slow
def test_smaller_litert_variants_run_and_cost_little(unet_exports, tmp_path):
    """float16 and int8 LiteRT files of unet-tiny: smaller, builtin ops only, and near the float32
    export (the uSDR they cost on the demo songs, for a trained model, is in benchmarks/RESULTS.md)."""
    run, exports = unet_exports
    inputs = {"long": signals(16000, 2.7, seed=5)["long"]}
    reference = expected(run, inputs["long"])
    size = (exports["litert"] / "model.tflite").stat().st_size
    for variant, floor_db in [("float16", 40.0), ("int8", 15.0)]:
        export = export_run(run, tmp_path / variant, chunk_seconds=CHUNK_SECONDS, overlap_seconds=OVERLAP_SECONDS,
                            fmt="litert", variant=variant)
        report, outputs = run_fresh("litert", export, inputs, tmp_path)
        db = difference_db(reference, outputs["long"])
        smaller = (export / "model.tflite").stat().st_size / size
        print(f"unet-tiny litert {variant}: difference {db:.1f} dB below the signal, {smaller:.2f} x the float32 size")
        assert report["meta"]["variant"] == variant and db > floor_db and smaller < 0.6
        assert not [op for op in report["ops"] if op.startswith("Flex") or op == "CUSTOM"], report["ops"]
