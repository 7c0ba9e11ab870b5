"""Benchmark worker: one forward pass or one training step of the real PyTorch BS-RoFormer of
ZFTurbo/Music-Source-Separation-Training (models/bs_roformer/bs_roformer.py, `BSRoformer`, the
code the public checkpoints were trained with), so that `benchmarks/roformer.py` can time it
side by side with ours.

Run with a Python that has torch, einops, beartype and rotary-embedding-torch (the reference's
own imports), on a work tree or extracted copy of that repository; nothing of it is imported
before `--reference-repo` names it, and nothing of mss_tf is used:

    .venv-torch/bin/python benchmarks/peer_roformer.py --reference-repo PATH --mode forward|train
        [--threads N] [--batch B] [--seconds 8] [--attn-dropout 0.1] [--ff-dropout 0.1] [--clip-norm 5]
        [--checkpoint]

Model: `BSRoformer` in the configuration of mss-tf's `bs-roformer` preset (the paper's MUSDB18
size): dim 384, depth 6 (one time and one freq transformer layer each), 8 heads of 64, stereo,
one stem, the reference's 62 bands (its DEFAULT_FREQS_PER_BANDS), STFT n_fft 2048 / hop 512 /
window 2048, mask estimator depth 2 with expansion 4, zero_dc, dropouts 0.1, `flash_attn=True`
(torch's scaled_dot_product_attention; on CPU its fused flash kernel runs when the attention has
no dropout: in eval mode, and in training only with --attn-dropout 0).

Modes, each call timed after one untimed warm-up call; input and target are fixed random
waveforms of --seconds (8 s = 352800 samples, the public configs' chunk_size) per channel:
  forward (batch 1 by default) `model.eval()` under `torch.inference_mode()`: raw audio in,
          audio out (the reference's forward holds its STFT and iSTFT).
  train   (batch 2 by default) `model.train()`, the reference's own loss (`model(x, target=y)`:
          waveform L1 + multi-resolution STFT L1), backward, `clip_grad_norm_(params, 5)` (as
          mss-tf's step clips the global norm at 5; --clip-norm 0: none) and an Adam step
          (lr 5e-4, the preset's). `--checkpoint` sets the reference's `use_torch_checkpoint`
          (torch.utils.checkpoint around the band split, every transformer and the mask
          estimators: their activations are recomputed in the backward pass), without which
          a paper-size step at batch 2 x 8 s does not fit in tens of GB.

Protocol (that of `Worker` in benchmarks/models.py): prints one JSON line
{"ready": "pytorch", "first_call_s", "torch", "params", "mode", "threads", "peak_rss_mb", ...},
then answers each stdin line starting with "run" with one timed call, {"seconds": ...,
"peak_rss_mb": ...} (the process's peak resident set so far); stops at EOF or any other line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Callable

import torch

SAMPLE_RATE, N_FFT, HOP = 44100, 2048, 512
# mss-tf's `bs-roformer` preset in the reference's arguments (mss_tf/models/registry.py _ROFORMER_PAPER)
PRESET = dict(
    dim=384, depth=6, stereo=True, num_stems=1, time_transformer_depth=1, freq_transformer_depth=1,
    linear_transformer_depth=0, dim_head=64, heads=8, flash_attn=True, dim_freqs_in=N_FFT // 2 + 1,
    stft_n_fft=N_FFT, stft_hop_length=HOP, stft_win_length=N_FFT, stft_normalized=False, zero_dc=True,
    mask_estimator_depth=2, mlp_expansion_factor=4, multi_stft_resolution_loss_weight=1.0,
    multi_stft_resolutions_window_sizes=(4096, 2048, 1024, 512, 256), multi_stft_hop_size=147,
    multi_stft_normalized=False, use_torch_checkpoint=False, skip_connection=False,
)
LEARNING_RATE = 5e-4


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_model_class(repo: Path) -> type[torch.nn.Module]:
    """BSRoformer from the reference's work tree (its `models` is a namespace package: this
    folder's models.py would shadow it, so this folder leaves sys.path first)."""
    here = Path(__file__).resolve().parent
    sys.path[:] = [str(repo.resolve())] + [p for p in sys.path if Path(p or ".").resolve() != here]
    from models.bs_roformer.bs_roformer import BSRoformer

    return BSRoformer


def make_call(model: torch.nn.Module, mode: str, batch: int, samples: int, clip_norm: float) -> Callable[[], None]:
    """One forward pass or one training step on fixed random waveforms."""
    generator = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(batch, 2, samples, generator=generator)  # (b, s, t)
    if mode == "forward":
        model.eval()

        def forward() -> None:
            with torch.inference_mode():
                model(x)

        return forward
    target = 0.05 * torch.randn(batch, 1, 2, samples, generator=generator)  # (b, n, s, t)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=LEARNING_RATE)
    model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model(x, target=target).backward()
        if clip_norm:
            torch.nn.utils.clip_grad_norm_(params, clip_norm)
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-repo", type=Path, required=True,
                        help="work tree or extracted copy of ZFTurbo/Music-Source-Separation-Training")
    parser.add_argument("--mode", choices=["train", "forward"], default="forward")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch.set_num_threads")
    parser.add_argument("--batch", type=int, default=None, help="default: 2 for train, 1 for forward")
    parser.add_argument("--seconds", type=float, default=8.0, help="audio per example and channel")
    parser.add_argument("--attn-dropout", type=float, default=0.1)
    parser.add_argument("--ff-dropout", type=float, default=0.1)
    parser.add_argument("--clip-norm", type=float, default=5.0, help="global gradient norm clipping (0: none)")
    parser.add_argument("--checkpoint", action="store_true", help="use_torch_checkpoint=True (recompute in backward)")
    args = parser.parse_args()
    if not (args.reference_repo / "models" / "bs_roformer" / "bs_roformer.py").is_file():
        parser.error(f"{args.reference_repo}: no models/bs_roformer/bs_roformer.py (not the reference repository)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch = args.batch or (2 if args.mode == "train" else 1)
    samples = int(round(args.seconds * SAMPLE_RATE))
    model = load_model_class(args.reference_repo)(
        **{**PRESET, "use_torch_checkpoint": args.checkpoint}, attn_dropout=args.attn_dropout, ff_dropout=args.ff_dropout)
    call = make_call(model, args.mode, batch, samples, args.clip_norm)
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    print(json.dumps({"ready": "pytorch", "first_call_s": first, "torch": torch.__version__,
                      "params": sum(p.numel() for p in model.parameters() if p.requires_grad), "mode": args.mode,
                      "batch": batch, "samples": samples, "threads": torch.get_num_threads(),
                      "attn_dropout": args.attn_dropout, "ff_dropout": args.ff_dropout, "clip_norm": args.clip_norm,
                      "checkpoint": args.checkpoint, "peak_rss_mb": round(peak_rss_mb(), 1)}), flush=True)
    for line in sys.stdin:
        if not line.startswith("run"):
            break
        start = time.perf_counter()
        call()
        print(json.dumps({"seconds": time.perf_counter() - start, "peak_rss_mb": round(peak_rss_mb(), 1)}), flush=True)


if __name__ == "__main__":
    main()
