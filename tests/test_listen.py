"""The listening report: excerpts stored by each evaluation, gathered by `evaluate.py --compare`
into OUT/index.html (the page's content, without a browser; tests/test_browser.py plays it)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import soundfile

from mss_tf import TARGETS
from mss_tf.checkpoints import write_untrained_run
from mss_tf.data import musdb
from mss_tf.evaluation import compare, listen, report
from mss_tf.evaluation.metrics import usdr
from mss_tf.evaluation.oracle import OracleSeparator
from mss_tf.inference import Separator
from mss_tf.models.registry import get_preset
from tests.conftest import write_tone_track

SECONDS = 1.0  # the excerpt; the tracks are 2 s


def test_loudest_window_finds_the_loud_part():
    rate = 100
    signal = np.zeros((1000, 2), np.float32)
    signal[430:530] = 1.0  # 1 s of sound from 4.3 s
    start, frames = listen.loudest_window(signal, rate, 2.0)
    assert frames == 200 and start <= 430 and start + frames >= 530
    assert listen.loudest_window(signal, rate, 20.0) == (0, 1000)  # longer than the track: all of it
    quiet_first = np.concatenate([np.zeros(500), np.ones(500)])
    assert listen.loudest_window(quiet_first, rate, 1.0)[0] >= 500


def test_track_folders_are_safe_and_distinct():
    names = ["A/B: c?", "A B c", "A_B_c"]
    folders = [listen.track_folder(n) for n in names]
    assert len(set(folders)) == 3
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", f) for f in folders)


class _Page(HTMLParser):
    """The <audio> and <img> elements of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.audio: list[dict[str, str]] = []
        self.images: list[str] = []
        self.sections: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "audio":
            self.audio.append(attrs)
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "section" and "data-target" in attrs:
            self.sections.append(attrs["data-target"])


@pytest.fixture(scope="module")
def listening_report(tmp_path_factory):
    return build_listening_report(tmp_path_factory.mktemp("listen"))


def build_listening_report(root: Path) -> dict:
    """Two 2 s tone tracks evaluated by an untrained unet-tiny run, the IRM2 oracle and the
    mixture (uSDR only, 1 s excerpts) in `root`, compared into root/report/."""
    musdb_root = root / "musdb"
    for i in range(2):
        write_tone_track(musdb_root / "test" / f"song {i}", 2.0, seed=3 + i)
    tracks = musdb.split_tracks(musdb_root, "test")
    run = write_untrained_run(root / "unet-run", "unet-tiny")
    separator = Separator.from_run(run)
    oracle = OracleSeparator("irm2", get_preset("unet").stft, list(TARGETS))
    mixture = lambda audio, rate: report.mixture_as_estimate(audio, rate, TARGETS)  # noqa: E731
    folders = []
    for name, method, targets in [("unet", separator.separate, separator.targets), ("oracle", oracle, TARGETS),
                                  ("mixture", mixture, TARGETS)]:
        out = root / name
        rows = report.evaluate_tracks(method, tracks, targets, progress=False, bss="none", out_dir=out,
                                      listen_seconds=SECONDS)
        report.write_results(report.summarize(rows, targets, name, 0, "test", {"label": name}), out)
        folders.append(out)
    written = compare.write_comparison(folders, root / "report")
    return {"root": musdb_root, "tracks": tracks, "folders": folders, "written": written, "separator": separator,
            "targets": separator.targets}


def test_report_page_lists_every_clip_and_they_decode(listening_report):
    page_path = listening_report["written"]["page"]
    assert page_path == page_path.parent / "index.html"
    text = page_path.read_text()
    page = _Page()
    page.feed(text)
    targets = listening_report["targets"]
    # per track and target: mixture, reference and one estimate per model
    assert page.sections == targets * 2
    assert len(page.audio) == 2 * len(targets) * (2 + 3)
    assert sorted(a["data-model"] for a in page.audio if a["data-clip"] == "model") == sorted(
        ["unet", "oracle", "mixture"] * 2 * len(targets))
    for attrs in page.audio:
        path = page_path.parent / unquote(attrs["src"])
        assert path.is_file(), attrs
        audio, rate = soundfile.read(str(path), always_2d=True)
        assert rate == 44100 and audio.shape == (int(SECONDS * 44100), 2), (path, audio.shape)
        assert float(attrs["data-seconds"]) == pytest.approx(SECONDS)
    # the plots and one spectrogram image per track and target, all in the report folder
    assert len(page.images) == 2 + 2 * len(targets)
    for src in page.images:
        assert (page_path.parent / unquote(src)).is_file(), src
    assert "http://" not in text and "https://" not in text  # nothing fetched from elsewhere
    assert "clips of this track:" in text and " MB" in text
    assert text.count("left to right: reference, unet, oracle, mixture") == 2 * len(targets)


def test_excerpt_usdr_is_the_excerpts_own(listening_report):
    """The uSDR shown per clip is recomputed from the data: the mixture's on its window, and the
    run's on the window of its full-track separation."""
    tracks, separator = listening_report["tracks"], listening_report["separator"]
    page = _Page()
    page.feed(listening_report["written"]["page"].read_text())
    shown = {(a["src"].split("/")[1], a["src"].split("/")[2], a["data-model"]): float(a["data-usdr"])
             for a in page.audio if a["data-clip"] == "model"}
    for track in tracks:
        audio, rate = musdb.load_track(track)
        estimates = separator.separate(audio["mixture"], rate)
        for target in listening_report["targets"]:
            start, frames = listen.loudest_window(audio[target], rate, SECONDS)
            cut = slice(start, start + frames)
            folder = listen.track_folder(track.name)
            expected_mixture = usdr(audio[target][cut], audio["mixture"][cut])
            assert shown[(folder, target, "mixture")] == pytest.approx(expected_mixture, abs=1e-9)
            assert shown[(folder, target, "unet")] == pytest.approx(usdr(audio[target][cut], estimates[target][cut]),
                                                                    abs=1e-3)
            assert shown[(folder, target, "oracle")] > expected_mixture + 5  # tones: the ideal mask separates them


def test_compare_names_folders_without_excerpts(listening_report, tmp_path, monkeypatch):
    """A folder evaluated before excerpts existed still gets its table row; the page says it has no clips."""
    for plot in ("plot_boxes", "plot_tradeoff"):  # drawn in the fixture already
        monkeypatch.setattr(compare, plot, lambda models, path: path.write_bytes(b""))
    old = tmp_path / "old"
    results = report.load_results(listening_report["folders"][2])
    for row in results["tracks"]:
        row.pop("listen")
    results["label"] = "old mixture"
    report.write_results(results, old)
    written = compare.write_comparison([listening_report["folders"][1], old], tmp_path / "report")
    text = written["page"].read_text()
    assert "No excerpts stored by: old mixture" in text
    page = _Page()
    page.feed(text)
    assert {a["data-model"] for a in page.audio if a["data-clip"] == "model"} == {"oracle"}
    assert "| old mixture |" in written["markdown"].read_text()
