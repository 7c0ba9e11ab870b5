"""Benchmark worker: one training step (or forward pass) of the public PyTorch Band-Split RNN of
amanteur/BandSplitRNN-PyTorch, so that `benchmarks/models.py` can time it side by side with ours.

Run with a Python that has torch (`make torch-reference` makes `.venv-torch`); nothing of that
repository is imported before `--repo` names its work tree, and nothing of mss_tf is used:

    .venv-torch/bin/python benchmarks/peer_torch.py --repo PATH [--threads N] [--batch B]
        [--seconds 3] [--frames T] [--mode train|forward]

Model: `BandSplitRNN` (src/model/bandsplitrnn.py) in the configuration of
src/conf/model/bandsplitrnnV7.yaml (44.1 kHz, n_fft 2048, V7 band splits = 41 bands, fc_dim 128,
12 x 2 BLSTMs of 256 units, mlp_dim 512, complex as channel), mono, one target.

Input layout, as the repository's training step feeds it: its featurizer
(torchaudio `Spectrogram(n_fft=2048, hop_length=512, power=None)`) gives a complex64 tensor
(batch, channels, freq, frames) = (B, 1, 1025, T) for mono audio; `BandSplitModule` views the
complex values as real/imaginary channels itself. The model's LayerNorms are built for a fixed
T (`t_timesteps`): by default the repository's own rule for a crop of `--seconds` (RandomCrop pads
3 s = 132300 samples up to 134144 = 262 hops, centred STFT => 263 frames, as in its yaml);
`--frames 259` gives the frame count of an unpadded 3 s STFT (n_samples // hop + 1).

Modes, each call timed after one untimed warm-up call:
  train   (batch 2 by default) `model.train()`, forward, the repository's loss
          (PLModel.compute_losses: L1 of real parts + L1 of imaginary parts of the spectrograms
          + L1 of the waveforms; its inverse featurizer, torchaudio `InverseSpectrogram`, is
          `torch.istft` with the same n_fft/hop/Hann window), backward,
          `clip_grad_norm_(params, 5)` and an Adam step (lr 1e-3). Input and target are random
          spectrograms; the forward STFT and augmentations are not timed (ours take spectrograms too).
  forward (batch 1 by default) `model.eval()` under `torch.inference_mode()`.

Protocol (that of `Worker` in benchmarks/models.py): prints one JSON line
{"ready": "pytorch", "first_call_s", "torch", "params", "mode", ...}, then answers each stdin
line starting with "run" with one timed call, {"seconds": ...}; stops at EOF or any other line.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import types
from pathlib import Path
from typing import Callable

import torch

SAMPLE_RATE, N_FFT, HOP = 44100, 2048, 512
V7 = {  # src/conf/model/bandsplitrnnV7.yaml, is_mono set for mono input
    "sr": SAMPLE_RATE, "n_fft": N_FFT,
    "bandsplits": [(1000, 100), (4000, 250), (8000, 500), (16000, 1000), (20000, 2000)],
    "complex_as_channel": True, "is_mono": True, "bottleneck_layer": "rnn", "fc_dim": 128,
    "rnn_dim": 256, "rnn_type": "LSTM", "bidirectional": True, "num_layers": 12, "mlp_dim": 512,
    "return_mask": False,
}


def repo_frames(seconds: float) -> int:
    """Frames of the repository's training crop of `seconds` (data/augmentations.py RandomCrop)."""
    samples = int(seconds * SAMPLE_RATE)
    samples += N_FFT - samples % HOP
    return samples // HOP + 1


def load_model_class(repo: Path) -> type[torch.nn.Module]:
    """BandSplitRNN from the work tree, without running src/model/__init__.py (it needs pytorch_lightning)."""
    package = types.ModuleType("model")
    package.__path__ = [str(repo / "src" / "model")]
    sys.modules["model"] = package
    return importlib.import_module("model.bandsplitrnn").BandSplitRNN


def repo_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PLModel.compute_losses on complex (B, C, F, T) spectrograms, iSTFT as its inverse featurizer."""
    window = torch.hann_window(N_FFT)
    waves = torch.istft(torch.stack((pred, target)).flatten(0, 2), N_FFT, HOP, N_FFT, window)
    l1 = torch.nn.functional.l1_loss
    return l1(pred.real, target.real) + l1(pred.imag, target.imag) + l1(waves[: len(waves) // 2], waves[len(waves) // 2:])


def make_call(model: torch.nn.Module, mode: str, batch: int, frames: int) -> Callable[[], None]:
    """One training step or one forward pass on fixed random spectrograms."""
    generator = torch.Generator().manual_seed(0)
    shape = (batch, 1, N_FFT // 2 + 1, frames)
    x = torch.randn(shape, dtype=torch.cfloat, generator=generator)
    if mode == "forward":
        model.eval()

        def forward() -> None:
            with torch.inference_mode():
                model(x)

        return forward
    target = torch.randn(shape, dtype=torch.cfloat, generator=generator) * 0.5
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        repo_loss(model(x), target).backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, required=True, help="work tree of amanteur/BandSplitRNN-PyTorch")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch.set_num_threads")
    parser.add_argument("--batch", type=int, default=None, help="default: 2 for train, 1 for forward")
    parser.add_argument("--seconds", type=float, default=3.0, help="audio per example")
    parser.add_argument("--frames", type=int, default=None, help="STFT frames (default: the repository's crop rule)")
    parser.add_argument("--mode", choices=["train", "forward"], default="train")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch = args.batch or (2 if args.mode == "train" else 1)
    frames = args.frames or repo_frames(args.seconds)
    model = load_model_class(args.repo.resolve())(t_timesteps=frames, **V7)
    call = make_call(model, args.mode, batch, frames)
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    print(json.dumps({"ready": "pytorch", "first_call_s": first, "torch": torch.__version__,
                      "params": sum(p.numel() for p in model.parameters()), "mode": args.mode,
                      "batch": batch, "frames": frames, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        if not line.startswith("run"):
            break
        start = time.perf_counter()
        call()
        print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)


if __name__ == "__main__":
    main()
