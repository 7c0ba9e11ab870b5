"""Shared fixtures: small MUSDB18-HQ-layout folders synthesized in a temporary directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np
import pytest
import soundfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]


def checkout_env(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with this checkout first on PYTHONPATH, for a test's subprocess: a command started
    from any folder (datasets/*.py, python -m) runs the mss_tf under test, not another checkout
    installed in editable mode in the same environment."""
    return {**env, "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])}

STEM_FREQS = {"vocals": 440.0, "drums": 90.0, "bass": 55.0, "other": 660.0}


def write_tone_track(folder: Path, seconds: float, rate: int = 44100, seed: int = 0) -> dict[str, np.ndarray]:
    """A track of four distinct stereo stems (tones + noise) and their sum as the mixture."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    folder.mkdir(parents=True, exist_ok=True)
    stems = {}
    for name, freq in STEM_FREQS.items():
        wave = 0.2 * np.sin(2 * np.pi * freq * (1 + 0.1 * seed) * t) + 0.01 * rng.standard_normal(t.size)
        stems[name] = np.stack([wave, 0.8 * wave], axis=1).astype(np.float32)
        soundfile.write(folder / f"{name}.wav", stems[name], rate, subtype="FLOAT")
    mixture = sum(stems.values()).astype(np.float32)
    soundfile.write(folder / "mixture.wav", mixture, rate, subtype="FLOAT")
    return {"mixture": mixture, **stems}


def write_tone_musdb(root: Path, seconds: float, n_train: int = 3) -> Path:
    """MUSDB18-HQ layout of tone tracks: `n_train` train songs ("song 0", ...) and one test song."""
    for i in range(n_train):
        write_tone_track(root / "train" / f"song {i}", seconds, seed=i)
    write_tone_track(root / "test" / "test song", seconds, seed=7)
    return root


@pytest.fixture
def tone_musdb(tmp_path: Path) -> Path:
    """MUSDB18-HQ layout: 3 train tracks, 1 test track, 4 s each."""
    return write_tone_musdb(tmp_path / "musdb", 4.0)



# Files whose tests take minutes (the end-to-end module fixture trains a U-Net): under `pytest -n 2 --dist loadfile`
# a worker starts them first while the other works through the rest, instead of one worker running
# them alone at the end (xdist hands out files with the most tests first).
FIRST_FILES = ("tests/test_end_to_end.py",)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    from xdist.scheduler import LoadFileScheduling

    class LongFilesFirst(LoadFileScheduling):
        def _assign_work_unit(self, node: object) -> None:
            for path in reversed(FIRST_FILES):
                if path in self.workqueue:
                    self.workqueue.move_to_end(path, last=False)
            super()._assign_work_unit(node)

    return LongFilesFirst(config, log) if config.getvalue("dist") == "loadfile" else None
