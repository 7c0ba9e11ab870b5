import librosa
import numpy as np
import pytest

from mss_tf.audio.spectrogram import SpectrogramConfig, istft, stft
from mss_tf.errors import ConfigError

CONFIGS = [SpectrogramConfig(16000, 1024, 512), SpectrogramConfig(44100, 2048, 512)]


@pytest.mark.parametrize("config", CONFIGS, ids=["unet", "bsrnn"])
@pytest.mark.parametrize("n_samples", [16000, 16001, 44100 + 317, 1500])
def test_round_trip_within_1e4(config, n_samples):
    x = np.random.default_rng(n_samples).uniform(-1, 1, n_samples).astype(np.float32)
    spec = stft(x, config)
    assert spec.shape == (config.n_frames(n_samples), config.n_bins)
    y = istft(spec, config, n_samples).numpy()
    assert y.shape == x.shape
    assert np.max(np.abs(y - x)) < 1e-4


def test_batched_round_trip():
    config = CONFIGS[0]
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 9000)).astype(np.float32)
    y = istft(stft(x, config), config, 9000).numpy()
    assert np.max(np.abs(y - x)) < 1e-4


def test_stft_matches_librosa():
    config = CONFIGS[0]
    x = np.random.default_rng(2).uniform(-1, 1, 20000).astype(np.float32)
    ours = stft(x, config).numpy()
    ref = librosa.stft(x, n_fft=config.n_fft, hop_length=config.hop, window="hann", center=True, pad_mode="constant").T
    n = min(ours.shape[0], ref.shape[0])
    np.testing.assert_allclose(ours[:n], ref[:n], atol=2e-3)


def test_config_validation_and_mismatch():
    with pytest.raises(ConfigError):
        SpectrogramConfig(16000, 1024, 0)
    with pytest.raises(ConfigError):
        SpectrogramConfig(16000, 1024, 1000)
    assert SpectrogramConfig.from_dict(CONFIGS[1].to_dict()) == CONFIGS[1]
