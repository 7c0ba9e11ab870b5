"""Separate a wav file with an mss-tf LiteRT export, using only NumPy and ai-edge-litert.

    pip install numpy ai-edge-litert
    python -m mss_tf.export runs/unet-demo unet-litert --format litert     # on the training machine
    python examples/litert_separate.py unet-litert song.wav --out stems/   # anywhere

This is where an app starts: the .tflite file holds one chunk's STFT, model and inverse STFT
(input "waveform" float32 [channels, chunk_samples] at the model's sample rate, output "stems"
float32 [targets, channels, chunk_samples]); the app does the rest, as this file does:

  1. read the audio and bring it to the export's `sample_rate` (`resample`: an FFT resampler in
     NumPy; mss-tf itself uses soxr, and an app would use its platform's resampler);
  2. cut it into chunks and crossfade them back with the export's chunk plan (`ChunkPlan`,
     `overlap_add`: a NumPy copy of mss_tf.inference.ChunkPlan, which tests/test_portable.py
     checks against the original), one interpreter call per chunk;
  3. bring each stem back to the file's rate and write it.

Input: 16-bit or 32-bit integer PCM wav (the standard library's `wave`), mono or stereo; stems
are written as 16-bit wav, one per target, at the input's rate and length.
"""

from __future__ import annotations

import argparse
import json
import sys
import wave
from pathlib import Path
from typing import Callable

import numpy as np


class ChunkPlan:
    """Where the chunks of a track of n samples start and how they are weighted (mss_tf.inference.ChunkPlan):
    n <= chunk: one chunk, the whole track, weight 1; else chunks of `chunk` samples every
    `chunk - overlap` samples, the last one ending at the track's end, each weighted by Hann fades of
    min(overlap, chunk // 2) samples towards its neighbours (none at the track's two ends)."""

    def __init__(self, chunk: int, overlap: int) -> None:
        if not 0 <= overlap < chunk:
            raise ValueError(f"chunk {chunk} / overlap {overlap}: need 0 <= overlap < chunk")
        self.chunk, self.overlap = int(chunk), int(overlap)
        self.step = self.chunk - self.overlap
        self.fade = min(self.overlap, self.chunk // 2)
        fade_in = np.ones(self.chunk, np.float32)
        fade_in[: self.fade] = (0.5 - 0.5 * np.cos(np.pi * (np.arange(self.fade) + 0.5) / max(self.fade, 1))).astype(np.float32)
        self._fade_in, self._fade_out = fade_in, np.ascontiguousarray(fade_in[::-1])

    def n_chunks(self, n: int) -> int:
        return (max(n - self.chunk, 0) + self.step - 1) // self.step + min(n, 1)

    def starts(self, n: int) -> list[int]:
        return [max(min(i * self.step, n - self.chunk), 0) for i in range(self.n_chunks(n))]

    def window(self, first: bool, last: bool) -> np.ndarray:
        ones = np.ones(self.chunk, np.float32)
        return (ones if first else self._fade_in) * (ones if last else self._fade_out)


def overlap_add(plan: ChunkPlan, run_chunk: Callable[[np.ndarray], np.ndarray], waves: np.ndarray,
                n_targets: int) -> np.ndarray:
    """(channels, n) at the model's rate -> (targets, channels, n): every chunk separated by
    `run_chunk` ((channels, chunk) -> (targets, channels, chunk)), weighted and summed in order,
    divided by the summed weights. A track shorter than a chunk is zero-padded to it and cut back."""
    channels, n = waves.shape
    starts = plan.starts(n)
    if len(starts) <= 1:
        piece = np.zeros((channels, plan.chunk), np.float32)
        piece[:, :n] = waves
        return run_chunk(piece)[:, :, :n] if n else np.zeros((n_targets, channels, 0), np.float32)
    total = np.zeros((n_targets, channels, n), np.float32)
    weight = np.zeros(n, np.float32)
    for i, start in enumerate(starts):
        window = plan.window(i == 0, i == len(starts) - 1)
        total[:, :, start : start + plan.chunk] += run_chunk(waves[:, start : start + plan.chunk]) * window
        weight[start : start + plan.chunk] += window
    return total / weight


def litert_chunk_function(model_path: str | Path, threads: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    """The export's per-chunk call: (channels, chunk) float32 -> (targets, channels, chunk)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_path), num_threads=threads)
    interpreter.allocate_tensors()
    source, result = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]

    def run_chunk(piece: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(source, np.ascontiguousarray(piece, np.float32))
        interpreter.invoke()
        return interpreter.get_tensor(result).copy()

    return run_chunk


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """(channels, n) from rate_in to rate_out by zero-padding or cutting the spectrum (whole file at once)."""
    if rate_in == rate_out:
        return audio.astype(np.float32)
    n_out = int(round(audio.shape[1] * rate_out / rate_in))
    spectrum = np.fft.rfft(audio, axis=1)
    bins = n_out // 2 + 1
    spectrum = spectrum[:, :bins] if spectrum.shape[1] >= bins else np.pad(spectrum, [(0, 0), (0, bins - spectrum.shape[1])])
    return (np.fft.irfft(spectrum, n_out, axis=1) * (n_out / audio.shape[1])).astype(np.float32)


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """(channels, n) float32 in [-1, 1) and the rate of a 16- or 32-bit integer PCM wav."""
    with wave.open(str(path), "rb") as reader:
        width, channels, rate = reader.getsampwidth(), reader.getnchannels(), reader.getframerate()
        data = reader.readframes(reader.getnframes())
    if width not in (2, 4):
        raise ValueError(f"{path}: {8 * width}-bit samples; write it as 16- or 32-bit integer PCM")
    samples = np.frombuffer(data, "<i2" if width == 2 else "<i4").reshape(-1, channels).T
    return (samples / float(2 ** (8 * width - 1))).astype(np.float32), rate


def write_wav(path: Path, audio: np.ndarray, rate: int) -> None:
    """(channels, n) float -> 16-bit PCM wav, clipped to [-1, 1), written under a temporary name first."""
    pcm = np.round(np.clip(audio, -1.0, 32767 / 32768) * 32768).astype("<i2").T
    temporary = path.with_name(f".{path.name}.tmp")
    with wave.open(str(temporary), "wb") as writer:
        writer.setnchannels(audio.shape[0])
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(pcm.tobytes())
    temporary.replace(path)


def separate(export: Path, audio: np.ndarray, rate: int, threads: int = 1) -> dict[str, np.ndarray]:
    """(channels, n) audio at `rate` -> {target: (channels, n)} at `rate`, with the export in folder `export`."""
    meta = json.loads((export / "mss_tf.json").read_text())
    model_rate, channels = int(meta["sample_rate"]), int(meta["channels"])
    if audio.shape[0] > 2:
        raise ValueError(f"{audio.shape[0]} channels: mono or stereo only")
    waves = resample(audio, rate, model_rate)
    if waves.shape[0] != channels:  # mono file, stereo export: both channels the same; stereo file, mono export: each on its own
        waves = np.repeat(waves, channels, axis=0) if channels == 2 else waves
    run_chunk = litert_chunk_function(export / meta["file"], threads)
    if channels == 1 and waves.shape[0] == 2:
        per_channel = [overlap_add(ChunkPlan(meta["chunk_samples"], meta["overlap_samples"]), run_chunk, w[np.newaxis],
                                   len(meta["targets"])) for w in waves]
        stems = np.concatenate(per_channel, axis=1)
    else:
        stems = overlap_add(ChunkPlan(meta["chunk_samples"], meta["overlap_samples"]), run_chunk, waves, len(meta["targets"]))
    if audio.shape[0] == 1 and channels == 2:
        stems = stems.mean(axis=1, keepdims=True)
    n = audio.shape[1]
    out = {}
    for target, stem in zip(meta["targets"], stems):
        back = resample(stem, model_rate, rate)[:, :n]
        out[target] = np.pad(back, [(0, 0), (0, n - back.shape[1])])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", type=Path, help="folder written by python -m mss_tf.export --format litert")
    parser.add_argument("wav", type=Path, help="16- or 32-bit integer PCM wav, mono or stereo")
    parser.add_argument("--out", type=Path, required=True, help="folder for one TARGET.wav per target")
    parser.add_argument("--threads", type=int, default=1, help="LiteRT interpreter threads (default 1)")
    args = parser.parse_args(argv)
    try:
        if not (args.export / "mss_tf.json").is_file():
            raise ValueError(f"{args.export}: not an mss-tf LiteRT export (no mss_tf.json)")
        audio, rate = read_wav(args.wav)
        stems = separate(args.export, audio, rate, args.threads)
    except (OSError, ValueError, wave.Error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for target, stem in stems.items():
        write_wav(args.out / f"{target}.wav", stem, rate)
    print(f"{args.wav}: {', '.join(stems)} written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
