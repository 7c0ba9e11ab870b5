"""Real format, real size (slow): the published configs of ZFTurbo/Music-Source-Separation-Training
(viperx's BS-RoFormer and Mel-Band RoFormer, the four-stem Mel-Band RoFormer of its MUSDB18
configs) built by the reference code with seeded random weights, saved with torch.save as the
public .ckpt files are, converted by `python -m mss_tf.convert --torch-python` (torch only in
that other Python), used by separate.py on 8 s of synthesized stereo audio, and compared with the
reference's forward pass on the same audio (one call, no chunking on either side).

Needs a Python with torch and the reference's imports (MSS_TORCH_PYTHON, default .venv-torch:
`make torch-reference`, then einops, beartype, rotary-embedding-torch, librosa, PyYAML) and the
reference code: MSS_REFERENCE_REPO (a work tree or extracted copy), else a git mirror of it at
MSS_REFERENCE_MIRROR (default /work/.mirror/ZFTurbo+Music-Source-Separation-Training/repo), of
which the fixtures' commit is extracted. Each case writes 0.6-3.3 GB of checkpoints into its
temporary folder and removes them when done. Prints the measured error and times.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from mss_tf.inference import Separator
from mss_tf.machine import machine, machine_line
from tests.conftest import REPO, checkout_env
from tests.test_convert import TORCH_PYTHON

pytestmark = pytest.mark.slow

REFERENCE_COMMIT = "ccc011abf7f89dd7922bb2888d48493b575c0289"  # the fixtures' (tests/data/roformer/README.md)
MIRROR = Path(os.environ.get("MSS_REFERENCE_MIRROR") or "/work/.mirror/ZFTurbo+Music-Source-Separation-Training/repo")
CONFIGS = {
    "viperx-bs": "configs/viperx/model_bs_roformer_ep_317_sdr_12.9755.yaml",
    "viperx-mel": "configs/viperx/model_mel_band_roformer_ep_3005_sdr_11.4360.yaml",
    "musdb18-mel-4-stems": "configs/config_musdb18_mel_band_roformer_all_stems.yaml",
}
SECONDS, RATE = 8.0, 44100
THREADS = 2  # torch and TensorFlow alike


@pytest.fixture(scope="module")
def reference_repo(tmp_path_factory) -> Path:
    """The reference code: MSS_REFERENCE_REPO, or the fixtures' commit extracted from the mirror."""
    if not TORCH_PYTHON.is_file():
        pytest.skip(f"no Python with torch at {TORCH_PYTHON} (make torch-reference, or set MSS_TORCH_PYTHON)")
    given = os.environ.get("MSS_REFERENCE_REPO")
    if given:
        return Path(given)
    if not MIRROR.exists():
        pytest.skip(f"no reference code: set MSS_REFERENCE_REPO, or MSS_REFERENCE_MIRROR to a git mirror of "
                    f"ZFTurbo/Music-Source-Separation-Training (none at {MIRROR})")
    out = tmp_path_factory.mktemp("zfturbo")
    archive = subprocess.run(["git", "-C", str(MIRROR), "archive", REFERENCE_COMMIT, "models/bs_roformer", "configs"],
                             capture_output=True)
    if archive.returncode != 0:
        pytest.skip(f"{MIRROR}: no commit {REFERENCE_COMMIT} ({archive.stderr.decode()[-300:]})")
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive.stdout, check=True)
    return out


def stereo_mix(seconds: float, rate: int) -> np.ndarray:
    """(samples, 2): voice-like vibrato tone, bass, a drum-like click train and noise, seeded."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    voice = 0.2 * np.sin(2 * np.pi * 330 * t + 3 * np.sin(2 * np.pi * 5 * t))
    bass = 0.3 * np.sin(2 * np.pi * 55 * t)
    clicks = 0.5 * np.exp(-40 * (t % 0.5)) * rng.standard_normal(t.size)
    left = voice + bass + 0.7 * clicks + 0.01 * rng.standard_normal(t.size)
    right = 0.6 * voice + bass + clicks + 0.01 * rng.standard_normal(t.size)
    return np.stack([left, right], axis=1).astype(np.float32)


def run(command: list, **kwargs) -> tuple[subprocess.CompletedProcess, float]:
    begin = time.perf_counter()
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, time.perf_counter() - begin


@pytest.mark.parametrize("name", list(CONFIGS))
def test_published_size_checkpoint_converts_and_separates_as_the_reference(name, reference_repo, tmp_path):
    config = reference_repo / CONFIGS[name]
    mix = stereo_mix(SECONDS, RATE)
    soundfile.write(tmp_path / "mix.wav", mix, RATE, subtype="FLOAT")
    np.save(tmp_path / "mix.npy", mix.T.copy())
    env = checkout_env({**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        result, _ = run([TORCH_PYTHON, REPO / "benchmarks" / "roformer_reference.py", "--reference-repo", reference_repo,
                         "--paper", config, "--checkpoint", tmp_path / "model.ckpt", "--audio", tmp_path / "mix.npy",
                         "--output", tmp_path / "reference.npy", "--threads", THREADS], timeout=3600)
        stats = json.loads(result.stdout.strip().splitlines()[-1])
        _, convert_seconds = run([sys.executable, "-m", "mss_tf.convert", tmp_path / "model.ckpt", "--config", config,
                                  "--out", tmp_path / "run", "--torch-python", TORCH_PYTHON], env=env, timeout=3600)
        (tmp_path / "model.ckpt").unlink()
        _, separate_seconds = run([sys.executable, REPO / "separate.py", tmp_path / "mix.wav", "--model", tmp_path / "run",
                                   "--out", tmp_path / "stems", "--threads", THREADS, "--quiet"], env=env, timeout=3600)
        targets = json.loads((tmp_path / "run" / "config.json").read_text())["targets"]
        reference = np.load(tmp_path / "reference.npy")  # (stems, channels, samples)
        ours = np.stack([soundfile.read(tmp_path / "stems" / "mix" / f"{t}.wav", dtype="float32")[0].T for t in targets])
        assert ours.shape == (len(targets), 2, mix.shape[0]) and reference.shape[:2] == ours.shape[:2]
        # (Mel without match_input_audio_length stops at hop * (frames - 1): all 8 s at hop 441)
        error = float(np.abs(ours[..., : reference.shape[-1]] - reference).max() / np.abs(reference).max())
        separator = Separator.from_run(tmp_path / "run")  # this process: TF_NUM_INTRAOP_THREADS threads
        separator.separate_model_rate(mix.T)  # traced
        begin = time.perf_counter()
        separator.separate_model_rate(mix.T)
        call_seconds = time.perf_counter() - begin
        print(f"\n{machine_line(machine())}\n{name}: {stats['model_class']} {stats['parameters'] / 1e6:.1f} M parameters, "
              f"{stats['checkpoint_bytes'] / 1e6:.0f} MB .ckpt, {len(targets)} stem(s); max |Keras - PyTorch| / "
              f"max |PyTorch| = {error:.2e} on {SECONDS:.0f} s of stereo at {RATE} Hz; conversion {convert_seconds:.1f} s "
              f"(python -m mss_tf.convert --torch-python, wall); separate.py {separate_seconds:.1f} s wall "
              f"(start-up, loading and separation, {THREADS} threads); one separation call {call_seconds:.1f} s "
              f"({os.environ.get('TF_NUM_INTRAOP_THREADS', 'default')} TensorFlow threads), reference forward "
              f"{stats['forward_seconds']:.1f} s ({stats['torch_threads']} torch threads)")
        assert error < 1e-4
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)  # gigabytes of checkpoints
