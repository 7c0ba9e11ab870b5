"""The listening report and the separation page in a real browser: playwright driving Chromium
(`make test-browser`; README "Listen"). Skipped, with the reason, when playwright or a Chromium
cannot be found: set MSS_CHROMIUM to a Chromium executable, or install one (apt-get install
chromium, or `python -m playwright install chromium`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.test_app import start_app, stop_app, write_song
from tests.test_cli import run_main
from tests.test_listen import SECONDS, build_listening_report

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
LAUNCH_ARGS = ["--autoplay-policy=no-user-gesture-required", "--mute-audio"]


def find_chromium() -> str | None:
    """A Chromium executable: $MSS_CHROMIUM, else one on PATH (None: playwright's own, if installed)."""
    if os.environ.get("MSS_CHROMIUM"):
        return os.environ["MSS_CHROMIUM"]
    return next((found for name in CANDIDATES if (found := shutil.which(name))), None)


def unavailable(reason: str) -> None:
    """Skip with `reason`; fail instead where a browser is required (MSS_BROWSER_REQUIRED=1: CI,
    whose `make test-browser` installs one, so a skip there would hide a broken install)."""
    if os.environ.get("MSS_BROWSER_REQUIRED") == "1":
        pytest.fail(f"browser required (MSS_BROWSER_REQUIRED=1): {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        unavailable("playwright is not installed (make browser-deps, or pip install -r requirements-browser.txt)")
    manager = sync_playwright().start()
    executable = find_chromium()
    try:
        launched = manager.chromium.launch(executable_path=executable, args=LAUNCH_ARGS)
    except Error as exc:
        manager.stop()
        unavailable(f"no Chromium to drive ({executable or 'playwright’s own'}: {str(exc).splitlines()[0]}); "
                    "install one: apt-get install chromium, or python -m playwright install chromium, or set MSS_CHROMIUM")
    yield launched
    launched.close()
    manager.stop()


def watch_errors(page) -> list[str]:
    """Console errors and uncaught exceptions of `page`, as they happen."""
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


READY = """async () => {
  const audios = Array.from(document.querySelectorAll('audio'));
  await Promise.all(audios.map(a => new Promise((resolve) => {
    if (a.readyState >= 3) return resolve();
    a.addEventListener('canplay', resolve, {once: true});
    a.addEventListener('error', resolve, {once: true});
    a.preload = 'auto';
    a.load();
  })));
  return audios.map(a => ({src: a.src, ready: a.readyState, duration: a.duration, error: a.error && a.error.code,
                           expected: a.dataset.seconds ? parseFloat(a.dataset.seconds) : null}));
}"""
IMAGES = """async () => {
  const images = Array.from(document.images);
  await Promise.all(images.map(i => i.complete ? null : new Promise(r => { i.onload = r; i.onerror = r; })));
  return images.map(i => ({src: i.src, width: i.naturalWidth}));
}"""


@pytest.fixture(scope="module")
def listening_report(tmp_path_factory):
    return build_listening_report(tmp_path_factory.mktemp("listen"))


def test_report_plays_every_clip(browser, listening_report):
    page = browser.new_page()
    errors = watch_errors(page)
    page.goto(listening_report["written"]["page"].as_uri())
    audios = page.evaluate(READY)
    assert len(audios) == 2 * len(listening_report["targets"]) * 5
    for audio in audios:
        assert audio["error"] is None and audio["ready"] >= 3, audio
        assert audio["duration"] == pytest.approx(SECONDS, abs=0.02), audio
    images = page.evaluate(IMAGES)
    assert len(images) == 2 + 2 * len(listening_report["targets"]) and all(i["width"] > 0 for i in images), images
    # a clip plays: its time moves
    page.evaluate("() => document.querySelector('audio').play()")
    page.wait_for_function("() => document.querySelector('audio').currentTime > 0.2", timeout=10_000)
    # the target filter hides the other targets' sections
    target = listening_report["targets"][0]
    page.select_option("#target-filter", target)
    shown = page.evaluate("() => Array.from(document.querySelectorAll('section.target'))"
                          ".filter(s => s.style.display !== 'none').map(s => s.dataset.target)")
    assert shown == [target, target]
    assert errors == []
    page.close()


def test_app_page_separates_an_upload(browser, tmp_path_factory, monkeypatch, capsys):
    from mss_tf.checkpoints import write_untrained_run

    root = tmp_path_factory.mktemp("browser-app")
    run = write_untrained_run(root / "unet-run", "unet-tiny")
    song = write_song(root / "song.wav", seconds=20.0)
    app, server, url = start_app(run)
    try:
        page = browser.new_page(accept_downloads=True)
        errors = watch_errors(page)
        page.goto(url + "/")
        page.wait_for_function("() => document.getElementById('model').textContent.includes('Model')")
        # every text the status line shows, from the upload to the end
        page.evaluate("""() => { window.seen = []; const node = document.getElementById('status-text');
            new MutationObserver(() => window.seen.push(node.textContent)).observe(node, {childList: true}); }""")
        page.set_input_files("#file", str(song))
        page.wait_for_selector(".stem audio", timeout=120_000)
        seen = page.evaluate("() => window.seen")
        assert any(text.startswith("Uploading song.wav") for text in seen), seen
        assert seen[-1].startswith("Separated song.wav (20.0 s)"), seen
        assert page.evaluate("() => document.getElementById('progress').value") == 1
        targets = page.evaluate("() => Array.from(document.querySelectorAll('.stem')).map(s => s.dataset.target)")
        assert targets == app.targets
        audios = page.evaluate(READY)
        assert len(audios) == len(app.targets)
        assert all(a["error"] is None and a["ready"] >= 3 and a["duration"] == pytest.approx(20.0, abs=0.02)
                   for a in audios), audios
        assert all(i["width"] > 0 for i in page.evaluate(IMAGES))
        result = run_main("separate.py", [song, "--model", run, "--out", root / "cli", "--quiet"], monkeypatch, capsys)
        assert result.returncode == 0, result.stderr
        for target in app.targets:
            with page.expect_download() as download:
                page.click(f".stem[data-target='{target}'] a.download-wav")
            assert download.value.suggested_filename == f"song-{target}.wav"
            saved = root / f"downloaded-{target}.wav"
            download.value.save_as(saved)
            np.testing.assert_array_equal(soundfile.read(saved, dtype="float32")[0],
                                          soundfile.read(root / "cli" / "song" / f"{target}.wav", dtype="float32")[0])
        # a file that is not audio: the page says why, and the server still answers
        notes = root / "notes.txt"
        notes.write_text("not audio\n" * 50)
        page.set_input_files("#file", str(notes))
        page.wait_for_function("() => document.getElementById('error').textContent.includes('415')")
        assert [e for e in errors if "415" not in e] == []  # the refused upload's own console line only
        page.close()
    finally:
        stop_app(app, server)


def test_find_chromium_prefers_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MSS_CHROMIUM", str(tmp_path / "my-chrome"))
    assert find_chromium() == str(tmp_path / "my-chrome")
    monkeypatch.delenv("MSS_CHROMIUM")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_chromium() is None
    assert Path(tmp_path).is_dir()
