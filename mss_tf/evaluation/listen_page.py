"""The listening report: OUT/index.html of `evaluate.py --compare`, one self-contained page (no
script or style from elsewhere; relative links to files in OUT, so it works opened from disk).

It holds the comparison table and plots, then per test track and target the excerpt each
evaluation stored (mss_tf.evaluation.listen): the mixture, the reference and every compared
model's estimate as Ogg Vorbis, each with its uSDR on the excerpt and on the whole track, and one
image of their spectrograms side by side. The clips are copied into OUT/clips/, so the report
folder stands alone. Folders evaluated without excerpts (before they existed, or with
--listen-seconds 0) are named on the page and have no clips.
"""

from __future__ import annotations

import html
import shutil
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import quote

import numpy as np

from mss_tf.evaluation.listen import clip_names, track_folder
from mss_tf.utils import atomic_path, atomic_write

PAGE = "index.html"
CLIPS_DIR = "clips"
SPECTROGRAM_FFT = 2048
SPECTROGRAM_HOP = 512
TOP_DB = 80.0
ROWS = 256  # frequency rows of a spectrogram image (log-spaced bands of the STFT's bins)
COLUMNS = 320  # time columns of a spectrogram panel
GAP = 6
LABELS = {"mixture": "mixture (input)", "reference": "reference (the target)"}

STYLE = """
body { font-family: sans-serif; margin: 1.5em; max-width: 1400px; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; }
audio { height: 2.2em; vertical-align: middle; }
section.target { margin-left: 1em; }
.note { color: #555; font-size: 0.9em; }
"""

FILTER_SCRIPT = """
document.getElementById('target-filter').addEventListener('change', function (event) {
  var chosen = event.target.value;
  document.querySelectorAll('section.target').forEach(function (section) {
    section.style.display = (chosen === '' || section.dataset.target === chosen) ? '' : 'none';
  });
});
"""


def _url(path: str) -> str:
    return html.escape(quote(path), quote=True)


def _db(value: Any) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.2f}"


def _load_clip(path: Path) -> np.ndarray:
    import soundfile

    audio, _ = soundfile.read(str(path), dtype="float32", always_2d=True)
    return audio


def magnitude_db(audio: np.ndarray, columns: int = COLUMNS) -> np.ndarray:
    """(bins, frames) magnitude in dB (re 1.0) of the mono mix of (samples, channels) audio: a
    SPECTROGRAM_FFT-point Hann STFT with about `columns` frames (never closer than SPECTROGRAM_HOP)."""
    signal = np.asarray(audio, np.float64).mean(axis=1)
    if signal.size < SPECTROGRAM_FFT:
        signal = np.pad(signal, (0, SPECTROGRAM_FFT - signal.size))
    hop = max(SPECTROGRAM_HOP, (signal.size - SPECTROGRAM_FFT) // max(1, columns - 1) or 1)
    starts = np.arange(0, signal.size - SPECTROGRAM_FFT + 1, hop)
    frames = np.stack([signal[s:s + SPECTROGRAM_FFT] for s in starts]) * np.hanning(SPECTROGRAM_FFT)
    magnitude = np.abs(np.fft.rfft(frames, axis=1))  # (frames, SPECTROGRAM_FFT / 2 + 1)
    # rows on a log-frequency axis, as one hears: bin 1 (about 20 Hz at 44.1 kHz) to Nyquist, each
    # row the mean of the bins in its band (at least one)
    edges = np.geomspace(1.0, magnitude.shape[1] - 1, ROWS + 1)
    low = np.floor(edges[:-1]).astype(int)
    high = np.maximum(low + 1, np.floor(edges[1:]).astype(int))
    cumulative = np.concatenate([np.zeros((len(starts), 1)), np.cumsum(magnitude, axis=1)], axis=1)
    rows = (cumulative[:, high] - cumulative[:, low]) / (high - low)  # (frames, ROWS)
    return (20.0 * np.log10(rows + 1e-6)).T


def write_spectrograms(clips: Sequence[np.ndarray], path: Path, columns: int = COLUMNS) -> None:
    """One PNG of the spectrograms of `clips` ((samples, channels) each) side by side, low
    frequencies at the bottom, on one colour scale (the loudest bin to TOP_DB below it), a white
    gap between panels. Drawn with matplotlib's imsave (no figure: fast enough for every track)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spectra = [magnitude_db(audio, columns) for audio in clips]
    top = max(float(s.max()) for s in spectra)
    gap = np.full((ROWS, GAP), np.nan)
    panels = [part for spectrum in spectra for part in (spectrum, gap)][:-1]
    image = np.concatenate(panels, axis=1)[::-1]  # (ROWS, width), low frequencies at the bottom
    rgba = plt.get_cmap("magma")(np.clip((image - (top - TOP_DB)) / TOP_DB, 0.0, 1.0))
    rgba[np.isnan(image)] = 1.0  # the gaps: white
    with atomic_path(path) as tmp:
        plt.imsave(tmp, rgba, format="png")


def _track_usdr(results: dict[str, Any], track: str, target: str) -> float | None:
    for row in results.get("tracks", []):
        if row.get("track") == track:
            return row.get("usdr", {}).get(target)
    return None


def gather(folders: Sequence[tuple[str, Path, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per (track, target) the clips the folders stored: [{"track", "target", "window": the
    excerpt entry of results.json, "source": folder holding the mixture and reference clips,
    "models": [(label, clip path or None, excerpt uSDR, track uSDR, note)]}] in the order of
    the first folder's tracks and targets. A model whose window differs from the first one's
    (another --max-seconds or --listen-seconds) is listed without a clip."""
    items: dict[tuple[str, str], dict[str, Any]] = {}
    for label, path, results in folders:
        for row in results.get("tracks", []):
            for target, entry in (row.get("listen") or {}).items():
                key = (row["track"], target)
                clip = path / entry["folder"] / clip_names(target)["estimate"]
                if key not in items:
                    items[key] = {"track": row["track"], "target": target, "window": entry, "source": path / entry["folder"]}
                item = items[key]
                same = (abs(entry["start"] - item["window"]["start"]) < 1e-6
                        and abs(entry["seconds"] - item["window"]["seconds"]) < 1e-6)
                item.setdefault("found", {})[label] = (clip if same and clip.is_file() else None, entry["usdr"],
                                                       "" if same else "another excerpt window")
    for item in items.values():
        item["models"] = []
        for label, _, results in folders:
            clip, value, note = item["found"].get(label, (None, None, "no excerpt stored"))
            item["models"].append((label, clip, value, _track_usdr(results, item["track"], item["target"]), note))
    return list(items.values())


def write_page(folders: Sequence[tuple[str, Path, dict[str, Any]]], out_dir: Path, table: tuple[list[str], list[list[Any]]],
               images: Sequence[str], describe: str) -> Path:
    """Copy the clips into out_dir/clips/, draw the spectrograms and write out_dir/index.html.

    Args:
        folders: (label, evaluated folder, its results.json) of each compared model.
        table: the comparison's (header, rows) (compare.table_rows).
        images: file names of the plots in out_dir.
        describe: the sentence above the table (what the columns mean).
    """
    out_dir = Path(out_dir)
    items = gather(folders)
    listen = out_dir / CLIPS_DIR  # not listen/: the report may be written into an evaluated folder
    if listen.exists():
        shutil.rmtree(listen)
    sizes: dict[str, int] = {}
    for item in items:
        folder = listen / track_folder(item["track"]) / item["target"]
        folder.mkdir(parents=True, exist_ok=True)
        names = clip_names(item["target"])
        clips = {}
        for kind in ("mixture", "reference"):
            source = item["source"] / names[kind]
            if source.is_file():
                shutil.copyfile(source, folder / f"{kind}.ogg")
                clips[kind] = folder / f"{kind}.ogg"
        for index, (label, clip, *_rest) in enumerate(item["models"]):
            if clip is not None:
                shutil.copyfile(clip, folder / f"model-{index}.ogg")
                clips[index] = folder / f"model-{index}.ogg"
        item["clips"] = {key: path.relative_to(out_dir).as_posix() for key, path in clips.items()}
        shown = [("reference", clips["reference"])] if "reference" in clips else []
        shown += [(item["models"][k][0], clips[k]) for k in clips if isinstance(k, int)]
        if shown:
            image = folder / "spectrograms.png"
            write_spectrograms([_load_clip(p) for _, p in shown], image)
            item["image"] = image.relative_to(out_dir).as_posix()
            item["panels"] = [label for label, _ in shown]
        sizes[item["track"]] = sizes.get(item["track"], 0) + sum(p.stat().st_size for p in clips.values())
    path = out_dir / PAGE
    atomic_write(path, render(folders, items, sizes, table, images, describe))
    return path


def render(folders, items, sizes, table, images, describe) -> str:
    """The page's HTML (see write_page)."""
    header, rows = table
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           "<title>mss-tf listening report</title>", '<link rel="icon" href="data:,">', f"<style>{STYLE}</style></head><body>",
           "<h1>Listening report</h1>", f"<p class=\"note\">{e(describe)}</p>", "<table><thead><tr>"]
    out += [f"<th>{e(h)}</th>" for h in header]
    out.append("</tr></thead><tbody>")
    for row in rows:
        cells = []
        for value, column in zip(row, header):
            if value is None:
                text = "-"
            elif column == "params":
                text = f"{int(value):,}"
            elif column == "RTF":
                text = f"{value:.3f}"
            elif isinstance(value, float):
                text = f"{value:.2f}"
            else:
                text = str(value)
            cells.append(f"<td>{e(text)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    for image in images:
        out.append(f'<p><img src="{_url(image)}" alt="{e(image)}"></p>')
    missing = [label for label, _, results in folders
               if not any(row.get("listen") for row in results.get("tracks", []))]
    if missing:
        out.append(f"<p class=\"note\">No excerpts stored by: {e(', '.join(missing))} (evaluate them again with "
                   "--listen-seconds &gt; 0 to hear them).</p>")
    if not items:
        out.append("<p>No listening excerpts in the compared folders.</p></body></html>")
        return "\n".join(out) + "\n"
    targets = list(dict.fromkeys(item["target"] for item in items))
    out.append('<p><label>Show target: <select id="target-filter"><option value="">all</option>'
               + "".join(f'<option value="{e(t)}">{e(t)}</option>' for t in targets) + "</select></label></p>")
    out.append("<p class=\"note\">Per track and target: the excerpt where the target's reference is loudest; uSDR "
               "(dB) of each estimate on the excerpt and on the whole track (0 dB: a silent estimate). Clips are "
               "Ogg Vorbis, clipped to [-1, 1].</p>")
    current = None
    for item in items:
        if item["track"] != current:
            if current is not None:
                out.append("</section>")
            current = item["track"]
            out.append(f'<section class="track"><h2>{e(current)}</h2>'
                       f'<p class="note">clips of this track: {sizes.get(current, 0) / 1e6:.2f} MB</p>')
        window = item["window"]
        out.append(f'<section class="target" data-target="{e(item["target"])}"><h3>{e(item["target"])} '
                   f'<span class="note">({window["start"]:.1f}-{window["start"] + window["seconds"]:.1f} s)</span></h3>')
        out.append("<table><thead><tr><th>clip</th><th>listen</th><th>uSDR excerpt</th><th>uSDR track</th>"
                   "</tr></thead><tbody>")
        clips = item["clips"]
        for kind in ("mixture", "reference"):
            if kind in clips:
                out.append(f'<tr><td>{LABELS[kind]}</td><td><audio controls preload="metadata" src="{_url(clips[kind])}" '
                           f'data-seconds="{window["seconds"]:.6f}" data-clip="{kind}"></audio></td><td></td><td></td></tr>')
        for index, (label, clip, value, track_value, note) in enumerate(item["models"]):
            player = (f'<audio controls preload="metadata" src="{_url(clips[index])}" data-seconds="{window["seconds"]:.6f}" '
                      f'data-clip="model" data-model="{e(label)}" data-usdr="{value!r}"></audio>'
                      if index in clips else f'<span class="note">{e(note)}</span>')
            out.append(f"<tr><td>{e(label)}</td><td>{player}</td><td>{_db(value if index in clips else None)}</td>"
                       f"<td>{_db(track_value)}</td></tr>")
        out.append("</tbody></table>")
        if "image" in item:
            out.append(f'<p class="note">Spectrograms (log frequency, {item["window"]["rate"] / SPECTROGRAM_FFT:.0f} Hz to '
                       f'{item["window"]["rate"] / 2000:g} kHz upwards, {TOP_DB:g} dB range), left to right: '
                       f'{e(", ".join(item["panels"]))}</p>')
            out.append(f'<img src="{_url(item["image"])}" alt="spectrograms: {e(item["track"])} {e(item["target"])}">')
        out.append("</section>")
    out.append("</section>")
    out.append(f"<script>{FILTER_SCRIPT}</script></body></html>")
    return "\n".join(out) + "\n"
