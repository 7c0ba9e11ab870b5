"""A converted checkpoint is an ordinary run directory: `python -m mss_tf.convert` writes it from a
PyTorch state dict (the fixtures of tests/data/roformer/), separate.py separates a stereo file with
it, evaluate.py --run scores it on a tone-track MUSDB folder, and `python -m mss_tf.export` makes a
SavedModel of it that runs without mss_tf and separates as the run does."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile

from mss_tf import cli
from mss_tf.inference import Separator
from tests.conftest import REPO, write_tone_musdb
from tests.test_cli import run_cli, run_main
from tests.test_export import run_fresh

FIXTURES = REPO / "tests" / "data" / "roformer"
CHUNK, OVERLAP = 1.0, 0.25  # seconds: a 2.5 s file is three chunks
TARGETS = ["drums", "bass", "other", "vocals"]  # bs_stereo_4's stems, in its order


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """bs_stereo_4 (BS-RoFormer, stereo, four stems) and mel_mono_4 (Mel-Band RoFormer, mono, four
    stems) converted: the first by `python -m mss_tf.convert` as a user runs it, in its own process."""
    root = tmp_path_factory.mktemp("converted")
    folder = FIXTURES / "bs_stereo_4"
    result = run_cli("mss_tf.convert", folder / "state_dict.npz", "--config", folder / "config.yaml", "--out",
                     root / "bs", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == f"wrote {root / 'bs'}" and result.stderr == ""  # TensorFlow started quietly
    from mss_tf.convert import convert

    folder = FIXTURES / "mel_mono_4"
    return {"bs": root / "bs", "mel": convert(folder / "state_dict.npz", folder / "config.yaml", root / "mel")}


def tones(seconds: float, rate: int, seed: int) -> np.ndarray:
    """(samples, 2) stereo: a different pair of tones and some noise on each channel."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    channels = [0.3 * np.sin(2 * np.pi * f1 * t) + 0.2 * np.sin(2 * np.pi * f2 * t) + 0.05 * rng.standard_normal(t.size)
                for f1, f2 in ((220.0, 1500.0), (330.0, 2400.0))]
    return np.stack(channels, axis=1).astype(np.float32)


def test_the_run_records_the_references_stft_and_stems(converted):
    for name, model in (("bs", "bs-roformer"), ("mel", "mel-roformer")):
        saved = json.loads((converted[name] / "config.json").read_text())
        assert saved["model"] == model
        assert saved["targets"] == (TARGETS if name == "bs" else ["vocals", "bass", "drums", "other"])
        assert saved["stft"] == {"sample_rate": 16000, "n_fft": 256, "hop": 64, "padding": "reflect"}


def test_separate_py_splits_a_stereo_file_with_a_converted_run(converted, tmp_path, monkeypatch, capsys):
    """separate.py with a converted stereo BS-RoFormer: one stereo stem per target, at the file's
    44.1 kHz and length, equal to the in-process Separator on the same audio (three chunks)."""
    audio = tones(2.5, 44100, 0)
    soundfile.write(tmp_path / "mix.wav", audio, 44100, subtype="FLOAT")
    result = run_main("separate.py", [tmp_path / "mix.wav", "--model", converted["bs"], "--out", tmp_path / "stems",
                                      "--chunk-seconds", CHUNK, "--overlap", OVERLAP, "--quiet"], monkeypatch, capsys)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "stems" / "mix").iterdir()) == sorted(f"{t}.wav" for t in TARGETS)
    expected = Separator.from_run(converted["bs"], chunk_seconds=CHUNK, overlap_seconds=OVERLAP).separate(audio, 44100)
    stems = {}
    for target in TARGETS:
        stems[target], rate = soundfile.read(tmp_path / "stems" / "mix" / f"{target}.wav", dtype="float32")
        assert rate == 44100 and stems[target].shape == audio.shape
        np.testing.assert_allclose(stems[target], expected[target], atol=1e-5)
        assert np.abs(stems[target]).max() > 1e-3  # the seeded random weights do not silence a stem
    assert not np.allclose(stems["drums"], stems["bass"], atol=1e-3)  # four heads, four stems


def test_evaluate_py_scores_a_converted_run(converted, tmp_path, monkeypatch, capsys):
    """uSDR and the mixture floor of each stem (BSSEval is evaluate.py's own business, tested there)."""
    musdb = write_tone_musdb(tmp_path / "musdb", 2.0, n_train=0)
    result = run_main("evaluate.py", ["--run", converted["bs"], "--musdb-root", musdb, "--out", tmp_path / "eval",
                                      "--usdr-only", "--quiet"], monkeypatch, capsys)
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["model"] == "bs-roformer" and [t["track"] for t in results["tracks"]] == ["test song"]
    assert sorted(results["targets"]) == sorted(TARGETS)
    assert all(np.isfinite(v["usdr"]) for v in results["targets"].values())


@pytest.mark.parametrize("name", ["bs", pytest.param("mel", marks=pytest.mark.slow)])
def test_an_export_of_a_converted_run_runs_without_mss_tf(converted, name, tmp_path):
    """`python -m mss_tf.export RUN OUT` (its main, in-process), then the SavedModel in a fresh
    Python with TensorFlow only, on a stereo track of one chunk and one of three: the in-process
    Separator's output; the metadata keeps the reference's STFT (reflect padding). The Mel-Band
    RoFormer's (its band gathers in the graph; 30 s) runs with `-m slow`."""
    from mss_tf.cli.export import main as export_main

    out = tmp_path / "export"
    with pytest.raises(SystemExit) as exited:
        cli.run(lambda: export_main([str(converted[name]), str(out), "--chunk-seconds", str(CHUNK), "--overlap",
                                     str(OVERLAP)]))
    assert exited.value.code == 0
    separator = Separator.from_run(converted[name], chunk_seconds=CHUNK, overlap_seconds=OVERLAP)
    inputs = {"short": tones(0.7, 16000, 1).T.copy(), "long": tones(2.3, 16000, 2).T.copy()}
    assert [separator.plan.n_chunks(x.shape[1]) for x in inputs.values()] == [1, 3]
    meta, outputs = run_fresh(out, inputs, tmp_path)
    assert meta["metadata"]["stft"] == {"sample_rate": 16000, "n_fft": 256, "hop": 64, "padding": "reflect"}
    assert meta["model"] == separator.name == f"{name}-roformer" and meta["targets"] == separator.targets
    assert meta["channels"] == (2 if name == "bs" else 1)
    for key, waves in inputs.items():
        expected = separator.separate_model_rate(waves)
        assert outputs[key].shape == expected.shape == (4, *waves.shape)
        error = float(np.abs(outputs[key] - expected).max())
        print(f"{name} {key}: export vs in-process, max abs difference {error:.2e}")
        assert error < 1e-5 and np.abs(expected).max() > 1e-3
