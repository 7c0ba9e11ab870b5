"""SavedModel export (mss_tf.export): the export runs in a process that has only TensorFlow and
gives the in-process Separator's output, chunk plan included, at lengths never seen at export
time, for mono models and a stereo one; every way of loading an export runs the in-process code."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from mss_tf import cli
from mss_tf.checkpoints import BEST, model_variables, write_untrained_run
from mss_tf.config import TrainConfig
from mss_tf.errors import AudioError, CheckpointError, ConfigError
from mss_tf.export import (CHUNK_SIGNATURE, EXPORT_DIR, METADATA_DIR, METADATA_FILE, build_parser, export_run,
                           load_saved_model, main)
from mss_tf.inference import DEFAULT_OVERLAP_SECONDS, Separator, default_chunk_seconds
from mss_tf.models.registry import build_model
from tests.conftest import REPO, write_tone_musdb

CHUNK_SECONDS, OVERLAP_SECONDS = 2.0, 0.5  # small chunks: long inputs stay cheap
TOLERANCE = 1e-4

# Runs in a fresh interpreter outside the repository: TensorFlow and NumPy only.
FRESH = r"""
import json, sys
import numpy as np
import tensorflow as tf

job = json.loads(sys.argv[1])
loaded = tf.saved_model.load(job["saved_model"])
serve = loaded.signatures["serving_default"]
inputs = np.load(job["inputs"])
np.savez(job["outputs"], **{k: serve(waveform=tf.constant(inputs[k]))["stems"].numpy() for k in inputs.files})
low = {tf.bfloat16.as_datatype_enum, tf.float16.as_datatype_enum}
graph = serve.graph.as_graph_def()
nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
assert "mss_tf" not in sys.modules and "tensorflow_io" not in sys.modules, sorted(sys.modules)
print(json.dumps({
    "sample_rate": int(loaded.sample_rate.numpy()), "n_fft": int(loaded.n_fft.numpy()), "hop": int(loaded.hop.numpy()),
    "targets": [t.decode() for t in loaded.targets.numpy()], "model": loaded.model_name.numpy().decode(),
    "format": loaded.format.numpy().decode(), "chunk_samples": int(loaded.chunk_samples.numpy()),
    "overlap_samples": int(loaded.overlap_samples.numpy()),
    "metadata": json.loads(loaded.metadata_json.numpy().decode()),
    "weight_dtypes": sorted({v.dtype.name for v in loaded.model_variables if v.dtype.is_floating}),
    "low_precision_ops": sorted({n.op for n in nodes for a in n.attr.values()
                                 if a.type in low or any(t in low for t in a.list.type)}),
    "inputs": {k: v.dtype.name for k, v in serve.structured_input_signature[1].items()},
    "channels": int(loaded.channels.numpy()), "signatures": sorted(loaded.signatures),
}))
"""


def run_fresh(saved_model: Path, inputs: dict[str, np.ndarray], tmp: Path) -> tuple[dict, dict]:
    """Run an export in a new Python with only TensorFlow (cwd outside the repository)."""
    np.savez(tmp / "inputs.npz", **inputs)
    job = {"saved_model": str(saved_model), "inputs": str(tmp / "inputs.npz"), "outputs": str(tmp / "outputs.npz")}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", FRESH, json.dumps(job)], capture_output=True, text=True,
                            cwd=tmp, env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = np.load(tmp / "outputs.npz")
    return json.loads(result.stdout.strip().splitlines()[-1]), {k: outputs[k] for k in outputs.files}


fake_run = write_untrained_run  # a run directory with untrained weights in best/
STEREO = "bsrnn-tiny-stereo"  # the bsrnn-tiny preset with channels=2 (stereo_run)


def stereo_run(run_dir: Path, preset: str = "bsrnn-tiny") -> Path:
    """A run of `preset` with `channels=2` in its model_kwargs and untrained weights in best/."""
    config = TrainConfig(model=preset, model_kwargs={"channels": 2}).resolve()
    run_dir.mkdir(parents=True)
    config.save(run_dir)
    model = build_model(config.model, **config.model_kwargs)
    model(tf.zeros([1, 2, 16, config.spectrogram.n_bins, 2]), training=False)
    tf.train.Checkpoint(model=model_variables(model)).save(str(run_dir / BEST / "ckpt"))
    return run_dir


def random_audio(n_samples: int, seed: int, channels: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.5, 0.5, (channels, n_samples)).astype(np.float32)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """unet-tiny exported by `python -m mss_tf.export`, bsrnn-se-tiny and a stereo bsrnn-tiny by
    `export_run`; 2 s chunks."""
    root = tmp_path_factory.mktemp("exports")
    unet, se = fake_run(root / "unet-run", "unet-tiny"), fake_run(root / "se-run", "bsrnn-se-tiny")
    stereo = stereo_run(root / "stereo-run")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-m", "mss_tf.export", str(unet), str(root / "unet-export"), "--chunk-seconds",
         str(CHUNK_SECONDS), "--overlap", str(OVERLAP_SECONDS)],
        capture_output=True, text=True, cwd=REPO, env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert str(root / "unet-export") in result.stdout
    export_run(se, root / "se-export", chunk_seconds=CHUNK_SECONDS, overlap_seconds=OVERLAP_SECONDS)
    export_run(stereo, root / "stereo-export", chunk_seconds=CHUNK_SECONDS, overlap_seconds=OVERLAP_SECONDS)
    return {"unet-tiny": (unet, root / "unet-export"), "bsrnn-se-tiny": (se, root / "se-export"),
            STEREO: (stereo, root / "stereo-export")}


@pytest.mark.parametrize("preset", ["unet-tiny", "bsrnn-se-tiny", STEREO])
def test_export_in_plain_tensorflow_matches_the_separator(exports, preset, tmp_path):
    """The export's whole-track graph (a fresh process with TensorFlow only) against the in-process
    Separator, on lengths of one chunk and of four, stereo and mono. Both follow one ChunkPlan and
    sum each sample's chunks in the same order, through the same per-chunk code, and agree to the
    last bit in our runs (the printed differences are 0.0). Asserted within TOLERANCE: the graph
    around the model call is compiled apart (a while loop, a dynamic channel count, another
    process), and elsewhere its kernels may round differently. The order of the sums is asserted
    to the bit in tests/test_inference.py, in one process."""
    run, saved_model = exports[preset]
    separator = Separator.from_run(run, chunk_seconds=CHUNK_SECONDS, overlap_seconds=OVERLAP_SECONDS)
    chunk, step = separator.chunk, separator.plan.step
    # odd lengths, none of them traced at export time: one chunk, several chunks, a last chunk
    # overlapping its neighbour by more than the overlap; and a mono track
    inputs = {"short": random_audio(chunk - 1237, 0), "long": random_audio(chunk + 2 * step + 777, 1),
              "mono": random_audio(chunk + step + 5, 2, channels=1)}
    meta, outputs = run_fresh(saved_model, inputs, tmp_path)
    assert separator.plan.n_chunks(inputs["short"].shape[1]) == 1 and separator.plan.n_chunks(inputs["long"].shape[1]) == 4
    spec = separator.stft_config
    assert (meta["sample_rate"], meta["n_fft"], meta["hop"]) == (spec.sample_rate, spec.n_fft, spec.hop)
    assert meta["targets"] == separator.targets and meta["model"] == separator.name and meta["format"] == "mss-tf-saved-model"
    assert (meta["chunk_samples"], meta["overlap_samples"]) == (chunk, separator.overlap)
    assert meta["channels"] == meta["metadata"]["channels"] == (2 if preset == STEREO else 1)
    assert meta["signatures"] == sorted(["serving_default", CHUNK_SIGNATURE])
    assert meta["metadata"]["stft"] == spec.to_dict() and meta["inputs"] == {"waveform": "float32"}
    assert meta["weight_dtypes"] == ["float32"] and meta["low_precision_ops"] == []
    expected = {name: separator.separate_model_rate(waves) for name, waves in inputs.items()}
    for name, waves in inputs.items():
        assert outputs[name].shape == expected[name].shape == (len(separator.targets), *waves.shape)
        error = float(np.max(np.abs(outputs[name] - expected[name])))
        print(f"{preset} {name} {waves.shape}: max abs difference {error:.2e}")
        assert error < TOLERANCE, (name, error)
        assert np.max(np.abs(expected[name])) > 1e-3  # not a silent model
    # the loader: Separator's interface, metadata from assets.extra/mss_tf.json, and the
    # in-process OverlapAdd over the export's separate_chunks signature: the run's code
    loaded = load_saved_model(saved_model)
    assert (loaded.name, loaded.targets, loaded.stft_config, loaded.sample_rate, loaded.plan, loaded.model_channels) == (
        separator.name, separator.targets, spec, spec.sample_rate, separator.plan, separator.model_channels)
    for name in ("short", "long"):
        error = float(np.max(np.abs(loaded.separate_model_rate(inputs[name]) - expected[name])))
        print(f"{preset} {name}, load_saved_model: max abs difference {error:.2e}")
        assert error < TOLERANCE, (name, error)
    audio = random_audio(30011, 2).T  # (samples, channels) at 22.05 kHz, resampled in and out
    ours, theirs = loaded.separate(audio, 22050), separator.separate(audio, 22050)
    for target in separator.targets:
        assert ours[target].shape == audio.shape
        np.testing.assert_allclose(ours[target], theirs[target], atol=TOLERANCE)
    assert loaded.separate_model_rate(np.zeros((2, 0), np.float32)).shape == (len(separator.targets), 2, 0)


def test_a_stereo_export_refuses_more_than_two_channels(exports):
    loaded = load_saved_model(exports[STEREO][1])
    with pytest.raises(tf.errors.InvalidArgumentError, match="stereo model: it separates 1 or 2 channels"):
        loaded.model.signatures["serving_default"](waveform=tf.zeros([3, 1000]))
    with pytest.raises(AudioError, match="audio: 3 channels; bsrnn-tiny is a stereo model"):
        loaded.separate(np.zeros((1000, 3), np.float32), 44100)


def test_saved_model_cli_lists_the_signature(exports):
    result = subprocess.run(
        [str(Path(sys.executable).parent / "saved_model_cli"), "show", "--dir", str(exports["unet-tiny"][1]),
         "--tag_set", "serve", "--signature_def", "serving_default"],
        capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    inputs, outputs = result.stdout.split("outputs")
    assert "inputs['waveform']" in inputs and "DT_FLOAT" in inputs and "shape: (-1, -1)" in inputs
    assert "['stems']" in outputs and "DT_FLOAT" in outputs and "shape: (4, -1, -1)" in outputs


@pytest.mark.slow  # 20 s: float32 exports are tested above, bfloat16 training in test_loop
def test_train_export_of_a_bfloat16_run_is_float32(tmp_path):
    """`train.py --export` after 2 steps in mixed_bfloat16: a float32 export of the best checkpoint."""
    musdb = write_tone_musdb(tmp_path / "musdb", 3.0, n_train=2)
    run = tmp_path / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "MSS_TF_DATA": str(tmp_path / "data")}
    env.pop("MUSDB_PATH", None)
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--model", "unet-tiny", "--musdb-root", str(musdb), "--run-dir", str(run),
         "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2", "--crop-seconds", "2",
         "--precision", "mixed_bfloat16", "--export", "--quiet"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"SavedModel: {run / EXPORT_DIR}" in result.stdout
    assert json.loads((run / "config.json").read_text())["precision"] == "mixed_bfloat16"
    separator = Separator.from_run(run)  # float32, default 10 s chunks with 1 s overlap, as the export
    inputs = {"short": random_audio(12345, 3), "long": random_audio(separator.chunk + 9001, 4)}
    meta, outputs = run_fresh(run / EXPORT_DIR, inputs, tmp_path)
    assert meta["weight_dtypes"] == ["float32"] and meta["low_precision_ops"] == []
    assert meta["metadata"]["trained_precision"] == "mixed_bfloat16" and meta["metadata"]["precision"] == "float32"
    for name, waves in inputs.items():
        error = float(np.max(np.abs(outputs[name] - separator.separate_model_rate(waves))))
        print(f"bfloat16-trained unet-tiny {name}: max abs difference {error:.2e}")
        assert error < TOLERANCE, (name, error)


def run_cli(args: list, capsys) -> tuple[int, str]:
    """`python -m mss_tf.export ARGS` in this process: exit code and stderr."""
    with pytest.raises(SystemExit) as exit_info:
        cli.run(lambda: main([str(a) for a in args], cli.ArgumentParser))
    return exit_info.value.code, capsys.readouterr().err


def assert_one_line_error(code: int, stderr: str, *needles) -> None:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1, stderr
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])


def test_run_without_checkpoint_is_one_line_and_writes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"model": "unet-tiny"}')
    code, err = run_cli([run, tmp_path / "out"], capsys)
    assert_one_line_error(code, err, run, "no checkpoints")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no OUT, no temporary folder


def test_foreign_saved_models_and_other_folders_are_one_line_errors(exports, tmp_path, capsys):
    foreign = tmp_path / "foreign"
    module = tf.Module()
    module.scale = tf.Variable(2.0)
    module.serve = tf.function(lambda x: {"y": module.scale * x}, input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(foreign), signatures=module.serve)
    (tmp_path / "empty").mkdir()
    for path, needle in [(foreign, "without mss-tf metadata"), (tmp_path / "empty", "not a SavedModel"),
                         (tmp_path / "nowhere", "no such")]:
        with pytest.raises(CheckpointError, match="^" + str(path)):
            load_saved_model(path)
        code, err = run_cli(["--info", path], capsys)
        assert_one_line_error(code, err, path, needle)
    # a SavedModel given as the run, another tool's SavedModel (or any other folder) as OUT
    code, err = run_cli([foreign, tmp_path / "out"], capsys)
    assert_one_line_error(code, err, foreign, "not a run directory")
    run = exports["unet-tiny"][0]
    code, err = run_cli([run, foreign], capsys)
    assert_one_line_error(code, err, foreign, "not an mss-tf export")
    assert not (foreign / METADATA_DIR).exists()
    with pytest.raises(ConfigError, match="overlap"):
        export_run(run, tmp_path / "out", chunk_seconds=1.0, overlap_seconds=1.0)
    code, err = run_cli(["--info", exports["unet-tiny"][1]], capsys)
    assert code == 0
    # an export of an earlier format (without the separate_chunks signature) is refused, not run another way
    old = tmp_path / "old"
    shutil.copytree(exports["unet-tiny"][1], old)
    metadata = json.loads((old / METADATA_DIR / METADATA_FILE).read_text())
    (old / METADATA_DIR / METADATA_FILE).write_text(json.dumps({**metadata, "format_version": 1}))
    with pytest.raises(CheckpointError, match=f"^{old}: an export of an earlier mss-tf.*export its run again"):
        load_saved_model(old)


def test_an_existing_export_is_replaced_only_when_the_new_one_is_complete(exports, tmp_path, monkeypatch):
    run, _ = exports["unet-tiny"]
    out = tmp_path / "out"
    export_run(run, out, chunk_seconds=3.0)
    assert load_saved_model(out).chunk == 3 * 16000
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tf.saved_model, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        export_run(run, out, chunk_seconds=4.0)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left
    monkeypatch.undo()
    export_run(run, out, chunk_seconds=4.0)
    assert load_saved_model(out).chunk == 4 * 16000 and (out / METADATA_DIR / METADATA_FILE).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_export_help_documents_every_flag_and_the_defaults_the_code_applies():
    text = " ".join(build_parser().format_help().split())
    for flag in ("--which", "--chunk-seconds", "--overlap", "--info", "RUN_DIR", "OUT", "separate_chunks"):
        assert flag in text, flag
    # what --help promises is what export_run does when the flag is left out
    assert f"(default {default_chunk_seconds('unet'):g}; {default_chunk_seconds('bsrnn'):g} for BSRNNs)" in text
    assert f"Hann fades (default {DEFAULT_OVERLAP_SECONDS:g})" in text


def test_nmf_exports_too(tmp_path):
    """The NMF baseline (a fitted dictionary and a tf.while_loop activation solve) exports as well."""
    from mss_tf.export import export_separator
    from mss_tf.models.registry import UNET_STFT

    model = build_model("nmf", rank=4, fit_iterations=2, separate_iterations=5)
    rng = np.random.default_rng(0)
    model.fit([{"stems": rng.standard_normal((4, 30, UNET_STFT.n_bins, 2)).astype(np.float32)}], stft=UNET_STFT.to_dict())
    separator = Separator(model, UNET_STFT, model.targets, chunk_seconds=1.0, overlap_seconds=0.25, name="nmf")
    loaded = load_saved_model(export_separator(separator, tmp_path / "nmf"))
    waves = random_audio(16000 * 2 + 555, 5)
    np.testing.assert_allclose(loaded.separate_model_rate(waves), separator.separate_model_rate(waves), atol=TOLERANCE)
