"""separate.py: any audio file in (wav, flac, mp3, ogg; any rate and channel count; any length),
one file per stem out, at the input's rate and length; bad files skipped and reported.

The command runs in this process (run_main: its main under cli.run, without a Python and TensorFlow
start-up per call); as its own process it runs in tests/test_threads.py and tests/test_packaging.py."""

import sys

import numpy as np
import pytest
import soundfile

from mss_tf.export import export_run, load_saved_model
from mss_tf.inference import Separator, separate_file
from tests.conftest import REPO
from tests.test_cli import assert_one_line_error, run_main
from tests.test_export import fake_run


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("separate")
    run = fake_run(root / "run", "unet-tiny")
    export = export_run(run, root / "export", chunk_seconds=4.0, overlap_seconds=1.0)
    return run, export


def _tone(seconds, rate, channels, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)
    return np.stack([wave * (1 - 0.3 * c) for c in range(channels)], axis=1).astype(np.float32)


def test_every_format_rate_and_channel_count_gives_stems_of_the_inputs_length(model_dirs, tmp_path, monkeypatch, capsys):
    run, _ = model_dirs
    songs = tmp_path / "songs"
    songs.mkdir()
    inputs = {"a.wav": (22050, 2, 3.3), "b.flac": (16000, 1, 2.0), "c.ogg": (44100, 2, 2.5), "d.mp3": (44100, 2, 2.0)}
    for name, (rate, channels, seconds) in inputs.items():
        soundfile.write(songs / name, _tone(seconds, rate, channels), rate)
    result = run_main("separate.py", [songs, "--model", run, "--out", tmp_path / "out", "--quiet"], monkeypatch, capsys)
    assert result.returncode == 0, result.stderr
    for name, (rate, channels, _) in inputs.items():
        length = soundfile.info(str(songs / name)).frames
        folder = tmp_path / "out" / name.rsplit(".", 1)[0]
        assert sorted(p.name for p in folder.iterdir()) == ["bass.wav", "drums.wav", "other.wav", "vocals.wav"]
        for stem in folder.iterdir():
            info = soundfile.info(str(stem))
            assert (info.samplerate, info.channels) == (rate, channels), (name, stem.name)
            assert abs(info.frames - length) <= 1, (name, info.frames, length)  # mp3 decoders may differ by a frame
    assert not list((tmp_path / "out").rglob(".*"))  # no temporary files left


def test_run_and_savedmodel_give_the_same_stems_and_flac_and_targets_options(model_dirs, tmp_path, monkeypatch, capsys):
    run, export = model_dirs
    song = tmp_path / "song.wav"
    audio = _tone(9.0, 16000, 2)
    soundfile.write(song, audio, 16000, subtype="FLOAT")
    from_run = run_main("separate.py", [song, "--model", run, "--out", tmp_path / "run", "--quiet",
                       "--chunk-seconds", 4, "--overlap", 1], monkeypatch, capsys)
    from_export = run_main("separate.py", [song, "--model", export, "--out", tmp_path / "export", "--quiet"], monkeypatch, capsys)
    assert from_run.returncode == 0 and from_export.returncode == 0, from_run.stderr + from_export.stderr
    for stem in ("vocals", "drums", "bass", "other"):
        a, _ = soundfile.read(tmp_path / "run" / "song" / f"{stem}.wav", dtype="float32")
        b, _ = soundfile.read(tmp_path / "export" / "song" / f"{stem}.wav", dtype="float32")
        np.testing.assert_allclose(a, b, atol=1e-4)
    # and the stems are the Separator's own output (written as 32-bit float wav: exact)
    expected = Separator.from_run(run, chunk_seconds=4.0, overlap_seconds=1.0).separate(audio, 16000)
    got, _ = soundfile.read(tmp_path / "run" / "song" / "bass.wav", dtype="float32")
    np.testing.assert_allclose(got, expected["bass"], atol=1e-6)
    # one more run for --format, --targets and --wiener (with the export)
    flac = run_main("separate.py", [song, "--model", export, "--out", tmp_path / "flac", "--format", "flac",
                   "--targets", "vocals", "bass", "--wiener", 1, "--quiet"], monkeypatch, capsys)
    assert flac.returncode == 0, flac.stderr
    assert sorted(p.name for p in (tmp_path / "flac" / "song").iterdir()) == ["bass.flac", "vocals.flac"]
    assert soundfile.info(str(tmp_path / "flac" / "song" / "bass.flac")).subtype == "PCM_16"
    filtered, _ = soundfile.read(tmp_path / "flac" / "song" / "bass.flac", dtype="float32")
    assert filtered.shape == got.shape and not np.allclose(filtered, np.clip(got, -1, 1), atol=1e-3)


def test_a_ten_minute_song_is_not_cut(model_dirs, tmp_path, monkeypatch, capsys):
    # Spleeter cuts at 600 s by default; nothing here does
    run, _ = model_dirs
    song = tmp_path / "long.flac"
    rate = 8000
    audio = _tone(610.0, rate, 1)
    soundfile.write(song, audio, rate)
    result = run_main("separate.py", [song, "--model", run, "--out", tmp_path / "out", "--targets", "drums", "--quiet"], monkeypatch, capsys)
    assert result.returncode == 0, result.stderr
    info = soundfile.info(str(tmp_path / "out" / "long" / "drums.wav"))
    assert info.frames == audio.shape[0] and info.samplerate == rate
    tail, _ = soundfile.read(tmp_path / "out" / "long" / "drums.wav", start=info.frames - rate)
    assert np.abs(tail).max() > 0  # the last second is separated, not zeros


def test_bad_files_are_reported_and_the_others_separated(model_dirs, tmp_path, monkeypatch, capsys):
    run, _ = model_dirs
    good, empty, text = tmp_path / "good.wav", tmp_path / "empty.wav", tmp_path / "notes.mp3"
    soundfile.write(good, _tone(1.0, 16000, 2), 16000)
    empty.write_bytes(b"")
    text.write_text("not audio at all")
    result = run_main("separate.py", [empty, good, text, "--model", run, "--out", tmp_path / "out", "--quiet"], monkeypatch, capsys)
    assert result.returncode == 2
    assert (tmp_path / "out" / "good" / "vocals.wav").is_file()
    assert not (tmp_path / "out" / "empty").exists() and not (tmp_path / "out" / "notes").exists()
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and str(empty) in errors[0] and str(text) in errors[1]
    assert "2 of 3 files failed" in result.stderr


def test_bad_arguments_are_one_line_errors(model_dirs, tmp_path, monkeypatch, capsys):
    run, export = model_dirs
    (tmp_path / "empty-folder").mkdir()
    (tmp_path / "empty-folder" / "readme.txt").write_text("no audio")

    def separate(*args):  # separate.py's main in this process (tests/test_cli.py run_main)
        return run_main("separate.py", args, monkeypatch, capsys)

    assert_one_line_error(separate(tmp_path / "empty-folder", "--model", run, "--out", tmp_path / "o"),
                          "empty-folder", "no audio")
    song = tmp_path / "s.wav"
    soundfile.write(song, _tone(1.0, 16000, 1), 16000)
    assert_one_line_error(separate(song, "--model", tmp_path, "--out", tmp_path / "o"), str(tmp_path))
    assert_one_line_error(separate(song, "--model", run, "--out", tmp_path / "o", "--wiener", -1), "--wiener")
    assert_one_line_error(separate(song, "--model", run, "--out", tmp_path / "o", "--chunks-per-call", 0),
                          "--chunks-per-call")
    assert not (tmp_path / "o").exists()


def test_a_savedmodel_streams_chunk_by_chunk_like_its_graph_and_its_run(model_dirs, tmp_path):
    """separate.py runs an export as it runs a run (OverlapAdd, each chunk one call of the export's
    separate_chunks signature): the same stems as the export's whole-track graph, and with the
    Wiener filter the same as the run (each chunk filtered before the crossfade)."""
    run, export = model_dirs
    audio = _tone(9.3, 22050, 2, seed=4)
    song = tmp_path / "song.wav"
    soundfile.write(song, audio, 22050, subtype="FLOAT")
    serve = load_saved_model(export).model.signatures["serving_default"]  # the whole track in one graph call
    from mss_tf.audio.io import resample

    at_model_rate = serve(waveform=resample(audio, 22050, 16000).T)["stems"].numpy()  # (S, C, samples)
    graph = {"bass": resample(at_model_rate[2].T, 16000, 22050)[: audio.shape[0]]}
    for wiener in (0, 1):
        separate_file(load_saved_model(export, wiener_iterations=wiener), song, {"bass": tmp_path / f"export-{wiener}.wav"})
        separate_file(Separator.from_run(run, chunk_seconds=4.0, overlap_seconds=1.0, wiener_iterations=wiener), song,
                      {"bass": tmp_path / f"run-{wiener}.wav"})
    streamed = {name: soundfile.read(tmp_path / f"{name}.wav", dtype="float32")[0] for name in
                ("export-0", "export-1", "run-0", "run-1")}
    np.testing.assert_allclose(streamed["export-0"], graph["bass"], atol=1e-4)
    np.testing.assert_allclose(streamed["export-0"], streamed["run-0"], atol=1e-4)
    np.testing.assert_allclose(streamed["export-1"], streamed["run-1"], atol=1e-4)
    assert not np.allclose(streamed["export-1"], streamed["export-0"], atol=1e-4)


def test_an_export_honours_the_separation_flags_and_refuses_another_precision(model_dirs, tmp_path, monkeypatch,
                                                                              capsys):
    """--chunk-seconds, --overlap and --chunks-per-call with an export separate as a run does with
    them (its separate_chunks signature takes chunks of any length); --precision other than
    float32 is one line and exit 2 (an export's precision was fixed when it was written)."""
    run, export = model_dirs
    song = tmp_path / "song.wav"
    audio = _tone(5.3, 16000, 2, seed=2)
    soundfile.write(song, audio, 16000, subtype="FLOAT")
    flags = ["--chunk-seconds", 1.5, "--overlap", 0.25, "--chunks-per-call", 3, "--targets", "bass", "--quiet"]
    result = run_main("separate.py", [song, "--model", export, "--out", tmp_path / "out", *flags], monkeypatch, capsys)
    assert result.returncode == 0, result.stderr
    got, _ = soundfile.read(tmp_path / "out" / "song" / "bass.wav", dtype="float32")
    expected = Separator.from_run(run, chunk_seconds=1.5, overlap_seconds=0.25).separate(audio, 16000)["bass"]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    exported_plan = load_saved_model(export).separate(audio, 16000)["bass"]  # its own 4 s chunks, 1 s overlap
    assert not np.allclose(got, exported_plan, atol=1e-4)  # the flags were not ignored
    for script, args in [("separate.py", [song, "--model", export, "--out", tmp_path / "o"]),
                         ("evaluate.py", ["--saved-model", export, "--out", tmp_path / "o"])]:
        refused = run_main(script, [*args, "--precision", "mixed_bfloat16"], monkeypatch, capsys)
        assert_one_line_error(refused, export, "float32", "mixed_bfloat16")
    assert not (tmp_path / "o").exists()


def test_a_stereo_model_takes_mono_and_stereo_files_and_refuses_more_channels(tmp_path, monkeypatch, capsys):
    from tests.test_export import stereo_run

    run = stereo_run(tmp_path / "stereo-run")  # bsrnn-tiny with channels=2
    files = {"mono.wav": 1, "surround.wav": 6, "stereo.flac": 2}
    for name, channels in files.items():
        soundfile.write(tmp_path / name, _tone(1.2, 44100, channels, seed=channels), 44100,
                        subtype="FLOAT" if name.endswith(".wav") else None)
    result = run_main("separate.py", [*(tmp_path / name for name in files), "--model", run, "--out", tmp_path / "out",
                                      "--chunk-seconds", 0.5, "--overlap", 0.1, "--quiet"], monkeypatch, capsys)
    assert_one_line_error(result, tmp_path / "surround.wav", "6 channels", "stereo model")
    assert "1 of 3 files failed" in result.stderr and not (tmp_path / "out" / "surround").exists()
    for name in ("mono", "stereo"):
        info = soundfile.info(str(tmp_path / "out" / name / "vocals.wav"))
        assert (info.channels, info.frames) == (files[f"{name}.wav" if name == "mono" else "stereo.flac"], 52920)
    # the mono file's stem: the mean of the two channel estimates of the file duplicated to stereo
    mono, _ = soundfile.read(tmp_path / "mono.wav", dtype="float32", always_2d=True)
    separator = Separator.from_run(run, chunk_seconds=0.5, overlap_seconds=0.1)
    duplicated = separator.separate(np.repeat(mono, 2, axis=1), 44100)["vocals"]
    got, _ = soundfile.read(tmp_path / "out" / "mono" / "vocals.wav", dtype="float32", always_2d=True)
    np.testing.assert_allclose(got[:, 0], duplicated.mean(axis=1), atol=1e-6)
    assert not np.allclose(duplicated[:, 0], duplicated[:, 1], atol=1e-4)


def _benchmark_tools():
    """benchmarks/inference.py's song writer and peak-RSS runner (one implementation for both)."""
    import importlib
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    return importlib.import_module("inference")


@pytest.mark.slow
def test_a_sixty_minute_song_is_separated_in_bounded_memory(model_dirs, tmp_path):
    """60 minutes of stereo 44.1 kHz (1.3 GB as float32; its four stems 5 GB) through separate.py
    with unet-tiny: the process's peak RSS stays under 2 GB, and every stem has the input's length."""
    run, _ = model_dirs
    song = tmp_path / "hour.wav"
    tools = _benchmark_tools()
    frames = tools.write_song(song, 3600)
    try:
        command = [sys.executable, *map(str, [REPO / "separate.py", song, "--model", run, "--out", tmp_path / "out"]),
                   "--quiet"]
        result, peak = tools.run_with_peak_rss(command, timeout=3600)
        assert result.returncode == 0, result.stderr[-3000:]
        print(f"60 min stereo 44.1 kHz, unet-tiny: peak RSS {peak / 2**20:.0f} MiB")
        assert peak is not None and peak < 2 * 2**30, peak
        for stem in ("vocals", "drums", "bass", "other"):
            info = soundfile.info(str(tmp_path / "out" / "hour" / f"{stem}.wav"))
            assert (info.frames, info.samplerate, info.channels) == (frames, 44100, 2), stem
        tail, _ = soundfile.read(tmp_path / "out" / "hour" / "vocals.wav", start=frames - 44100, dtype="float32")
        assert np.abs(tail).max() > 0
    finally:  # 6 GB of audio: do not leave it to pytest's kept temporary folders
        for path in [song, *(tmp_path / "out").rglob("*.wav")]:
            path.unlink(missing_ok=True)
