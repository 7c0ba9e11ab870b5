"""Multitrack folders beyond MUSDB18 (mss_tf.data.multitrack): layouts, stem maps, loading."""

import json

import numpy as np
import pytest
import soundfile

from mss_tf.data.multitrack import (REST, detect_layout, group_stems, list_tracks, load_multitrack,
                                    mixture_mismatch_db, read_stem_map)
from mss_tf.errors import ConfigError, DataError
from tests.conftest import write_tone_musdb

RATE = 8000


def tone(freq, seconds=0.5, channels=2, rate=RATE):
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.2 * np.sin(2 * np.pi * freq * t)
    return np.stack([wave * (1 - 0.2 * c) for c in range(channels)], axis=1).astype(np.float32)


def write(path, audio, rate=RATE):
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, audio, rate, subtype="FLOAT" if path.suffix == ".wav" else "PCM_24")


def stems_folder(root):
    """train/ and test/ of a stems layout: six stems, one track with a mixture file, flac and wav mixed."""
    parts = {"lead": 440.0, "backing": 550.0, "guitar": 330.0, "acoustic_guitar": 660.0, "kick": 60.0, "keys": 880.0}
    for split, track, with_mixture in (("train", "song a", True), ("train", "song b", False), ("test", "song c", False)):
        for i, (name, freq) in enumerate(parts.items()):
            write(root / split / track / f"{name}{'.flac' if i % 2 else '.wav'}", tone(freq))
        if with_mixture:
            write(root / split / track / "mixture.wav", np.sum([tone(f) for f in parts.values()], axis=0))
    return root, list(parts)


def moises_folder(root):
    for track in ("0a1b", "2c3d"):
        (root / track).mkdir(parents=True)
        (root / track / "data.json").write_text(json.dumps({"song": track}))
        write(root / track / "guitar" / "g1.wav", tone(330.0))
        write(root / track / "guitar" / "g2.wav", tone(335.0))
        write(root / track / "vocals" / "v.wav", tone(440.0))
        write(root / track / "drums" / "d.wav", tone(60.0))
    return root


def test_layouts_are_told_apart_and_a_wrong_one_is_named(tmp_path):
    musdb = write_tone_musdb(tmp_path / "musdb", 0.5, n_train=1)
    stems, _ = stems_folder(tmp_path / "stems")
    moises = moises_folder(tmp_path / "moises")
    assert detect_layout(musdb) == "musdb" and detect_layout(musdb, "stems") == "stems"  # MUSDB18-HQ reads as stems too
    assert detect_layout(stems) == "stems" and detect_layout(moises) == "moisesdb"
    with pytest.raises(DataError, match="not a moisesdb folder"):
        detect_layout(stems, "moisesdb")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no multitrack layout found"):
        detect_layout(tmp_path / "empty")
    with pytest.raises(ConfigError, match="--layout 'wav'"):
        detect_layout(stems, "wav")


def test_stems_layout_tracks_with_and_without_a_mixture(tmp_path):
    root, names = stems_folder(tmp_path / "stems")
    tracks = list_tracks(root)
    assert [(t.split, t.name) for t in tracks] == [("train", "song a"), ("train", "song b"), ("test", "song c")]
    assert sorted(tracks[0].stems) == sorted(names) and tracks[0].mixture.name == "mixture.wav"
    assert tracks[1].mixture is None and [t.name for t in list_tracks(root, split="test")] == ["song c"]
    audio, rate = load_multitrack(tracks[1])
    assert rate == RATE and sorted(audio) == sorted(names + ["mixture"])
    np.testing.assert_allclose(audio["mixture"], np.sum([audio[n] for n in names], axis=0), atol=1e-6)  # the sum
    with_file, _ = load_multitrack(tracks[0])
    assert mixture_mismatch_db(with_file) > 60  # its mixture file is the sum of its stems
    with_file["mixture"] = with_file["mixture"] + 0.5 * tone(100.0)
    assert mixture_mismatch_db(with_file) < 20  # one that is not gets a low value, reported by the caller


def test_moisesdb_sums_the_files_of_a_stem(tmp_path):
    tracks = list_tracks(moises_folder(tmp_path / "moises"))
    assert [t.name for t in tracks] == ["0a1b", "2c3d"] and tracks[0].split is None
    assert sorted(tracks[0].stems) == ["drums", "guitar", "vocals"] and len(tracks[0].stems["guitar"]) == 2
    audio, _ = load_multitrack(tracks[0])
    np.testing.assert_allclose(audio["guitar"], tone(330.0) + tone(335.0), atol=1e-6)
    with pytest.raises(ConfigError, match="no splits"):
        list_tracks(tmp_path / "moises", split="train")


def test_bad_tracks_are_one_line_errors_naming_them(tmp_path):
    root = tmp_path / "stems"
    write(root / "train" / "x" / "bass.wav", tone(55.0))
    write(root / "train" / "x" / "bass.flac", tone(55.0))
    with pytest.raises(DataError, match=r"train/x: more than one file for stem\(s\) bass"):
        list_tracks(root)
    (root / "train" / "x" / "bass.flac").unlink()
    write(root / "train" / "x" / "keys.wav", tone(880.0, seconds=0.4))  # shorter
    (track,) = list_tracks(root)
    with pytest.raises(DataError, match="track x: files of different lengths") as error:
        load_multitrack(track)
    assert "\n" not in str(error.value) and "keys.wav 3200" in str(error.value)
    write(root / "train" / "x" / "keys.wav", tone(880.0, rate=16000), rate=16000)  # another rate
    with pytest.raises(DataError, match="different sample rates.*keys.wav 16000 Hz"):
        load_multitrack(list_tracks(root)[0])
    with pytest.raises(DataError, match="different sample rates.*keys.wav 16000 Hz.*export every stem at one rate$"):
        load_multitrack(list_tracks(root)[0], sample_rate=RATE)  # not hidden by resampling every file to the model's
    write(root / "train" / "x" / "keys.wav", tone(880.0))
    audio, rate = load_multitrack(list_tracks(root)[0], sample_rate=16000)  # one rate: resampled to the model's
    assert rate == 16000 and audio["keys"].shape == audio["bass"].shape == audio["mixture"].shape == (8000, 2)


def test_stem_map_groups_raw_stems_into_targets(tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"vocals": ["lead", "backing"], "guitar": ["guitar", "acoustic_guitar"],
                                "drums": "kick", "other": REST}))
    stem_map = read_stem_map(path)
    assert stem_map == {"vocals": ("lead", "backing"), "guitar": ("guitar", "acoustic_guitar"), "drums": ("kick",),
                        "other": REST}
    raw = {name: tone(f) for name, f in (("lead", 440), ("backing", 550), ("guitar", 330), ("kick", 60), ("keys", 880),
                                         ("pad", 990))}
    grouped = group_stems(raw, stem_map, targets=["guitar", "vocals", "drums", "other"])
    assert list(grouped) == ["guitar", "vocals", "drums", "other"]
    np.testing.assert_allclose(grouped["vocals"], raw["lead"] + raw["backing"], atol=1e-6)
    np.testing.assert_allclose(grouped["guitar"], raw["guitar"], atol=1e-6)  # acoustic_guitar absent: the rest of it
    np.testing.assert_allclose(grouped["other"], raw["keys"] + raw["pad"], atol=1e-6)  # what no target names
    np.testing.assert_allclose(sum(grouped.values()), sum(raw.values()), atol=1e-5)  # nothing lost, nothing twice
    assert not np.any(group_stems({"lead": tone(440)}, stem_map)["drums"])  # a target the track lacks is silent
    assert list(group_stems(raw)) == list(raw)  # no map: every raw stem its own target
    with pytest.raises(ConfigError, match="target\\(s\\) piano not in the stem map"):
        group_stems(raw, stem_map, targets=["piano"])
    with pytest.raises(DataError, match="different lengths or channel counts: pad"):
        group_stems({**raw, "pad": tone(990, seconds=0.3)}, stem_map)


@pytest.mark.parametrize("content,needle", [
    ("{", "not a JSON stem map"),
    ("[]", "a stem map is a JSON object"),
    ('{"guitar": 3}', "target 'guitar' must map to"),
    ('{"a": ["x"], "b": ["x", "y"]}', "stem 'x' is in both 'a' and 'b'"),
    ('{"a": "*rest*", "b": "*rest*"}', "only one target can take"),
])
def test_a_bad_stem_map_is_one_line_naming_the_file(tmp_path, content, needle):
    path = tmp_path / "map.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=needle) as error:
        read_stem_map(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="no such stem map"):
        read_stem_map(tmp_path / "none.json")
