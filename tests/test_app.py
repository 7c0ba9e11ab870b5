"""The local separation page's HTTP API (python -m mss_tf.app), without a browser: a server on a
free port in a thread, an upload with urllib, progress, stems equal to separate.py's, and the
refusals (413, 415, 429) after which it keeps serving. tests/test_browser.py drives the page."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile

from mss_tf.app import SeparationApp, make_server
from mss_tf.checkpoints import write_untrained_run
from mss_tf.export import load_separator
from tests.test_cli import run_main

SONG_SECONDS = 3.0


def write_song(path: Path, seconds: float = SONG_SECONDS, rate: int = 44100) -> Path:
    """A short stereo song of tones and noise, 16-bit wav."""
    rng = np.random.default_rng(1)
    t = np.arange(int(seconds * rate)) / rate
    left = 0.2 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 55 * t) + 0.02 * rng.standard_normal(t.size)
    soundfile.write(path, np.stack([left, 0.7 * left], axis=1), rate, subtype="PCM_16")
    return path


def start_app(model: Path, **options):
    """(app, server, base URL): the app serving on a free port of 127.0.0.1 in a thread."""
    app = SeparationApp(load_separator(model), model.name, **options)
    server = make_server(app, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return app, server, f"http://127.0.0.1:{server.server_address[1]}"


def stop_app(app, server) -> None:
    server.shutdown()
    server.server_close()
    app.close()


def post(url: str, data: bytes, name: str) -> tuple[int, dict]:
    request = urllib.request.Request(url + "/api/jobs", data=data, method="POST", headers={"X-Filename": name})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait_done(url: str, job: str, timeout: float = 120.0) -> list[dict]:
    """Poll a job until it is done; every status seen."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = json.loads(get(f"{url}/api/jobs/{job}")[1])
        seen.append(status)
        if status["state"] in ("done", "error"):
            return seen
        time.sleep(0.05)
    raise AssertionError(f"job {job} not done after {timeout} s: {seen[-1]}")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    run = write_untrained_run(root / "unet-run", "unet-tiny")
    app, server, url = start_app(run, max_upload_mb=1.0)
    yield {"root": root, "run": run, "app": app, "url": url}
    stop_app(app, server)
    assert not app.folder.exists()  # the jobs' files go with the server


def test_upload_separates_like_separate_py(served, tmp_path, monkeypatch, capsys):
    url, app = served["url"], served["app"]
    song = write_song(tmp_path / "my song.wav")
    assert song.stat().st_size < 1e6  # under the server's limit
    status, model = get(url + "/api/model")
    assert status == 200 and json.loads(model)["targets"] == app.targets
    status, page = get(url + "/")
    assert status == 200 and b'id="file"' in page and b"http" not in page.replace(b"XMLHttpRequest", b"")
    status, body = post(url, song.read_bytes(), "my%20song%20%C3%A9.wav")  # the page sends the name URL-quoted
    assert status == 202, body
    seen = wait_done(url, body["id"])
    assert seen[-1]["state"] == "done", seen[-1]
    assert seen[-1]["seconds_total"] == pytest.approx(SONG_SECONDS) and seen[-1]["progress"] == 1.0
    assert seen[-1]["name"] == "my song é.wav"
    result = run_main("separate.py", [song, "--model", served["run"], "--out", tmp_path / "cli", "--quiet"],
                      monkeypatch, capsys)
    assert result.returncode == 0, result.stderr
    for target in app.targets:
        status, data = get(f"{url}/api/jobs/{body['id']}/{target}.wav")
        assert status == 200
        (tmp_path / f"{target}.wav").write_bytes(data)
        served_stem, rate = soundfile.read(tmp_path / f"{target}.wav", dtype="float32")
        written, written_rate = soundfile.read(tmp_path / "cli" / "my song" / f"{target}.wav", dtype="float32")
        assert rate == written_rate == 44100 and served_stem.shape == written.shape == (int(SONG_SECONDS * 44100), 2)
        np.testing.assert_array_equal(served_stem, written)
    with urllib.request.urlopen(f"{url}/api/jobs/{body['id']}/{app.targets[0]}.wav", timeout=60) as response:
        assert "filename*=UTF-8''my%20song%20%C3%A9-" + app.targets[0] + ".wav" in response.headers["Content-Disposition"]
    flac_status, flac = get(f"{url}/api/jobs/{body['id']}/{app.targets[0]}.flac")
    assert flac_status == 200 and flac[:4] == b"fLaC"
    (tmp_path / "served.flac").write_bytes(flac)
    result = run_main("separate.py", [song, "--model", served["run"], "--out", tmp_path / "flac", "--format", "flac",
                                      "--targets", app.targets[0], "--quiet"], monkeypatch, capsys)
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(soundfile.read(tmp_path / "served.flac", dtype="int16")[0],
                                  soundfile.read(tmp_path / "flac" / "my song" / f"{app.targets[0]}.flac", dtype="int16")[0])
    png_status, png = get(f"{url}/api/jobs/{body['id']}/{app.targets[0]}.png")
    assert png_status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"
    served["done"] = body["id"]


def test_refusals_get_their_codes_and_the_server_keeps_serving(served, tmp_path, monkeypatch):
    url, app = served["url"], served["app"]
    status, body = post(url, b"this is not audio at all\n" * 100, "notes.txt")
    assert status == 415 and "not audio" in body["error"]
    # too large: refused from the header alone, before the body is sent
    connection = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=30)
    connection.putrequest("POST", "/api/jobs")
    connection.putheader("Content-Length", str(5_000_000))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and "at most 1 MB" in json.loads(response.read())["error"]
    connection.close()
    with monkeypatch.context() as patch:  # the queue full: one more song is refused
        patch.setattr(app, "active", lambda: app.queue_size)
        status, body = post(url, write_song(tmp_path / "b.wav", 0.5).read_bytes(), "b.wav")
    assert status == 429 and "already waiting" in body["error"]
    assert get(f"{url}/api/jobs/nope")[0] == 404
    # and it still serves: a new song is separated, and the first result is still there
    status, body = post(url, write_song(tmp_path / "c.wav", 1.0).read_bytes(), "c.wav")
    assert status == 202
    assert wait_done(url, body["id"])[-1]["state"] == "done"
    if "done" in served:
        assert get(f"{url}/api/jobs/{served['done']}/{app.targets[0]}.wav")[0] == 200


def test_app_cli_refuses_bad_flags(monkeypatch, capsys, tmp_path):
    result = run_main("mss_tf.cli.app", ["--model", tmp_path, "--max-upload-mb", "0"], monkeypatch, capsys)
    assert result.returncode == 2 and "--max-upload-mb must be positive" in result.stderr
    result = run_main("mss_tf.cli.app", ["--model", tmp_path / "missing", "--port", "0"], monkeypatch, capsys)
    assert result.returncode == 2 and str(tmp_path / "missing") in result.stderr
