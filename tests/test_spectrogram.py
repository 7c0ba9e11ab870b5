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


REFLECT = SpectrogramConfig(16000, 512, 128, padding="reflect")


@pytest.mark.filterwarnings("ignore:n_fft=512 is too large")
@pytest.mark.parametrize("n_samples", [8000, 8001, 8000 + 127, 300])
def test_reflect_padding_matches_librosa(n_samples):
    """padding="reflect" is torch.stft's centring (librosa's pad_mode="reflect"), every frame, both ends."""
    x = np.random.default_rng(n_samples).uniform(-1, 1, n_samples).astype(np.float32)
    ours = stft(x, REFLECT).numpy()
    ref = librosa.stft(x.astype(np.float64), n_fft=REFLECT.n_fft, hop_length=REFLECT.hop, window="hann",
                       center=True, pad_mode="reflect").T
    assert ours.shape == ref.shape == (REFLECT.n_frames(n_samples), REFLECT.n_bins)
    np.testing.assert_allclose(ours, ref, atol=1e-4 * np.abs(ref).max())
    # the ends differ from zero padding, the middle does not
    zero = stft(x, SpectrogramConfig(16000, 512, 128)).numpy()
    assert np.abs(zero[0] - ours[0]).max() > 0.1 * np.abs(ref[0]).max()
    np.testing.assert_allclose(zero[2:-2], ours[2:-2], atol=1e-6 * np.abs(ref).max())


def test_reflect_padding_batched_round_trip():
    x = np.random.default_rng(3).uniform(-1, 1, (2, 3, 9000)).astype(np.float32)
    spec = stft(x, REFLECT)
    assert spec.shape == (2, 3, REFLECT.n_frames(9000), REFLECT.n_bins)
    y = istft(spec, REFLECT, 9000).numpy()
    assert np.max(np.abs(y - x)) < 1e-4


def test_reflect_padding_needs_more_than_half_a_window():
    with pytest.raises(ConfigError, match="reflect padding needs more than n_fft/2=256 samples, got 256"):
        stft(np.zeros(256, np.float32), REFLECT)


def test_padding_in_dicts():
    """Dicts written before the option (no "padding") load as zero padding; to_dict leaves the key out
    for zero padding, so old manifests, run configs and exports still compare equal."""
    old = {"sample_rate": 44100, "n_fft": 2048, "hop": 512}
    assert SpectrogramConfig.from_dict(old) == SpectrogramConfig(44100, 2048, 512, padding="zero")
    assert SpectrogramConfig(44100, 2048, 512).to_dict() == old
    assert REFLECT.to_dict() == {"sample_rate": 16000, "n_fft": 512, "hop": 128, "padding": "reflect"}
    assert SpectrogramConfig.from_dict(REFLECT.to_dict()) == REFLECT
    assert REFLECT != SpectrogramConfig(16000, 512, 128)
    with pytest.raises(ConfigError, match="padding must be one of zero, reflect, got 'constant'"):
        SpectrogramConfig.from_dict({**old, "padding": "constant"})
