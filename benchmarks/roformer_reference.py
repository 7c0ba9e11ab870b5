"""Reference fixtures for the RoFormer checkpoint converter: the real PyTorch BS-RoFormer and
Mel-Band RoFormer of ZFTurbo/Music-Source-Separation-Training (models/bs_roformer/, the code the
public checkpoints were trained with), built small with seeded random weights, run on a short
input, and written as torch-free files into tests/data/roformer/ (see its README.md).

Run with a Python that has torch, einops, beartype, rotary-embedding-torch, librosa and PyYAML
(the reference's own imports), on a work tree or extracted copy of that repository; nothing of
it is imported before `--reference-repo` names it, and nothing of mss_tf is used:

    .venv-torch/bin/python benchmarks/roformer_reference.py --reference-repo PATH
        [--reference-commit SHA] [--out tests/data/roformer] [--only NAME ...]

Per configuration, into OUT/NAME/:
  state_dict.npz   the model's state dict, keys exactly torch's `state_dict()` keys, float32
                   (the gains are drawn around 1 and the rotary frequencies left as built, so a
                   gain mapped to the wrong place cannot go unnoticed)
  config.yaml      the configuration in the format of the repository's configs/ (`audio`,
                   `model` with `!!python/tuple` tags, `training`, `inference`)
  io.npz           `input` (1, channels, samples); `output` (1, stems, channels, samples') as
                   the model returns it in eval mode (Mel with one stem returns (1, channels,
                   samples'): the stem axis is added here); `band_split` (1, frames, bands, dim),
                   the band split's output; `features` (1, frames, bands, dim), the mask
                   estimators' input; `masks` (1, stems, frames, values), the mask estimators'
                   outputs (per band, [bin][channel][real, imag], bands in order, before Mel's
                   averaging of overlapping bands); of these three, the first DEBUG_FRAMES frames
  meta.json        the model class and arguments, the output length rule, versions, and the
                   largest difference between flash_attn=True and flash_attn=False outputs

And OUT/stft.npz: torch.stft / torch.istft with the models' settings (centre, reflect padding,
periodic Hann window of n_fft, not normalized), for the suite's STFT to be checked against.

With `--paper CONFIG.yaml` (a config of the repository, e.g. configs/viperx/*.yaml), it writes no
fixtures but a checkpoint at the published size, for tests/test_convert_paper.py:

    .venv-torch/bin/python benchmarks/roformer_reference.py --reference-repo PATH --paper CONFIG.yaml
        --checkpoint OUT.ckpt [--audio IN.npy --output OUT.npy] [--seed K] [--threads N]

builds the reference model of CONFIG as the repository's get_model_from_config does (its class
with the config's `model:` section), with torch's initialisation and then, as the fixtures, every
gain drawn around 1 and every bias redrawn (seeded); `torch.save`s its state dict to OUT.ckpt
(the format of the published .ckpt files); and with `--audio` (float32 (channels, samples)) writes
its eval-mode output on that audio, in one forward pass, as OUT.npy (stems, channels, samples).
One JSON line on stdout: parameters, checkpoint bytes, seconds to build, save and run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

SAMPLE_RATE, N_FFT, HOP = 16000, 256, 64
N_SAMPLES = 4000  # 0.25 s: 63 frames
DEBUG_FRAMES = 4  # frames of the intermediate tensors kept in io.npz (to find where a port goes wrong)
BS_BANDS_A = (4,) * 4 + (8,) * 4 + (16,) * 3 + (33,)  # 12 bands over 129 bins
BS_BANDS_B = (2,) * 8 + (4,) * 8 + (8,) * 4 + (16,) * 2 + (17,)  # 23 bands over 129 bins

# Every axis the converter must get right: BS and Mel, mono and stereo, one and four stems, the
# mask estimator's depth 1 and 2 (BS: that many Linear layers; Mel: one more), dim != heads *
# dim_head, several time/frequency transformer depths, Mel's output length with and without
# match_input_audio_length on an input that is not a whole number of hops.
CONFIGS = {
    "bs_mono_1": dict(
        model_type="bs_roformer", seed=1, n_samples=N_SAMPLES,
        instruments=["vocals", "other"], target_instrument="vocals",
        model=dict(dim=16, depth=2, stereo=False, num_stems=1, time_transformer_depth=1, freq_transformer_depth=1,
                   linear_transformer_depth=0, freqs_per_bands=BS_BANDS_A, dim_head=8, heads=2,
                   mask_estimator_depth=2, mlp_expansion_factor=4),
    ),
    "bs_stereo_4": dict(
        model_type="bs_roformer", seed=2, n_samples=N_SAMPLES + 21,
        instruments=["drums", "bass", "other", "vocals"], target_instrument=None,
        model=dict(dim=16, depth=1, stereo=True, num_stems=4, time_transformer_depth=2, freq_transformer_depth=1,
                   linear_transformer_depth=0, freqs_per_bands=BS_BANDS_B, dim_head=8, heads=4,
                   mask_estimator_depth=1, mlp_expansion_factor=2),
    ),
    "mel_mono_4": dict(
        model_type="mel_band_roformer", seed=3, n_samples=N_SAMPLES + 37,
        instruments=["vocals", "bass", "drums", "other"], target_instrument=None,
        model=dict(dim=16, depth=2, stereo=False, num_stems=4, time_transformer_depth=1, freq_transformer_depth=1,
                   linear_transformer_depth=0, num_bands=12, sample_rate=SAMPLE_RATE, dim_head=8, heads=2,
                   mask_estimator_depth=1, mlp_expansion_factor=1, match_input_audio_length=False),
    ),
    "mel_stereo_1": dict(
        model_type="mel_band_roformer", seed=4, n_samples=N_SAMPLES + 37,
        instruments=["vocals", "other"], target_instrument="vocals",
        model=dict(dim=16, depth=1, stereo=True, num_stems=1, time_transformer_depth=1, freq_transformer_depth=2,
                   linear_transformer_depth=0, num_bands=8, sample_rate=SAMPLE_RATE, dim_head=8, heads=3,
                   mask_estimator_depth=2, mlp_expansion_factor=1, match_input_audio_length=True),
    ),
}
COMMON = dict(attn_dropout=0.1, ff_dropout=0.1, dim_freqs_in=N_FFT // 2 + 1, stft_n_fft=N_FFT, stft_hop_length=HOP,
              stft_win_length=N_FFT, stft_normalized=False, zero_dc=True,
              multi_stft_resolution_loss_weight=1.0, multi_stft_resolutions_window_sizes=(4096, 2048, 1024, 512, 256),
              multi_stft_hop_size=147, multi_stft_normalized=False, use_torch_checkpoint=False, skip_connection=False)


def model_class(model_type: str):  # noqa: ANN201
    from models.bs_roformer import BSRoformer, MelBandRoformer

    return {"bs_roformer": BSRoformer, "mel_band_roformer": MelBandRoformer}[model_type]


def build(spec: dict, flash_attn: bool) -> torch.nn.Module:
    """The reference model of `spec` in eval mode, weights drawn from `spec["seed"]`: torch's own
    initialisation, every RMSNorm gain then drawn around 1 and every bias redrawn (so that no
    weight is a constant a wrong mapping could not disturb), and every weight rounded to
    bfloat16's precision (kept float32: the fixture's state dict then compresses to about half;
    the model computes in float32 as ever). The rotary frequencies are left as built."""
    torch.manual_seed(spec["seed"])
    model = model_class(spec["model_type"])(**spec["model"], **COMMON, flash_attn=flash_attn)
    generator = torch.Generator().manual_seed(1000 + spec["seed"])
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("rotary_embed.freqs"):
                continue
            if name.endswith(".gamma"):
                parameter.copy_(1 + 0.3 * torch.randn(parameter.shape, generator=generator))
            elif name.endswith(".bias"):
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
            parameter.copy_(parameter.to(torch.bfloat16).float())
    return model.eval()


def waveform(spec: dict) -> np.ndarray:
    """(1, channels, samples): two tones and noise per channel, seeded."""
    rng = np.random.default_rng(spec["seed"])
    channels = 2 if spec["model"]["stereo"] else 1
    t = np.arange(spec["n_samples"]) / SAMPLE_RATE
    rows = [0.3 * np.sin(2 * np.pi * rng.uniform(100, 3000) * t) + 0.2 * np.sin(2 * np.pi * rng.uniform(100, 6000) * t)
            + 0.1 * rng.standard_normal(t.size) for _ in range(channels)]
    return np.stack(rows)[np.newaxis].astype(np.float32)


def run(model: torch.nn.Module, x: np.ndarray, num_stems: int) -> dict[str, np.ndarray]:
    """The model's output (1, stems, channels, samples') and the intermediate tensors it passes."""
    captured: dict[str, list] = {"band_split": [], "features": [], "masks": []}

    def keep_output(module, inputs, output) -> None:  # noqa: ANN001
        captured["band_split"].append(output)

    def keep_both(module, inputs, output) -> None:  # noqa: ANN001
        captured["features"].append(inputs[0])
        captured["masks"].append(output)

    hooks = [model.band_split.register_forward_hook(keep_output)]
    hooks += [estimator.register_forward_hook(keep_both) for estimator in model.mask_estimators]
    try:
        with torch.no_grad():
            output = model(torch.from_numpy(x))
    finally:
        for hook in hooks:
            hook.remove()
    if output.ndim == 3:  # Mel with one stem: (b, s, t)
        output = output[:, None]
    assert output.shape[:3] == (1, num_stems, x.shape[1]), output.shape
    return {
        "input": x,
        "output": output.numpy(),
        "band_split": captured["band_split"][0][:, :DEBUG_FRAMES].numpy(),
        "features": captured["features"][0][:, :DEBUG_FRAMES].numpy(),
        "masks": torch.stack(captured["masks"], dim=1)[:, :, :DEBUG_FRAMES].numpy(),
    }


def config_yaml(spec: dict) -> str:
    """The configuration as the repository's configs/ write it (PyYAML's default dumper writes
    tuples with the `!!python/tuple` tag, as those files have them)."""
    channels = 2 if spec["model"]["stereo"] else 1
    model = {**spec["model"], **COMMON, "flash_attn": True}
    document = {
        "audio": {"chunk_size": spec["n_samples"], "dim_f": N_FFT // 2, "dim_t": spec["n_samples"] // HOP + 1,
                  "hop_length": HOP, "n_fft": N_FFT, "num_channels": channels, "sample_rate": SAMPLE_RATE,
                  "min_mean_abs": 0.0},
        "model": model,
        "training": {"batch_size": 1, "gradient_accumulation_steps": 1, "grad_clip": 0,
                     "instruments": spec["instruments"], "lr": 5.0e-05, "patience": 2, "reduce_factor": 0.95,
                     "target_instrument": spec["target_instrument"], "num_epochs": 1, "num_steps": 1, "q": 0.95,
                     "coarse_loss_clip": True, "ema_momentum": 0.999, "optimizer": "adam", "other_fix": False,
                     "use_amp": True},
        "inference": {"batch_size": 1, "dim_t": spec["n_samples"] // HOP + 1, "num_overlap": 2},
    }
    return yaml.dump(document, sort_keys=False, default_flow_style=False)


def stft_fixture() -> dict[str, np.ndarray]:
    """torch.stft / torch.istft as the models call them, on a signal and on a random
    spectrogram (not the STFT of any signal, so the istft's window normalisation shows)."""
    rng = np.random.default_rng(0)
    wave = rng.uniform(-1, 1, (1, 1000 + 21)).astype(np.float32)
    window = torch.hann_window(N_FFT)
    kwargs = dict(n_fft=N_FFT, hop_length=HOP, win_length=N_FFT, normalized=False, window=window)
    spec = torch.stft(torch.from_numpy(wave), **kwargs, return_complex=True)  # (1, F, T)
    frames = spec.shape[-1]
    noise = (rng.standard_normal((1, N_FFT // 2 + 1, frames)) + 1j * rng.standard_normal((1, N_FFT // 2 + 1, frames)))
    noise = torch.from_numpy(noise.astype(np.complex64))
    return {
        "wave": wave,
        "stft": spec.numpy(),  # (1, bins, frames) complex64
        "spectrogram": noise.numpy(),  # (1, bins, frames) complex64
        "istft_length": torch.istft(noise, **kwargs, length=wave.shape[-1]).numpy(),  # (1, samples)
        "istft_none": torch.istft(noise, **kwargs).numpy(),  # (1, hop * (frames - 1))
        "n_fft": np.int64(N_FFT), "hop": np.int64(HOP),
    }


def published_model(config_path: Path, seed: int) -> tuple[torch.nn.Module, dict]:
    """The reference model of a published config (`model_type` from training.model_type, else
    num_bands -> Mel), weights seeded as `build` draws them but not rounded; eval mode."""
    with open(config_path) as handle:
        config = yaml.load(handle, Loader=yaml.FullLoader)  # as the repository loads them (!!python/tuple)
    model_type = (config.get("training") or {}).get("model_type") or (
        "mel_band_roformer" if "num_bands" in config["model"] else "bs_roformer")
    torch.manual_seed(seed)
    model = model_class(model_type)(**config["model"])
    generator = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(".gamma"):
                parameter.copy_(1 + 0.3 * torch.randn(parameter.shape, generator=generator))
            elif name.endswith(".bias"):
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model.eval(), config


def paper(args: argparse.Namespace) -> None:
    """--paper: a published-size checkpoint and, with --audio, the reference's output on it."""
    import time

    started = time.perf_counter()
    model, config = published_model(args.paper, args.seed)
    built = time.perf_counter()
    torch.save(model.state_dict(), args.checkpoint)
    saved = time.perf_counter()
    stats = {"model_class": type(model).__name__, "parameters": int(sum(p.numel() for n, p in model.named_parameters()
                                                                         if not n.endswith("rotary_embed.freqs"))),
             "checkpoint_bytes": args.checkpoint.stat().st_size, "build_seconds": built - started,
             "save_seconds": saved - built, "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    if args.audio is not None:
        audio = np.load(args.audio).astype(np.float32)  # (channels, samples)
        with torch.no_grad():
            begin = time.perf_counter()
            output = model(torch.from_numpy(audio)[None])
            stats["forward_seconds"] = time.perf_counter() - begin
        output = output.numpy()[0]
        if output.ndim == 2:  # one stem: (channels, samples)
            output = output[None]
        np.save(args.output, output)
        stats["output_shape"] = list(output.shape)
    print(json.dumps(stats))


def reference_commit(repo: Path, given: str | None) -> str:
    if given:
        return given
    try:
        return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (pass --reference-commit)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference-repo", type=Path, required=True,
                        help="work tree or extracted copy of ZFTurbo/Music-Source-Separation-Training")
    parser.add_argument("--reference-commit", help="the commit that copy is of (read with git when it is a work tree)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "tests/data/roformer")
    parser.add_argument("--only", nargs="*", choices=sorted(CONFIGS), help="configurations to write (default all)")
    parser.add_argument("--paper", type=Path, metavar="CONFIG.yaml",
                        help="instead of the fixtures: a checkpoint of this published config (see the docstring)")
    parser.add_argument("--checkpoint", type=Path, help="with --paper: where to torch.save the state dict")
    parser.add_argument("--audio", type=Path, help="with --paper: float32 (channels, samples) .npy to run the model on")
    parser.add_argument("--output", type=Path, help="with --audio: the model's output, (stems, channels, samples) .npy")
    parser.add_argument("--seed", type=int, default=0, help="with --paper: the weights' seed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    if args.paper is not None and (args.checkpoint is None or (args.audio is None) != (args.output is None)):
        parser.error("--paper needs --checkpoint, and --audio with --output")
    if not (args.reference_repo / "models" / "bs_roformer" / "bs_roformer.py").is_file():
        parser.error(f"{args.reference_repo}: no models/bs_roformer/bs_roformer.py (not the reference repository)")
    # the reference's `models` is a namespace package: this folder's models.py would shadow it
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [str(args.reference_repo.resolve())] + [p for p in sys.path if Path(p or ".").resolve() != Path(here)]
    torch.set_num_threads(args.threads)
    if args.paper is not None:
        paper(args)
        return 0
    commit = reference_commit(args.reference_repo, args.reference_commit)
    versions = {"torch": torch.__version__, "numpy": np.__version__, "reference_commit": commit}
    for package in ("einops", "rotary_embedding_torch", "librosa", "beartype"):
        from importlib.metadata import version

        versions[package] = version(package.replace("_", "-"))

    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / "stft.npz", **stft_fixture())
    for name in args.only or sorted(CONFIGS):
        spec = CONFIGS[name]
        folder = args.out / name
        folder.mkdir(exist_ok=True)
        model = build(spec, flash_attn=True)
        x = waveform(spec)
        arrays = run(model, x, spec["model"]["num_stems"])
        plain = build(spec, flash_attn=False)
        plain.load_state_dict(model.state_dict())
        flash_vs_plain = float(np.abs(run(plain, x, spec["model"]["num_stems"])["output"] - arrays["output"]).max())
        peak = float(np.abs(arrays["output"]).max())
        assert flash_vs_plain <= 1e-5 * peak, f"{name}: flash_attn True and False differ by {flash_vs_plain}"
        state = {key: value.detach().numpy() for key, value in model.state_dict().items()}
        np.savez_compressed(folder / "state_dict.npz", **state)
        np.savez_compressed(folder / "io.npz", **arrays)
        (folder / "config.yaml").write_text(config_yaml(spec))
        match = spec["model"].get("match_input_audio_length", spec["model_type"] == "bs_roformer")
        meta = {
            "model_class": type(model).__name__, "model_type": spec["model_type"],
            "arguments": {**spec["model"], **COMMON, "flash_attn": True}, "seed": spec["seed"],
            "output_samples": int(arrays["output"].shape[-1]),
            "output_length_rule": "input length" if match else "hop * (frames - 1), frames = samples // hop + 1",
            "flash_attn_true_vs_false_max_abs": flash_vs_plain, "output_max_abs": peak,
            "parameters": int(sum(v.size for k, v in state.items() if not k.endswith("rotary_embed.freqs"))),
            "versions": versions,
        }
        (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        size = sum(f.stat().st_size for f in folder.iterdir())
        print(f"{name}: {meta['parameters']} parameters, output {arrays['output'].shape}, "
              f"flash vs plain {flash_vs_plain:.2e} (peak {peak:.3f}), {size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
