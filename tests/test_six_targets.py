"""Six targets from the generic stems layout, end to end through the real commands: the demo
songs' parts as stems (`make_demo.py --layout stems`), a stem map to vocals, bass, kick, snare,
chords and other, then train.py, evaluate.py, the export and separate.py."""

import json

import numpy as np
import pytest

from mss_tf.audio import io as audio_io
from mss_tf.data.demo import make_demo_set
from mss_tf.data.sources import DataSource
from tests.test_cli import run_cli, run_main

# every song has exactly one chord instrument; hi-hats (25-30 dB under the mix) and the arpeggio go to other
SIX = {"vocals": "vocals", "bass": "bass", "kick": "kick", "snare": "snare", "chords": ["pad", "organ", "epiano", "guitar"],
       "other": "*rest*"}


def six_target_data(tmp_path, n_train, seconds):
    root = make_demo_set(tmp_path / "stems", layout="stems", n_train=n_train, n_valid=1, n_test=1, seconds=seconds,
                         sample_rate=16000)
    (tmp_path / "six.json").write_text(json.dumps(SIX))
    return root, tmp_path / "six.json"


def levels_db(stems_dir, track_dir, stem_map):
    """dB of each written stem against its reference target (a silenced output: -inf)."""
    source = DataSource.open(track_dir.parent.parent, stem_map_file=stem_map)
    track = [t for t in source.split_tracks("test") if t.name == track_dir.name][0]
    refs, _ = source.load(track)
    out = {}
    for target in SIX:
        estimate, _ = audio_io.load_audio(stems_dir / track_dir.name / f"{target}.wav")
        power = float(np.mean(np.square(estimate, dtype=np.float64)))
        out[target] = 10 * np.log10(power / float(np.mean(np.square(refs[target], dtype=np.float64)))) if power else -np.inf
    return out


def test_six_targets_train_evaluate_export_and_separate(tmp_path, monkeypatch, capsys):
    root, stem_map = six_target_data(tmp_path, n_train=3, seconds=4.0)
    env = {"MSS_TF_DATA": str(tmp_path / "cache")}
    run = tmp_path / "run"
    trained = run_main("train.py", ["--model", "unet-tiny", "--data", root, "--stem-map", stem_map, "--run-dir", run,
                                    "--epochs", 1, "--steps-per-epoch", 3, "--crop-seconds", 2, "--export", "--quiet"],
                       monkeypatch, capsys, env_extra=env)
    assert trained.returncode == 0, trained.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["targets"] == list(SIX) and config["data"]["stem_map"]["other"] == "*rest*"
    manifest = json.loads((tmp_path / "cache" / "shards").glob("*/train/manifest.json").__next__().read_text())
    assert manifest["stems"] == list(SIX)
    metadata = json.loads((run / "export" / "assets.extra" / "mss_tf.json").read_text())
    assert metadata["targets"] == list(SIX)
    evaluated = run_main("evaluate.py", ["--run", run, "--fast", "--quiet", "--workers", 1], monkeypatch, capsys,
                         env_extra=env)
    assert evaluated.returncode == 0, evaluated.stderr
    results = json.loads((run / "results.json").read_text())
    assert list(results["targets"]) == list(SIX) and results["data"]["layout"] == "stems"
    assert [t["track"] for t in results["tracks"]] == ["demo_test_000"]  # the stems folder's test split
    for target in SIX:
        assert np.isfinite(results["targets"][target]["csdr"]) and np.isfinite(results["targets"][target]["usdr"])
        assert np.isfinite(results["baseline"]["targets"][target]["usdr"])  # the mixture floor, per target
    assert "accompaniment" in results  # vocals are a target: the vocals/accompaniment scenario too
    track = root / "test" / "demo_test_000"
    song = tmp_path / "demo_test_000.wav"
    song.write_bytes((track / "mixture.wav").read_bytes())
    separated = run_main("separate.py", [song, "--model", run / "export", "--out", tmp_path / "out", "--quiet"],
                         monkeypatch, capsys, env_extra=env)
    assert separated.returncode == 0, separated.stderr
    assert sorted(p.name for p in (tmp_path / "out" / "demo_test_000").iterdir()) == sorted(f"{t}.wav" for t in SIX)
    assert all(np.isfinite(level) for level in levels_db(tmp_path / "out", track, stem_map).values())


@pytest.mark.slow  # 3-6 minutes: a U-Net trained long enough to separate six targets (800 steps)
def test_a_six_target_unet_separates_every_target(tmp_path):
    root, stem_map = six_target_data(tmp_path, n_train=8, seconds=8.0)
    env = {"MSS_TF_DATA": str(tmp_path / "cache")}
    run = tmp_path / "run"
    trained = run_cli("train.py", "--model", "unet", "--data", root, "--stem-map", stem_map, "--run-dir", run,
                      "--epochs", 8, "--steps-per-epoch", 100, "--patience", 1000, "--export", "--quiet", env_extra=env)
    assert trained.returncode == 0, trained.stderr
    evaluated = run_cli("evaluate.py", "--run", run, "--quiet", "--workers", 2, env_extra=env)  # museval
    assert evaluated.returncode == 0, evaluated.stderr
    results = json.loads((run / "results.json").read_text())
    for target in SIX:
        scores, floor = results["targets"][target], results["baseline"]["targets"][target]["usdr"]
        assert scores["usdr"] > floor + 3.0, (target, scores, floor)  # above the mixture floor
        assert scores["energy_ratio"] > 0.1, (target, scores)  # not silenced (silence: 0)
    track = root / "test" / "demo_test_000"
    song = tmp_path / "demo_test_000.wav"
    song.write_bytes((track / "mixture.wav").read_bytes())
    separated = run_cli("separate.py", song, "--model", run / "export", "--out", tmp_path / "out", "--quiet",
                        env_extra=env)
    assert separated.returncode == 0, separated.stderr
    for target, level in levels_db(tmp_path / "out", track, stem_map).items():
        assert level > -10.0, (target, level)  # every written stem carries its target's energy
