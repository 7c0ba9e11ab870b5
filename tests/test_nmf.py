import json

import numpy as np
import pytest
import tensorflow as tf

from mss_tf import TARGETS
from mss_tf.audio.spectrogram import SpectrogramConfig
from mss_tf.data.shards import ShardWriter
from mss_tf.errors import CheckpointError, ConfigError, ShardError
from mss_tf.inference import Separator
from mss_tf.models import nmf
from mss_tf.models.nmf import NMFSeparator

STFT = SpectrogramConfig(8000, 256, 64)  # 129 bins: the synthetic spectra below
BINS = STFT.n_bins
TEMPLATES = np.random.default_rng(1234).gamma(0.3, 1.0, size=(len(TARGETS), BINS, 4))  # 4 spectra per source


def synthetic_example(frames: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Four sources = fixed non-negative spectral templates x sparse random activations, random phases."""
    stems = []
    for templates in TEMPLATES:
        activations = rng.gamma(0.5, 1.0, size=(frames, templates.shape[1]))
        activations *= rng.random(activations.shape) < 0.5
        magnitude = activations @ templates.T  # (frames, bins)
        phase = rng.uniform(0.0, 2 * np.pi, size=magnitude.shape)
        stems.append(np.stack([magnitude * np.cos(phase), magnitude * np.sin(phase)], axis=-1))
    stems = np.stack(stems).astype(np.float32)  # (4, frames, bins, 2)
    return {"stems": stems, "mixture": stems.sum(axis=0)}


def train_examples(n: int = 4, frames: int = 150, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [synthetic_example(frames, rng) for _ in range(n)]


def sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference**2) / np.sum((reference - estimate) ** 2)))


@pytest.fixture(scope="module")
def fitted() -> NMFSeparator:
    model = NMFSeparator(rank=6, fit_iterations=60, separate_iterations=60)
    model.fit(train_examples(), stft=STFT.to_dict())
    return model


@pytest.fixture(scope="module")
def test_example() -> dict[str, np.ndarray]:
    return synthetic_example(120, np.random.default_rng(99))


def test_beta_divergence_matches_numpy_formulas():
    rng = np.random.default_rng(0)
    v, y = rng.random((5, 7)) + 0.1, rng.random((5, 7)) + 0.1
    expected = {
        0.0: np.sum(v / y - np.log(v / y) - 1),
        1.0: np.sum(v * np.log(v / y) - v + y),
        2.0: 0.5 * np.sum((v - y) ** 2),
        0.5: np.sum(v**0.5 + (0.5 - 1) * y**0.5 - 0.5 * v * y ** (0.5 - 1)) / (0.5 * (0.5 - 1)),
    }
    for beta, value in expected.items():
        divergence = nmf.beta_divergence(tf.constant(v), tf.constant(y), beta)
        assert float(divergence) == pytest.approx(value, rel=1e-10)
    assert [nmf.resolve_beta(name) for name in ("KL", "euclidean", "is", 1)] == [1.0, 2.0, 0.0, 1.0]
    assert [nmf.mu_exponent(b) for b in (0.0, 1.0, 1.5, 2.0, 3.0)] == [0.5, 1.0, 1.0, 1.0, 0.5]


@pytest.mark.parametrize("beta", [1.0, 2.0, 0.0, 0.5])
def test_fit_loss_decreases_monotonically(beta):
    model = NMFSeparator(rank=4, beta=beta, fit_iterations=30)
    history = model.fit(train_examples(n=1, frames=100))
    assert list(history) == list(TARGETS) and history == model.fit_info["loss_history"]
    for source, losses in history.items():
        losses = np.array(losses)
        assert len(losses) == 31 and np.all(np.isfinite(losses))  # initial loss + one per iteration
        assert np.all(np.diff(losses) <= 1e-12 * losses[0]), source
        assert losses[-1] < 0.8 * losses[0], source


@pytest.mark.parametrize("beta", [1.0, 0.0, 2.0])
def test_activation_updates_do_not_increase_the_divergence(beta):
    rng = np.random.default_rng(3)
    w = tf.constant(rng.random((BINS, 8)))
    v = tf.constant(rng.random((2, 30, BINS)) + 1e-3)
    h = tf.constant(rng.random((2, 30, 8)))
    losses = []
    for _ in range(20):
        losses.append(float(nmf.beta_divergence(v, nmf.reconstruct(h, w) + 1e-10, beta)))
        h = nmf.update_activations(v, w, h, beta, 1e-10)
    assert np.all(np.diff(losses) <= 1e-12 * losses[0])


def test_dictionaries_non_negative_unit_norm_and_fixed_at_test_time(fitted, test_example):
    dictionaries = fitted.dictionaries
    assert list(dictionaries) == list(TARGETS)
    assert all(d.shape == (BINS, 6) for d in dictionaries.values())
    full = fitted.dictionary
    assert full.shape == (BINS, 24) and np.all(full >= 0)
    np.testing.assert_allclose(full.sum(axis=0), 1.0, rtol=1e-5)
    assert fitted.count_params() == BINS * 24
    fitted(test_example["mixture"][None])
    fitted.separate_spectrogram(tf.constant(test_example["mixture"][None]))
    np.testing.assert_array_equal(fitted.dictionary, full)


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_masks_sum_to_one_and_estimates_sum_to_the_mixture(fitted, test_example, power):
    model = fitted.with_config(mask_power=power)
    np.testing.assert_array_equal(model.dictionary, fitted.dictionary)
    mixture = np.stack([test_example["mixture"], np.zeros_like(test_example["mixture"])])  # one silent item
    out = model(mixture)
    assert isinstance(out, tf.Tensor) and out.dtype == tf.float32 and out.shape == (2, 4, 120, BINS, 2)
    out = out.numpy()
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out.sum(axis=1), mixture, atol=1e-4 * np.abs(mixture).max())
    assert np.all(out[1] == 0)  # silence in, silence out
    # each estimate is a real, non-negative ratio of the mixture: the mixture phase is kept
    mix = mixture[0, ..., 0] + 1j * mixture[0, ..., 1]
    loud = np.abs(mix) > 1e-3 * np.abs(mix).max()
    for estimate in out[0]:
        ratio = (estimate[..., 0] + 1j * estimate[..., 1])[loud] / mix[loud]
        assert np.allclose(ratio.imag, 0, atol=1e-4) and np.all(ratio.real > -1e-5)


def test_separation_beats_the_mixture_baseline(fitted, test_example):
    out = fitted(test_example["mixture"][None]).numpy()[0]
    for i, target in enumerate(TARGETS):
        reference = test_example["stems"][i]
        baseline = sdr(reference, test_example["mixture"])
        assert sdr(reference, out[i]) - baseline > 6.0, target


def test_hidden_rest_source_when_targets_are_a_subset(test_example):
    model = NMFSeparator(targets=["vocals"], rank={"vocals": 6, "rest": 12}, fit_iterations=40)
    model.fit(train_examples(n=2))
    assert model.sources == ["vocals", "rest"] and model.dictionary.shape == (BINS, 18)
    out = model(test_example["mixture"][None]).numpy()
    assert out.shape == (1, 1, 120, BINS, 2)
    reference = test_example["stems"][0]
    assert sdr(reference, out[0, 0]) - sdr(reference, test_example["mixture"]) > 6.0


def test_save_load_round_trip(fitted, test_example, tmp_path):
    path = fitted.save(tmp_path / "model.npz")
    assert path == tmp_path / "model.npz" and sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]
    loaded = NMFSeparator.load(path)
    assert loaded.get_config() == fitted.get_config()
    assert loaded.fit_info["stft"] == STFT.to_dict()
    np.testing.assert_array_equal(loaded.dictionary, fitted.dictionary)
    mixture = test_example["mixture"][None]
    np.testing.assert_array_equal(loaded(mixture).numpy(), fitted(mixture).numpy())
    # a folder means <folder>/nmf.npz
    assert fitted.save(tmp_path) == tmp_path / nmf.NMF_FILE
    np.testing.assert_array_equal(NMFSeparator.load(tmp_path).dictionary, fitted.dictionary)
    json.dumps(loaded.get_config())


def test_works_inside_tf_function(fitted, test_example):
    mixture = tf.constant(test_example["mixture"][None])
    signature = [tf.TensorSpec([None, None, BINS, 2], tf.float32)]
    graph = tf.function(lambda x: fitted(x, training=False), input_signature=signature)
    np.testing.assert_allclose(graph(mixture).numpy(), fitted(mixture).numpy(), rtol=1e-5, atol=1e-6)
    assert graph(tf.concat([mixture, mixture], 0)[:, :50]).shape == (2, 4, 50, BINS, 2)


def test_through_the_separator(fitted):
    rng = np.random.default_rng(5)
    waves = (0.1 * rng.standard_normal((2, int(2.5 * STFT.sample_rate)))).astype(np.float32)  # stereo, 2.5 s
    separator = Separator(fitted, STFT, fitted.targets, chunk_seconds=1.0, overlap_seconds=0.25)
    assert separator.name == "nmf"
    out = separator.separate_model_rate(waves)
    assert out.shape == (4, 2, waves.shape[1]) and np.all(np.isfinite(out))
    np.testing.assert_allclose(out.sum(axis=0), waves, atol=1e-4)  # masks sum to 1, so do the stems


def test_training_run_fits_from_the_shard_examples(tmp_path):
    """train.py's NMF path streams the shards' examples into `fit`: the same dictionaries as a fit
    on those examples in memory, and shards of another STFT are refused."""
    from mss_tf.config import TrainConfig
    from mss_tf.training.run import train_run

    examples = train_examples(n=3, frames=100, seed=5)
    with ShardWriter(tmp_path / "shards" / "train", STFT, dtype="float32") as writer:
        for i, example in enumerate(examples):
            stems = example["stems"][..., 0] + 1j * example["stems"][..., 1]
            writer.add(stems, stems.sum(axis=0), f"track {i}", 0)
        writer.close()
    kwargs = {"targets": ["vocals", "bass"], "rank": 4, "fit_iterations": 20, "separate_iterations": 5, "max_frames": 200}
    config = TrainConfig(model="nmf", model_kwargs=dict(kwargs), stft=STFT.to_dict())
    train_run(config, tmp_path / "run", None, tmp_path / "shards", progress=False, echo=lambda line: None)
    trained = NMFSeparator.load(tmp_path / "run")
    assert trained.fit_info["stft"] == STFT.to_dict() and trained.fit_info["examples"] == 3
    frames = trained.fit_info["frames"]["vocals"]  # non-silent frames streamed, of 300
    assert frames["used"] == 200 and 250 < frames["active"] <= 300
    in_memory = NMFSeparator(**kwargs)
    in_memory.fit(examples, stft=STFT.to_dict())
    np.testing.assert_array_equal(trained.dictionary, in_memory.dictionary)
    assert trained.fit_info == json.loads(json.dumps(in_memory.fit_info))
    with pytest.raises(ConfigError, match="fitted on 129.*n_fft"):
        trained(np.zeros((1, 10, 513, 2), np.float32))
    other = TrainConfig(model="nmf", model_kwargs=dict(kwargs), stft=SpectrogramConfig(16000, 1024, 512).to_dict())
    with pytest.raises(ShardError, match="STFT config"):
        train_run(other, tmp_path / "other", None, tmp_path / "shards", progress=False, echo=lambda line: None)
    assert not (tmp_path / "other").exists()  # nothing written for a run that cannot start


def test_frame_reservoir_is_bounded_and_covers_the_stream():
    reservoir = nmf.FrameReservoir(100, np.random.default_rng(0))
    stream = np.arange(5000, dtype=np.float32)[:, None]
    for start in range(0, 5000, 37):
        reservoir.add(stream[start : start + 37])
    sample = reservoir.sample()[:, 0]
    assert reservoir.seen == 5000 and len(sample) == 100 and len(np.unique(sample)) == 100
    assert 1500 < sample.mean() < 3500  # uniform over the whole stream, not just its start


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rank": 0}, "rank must be a positive integer"),
        ({"rank": -3}, "rank must be a positive integer"),
        ({"rank": "32"}, "rank must be a positive integer"),
        ({"rank": {"vocals": 8}}, "missing"),
        ({"beta": "frobenius"}, "unknown NMF beta 'frobenius'"),
        ({"beta": None}, "beta must be a finite number"),
        ({"beta": float("nan")}, "beta must be a finite number"),
        ({"mask_power": 0}, "mask_power must be a positive"),
        ({"fit_iterations": 0}, "fit_iterations must be a positive integer"),
        ({"targets": ["vocals", "piano"]}, "targets must be distinct names"),
        ({"targets": ["vocals", "vocals"]}, "targets must be distinct names"),
    ],
)
def test_bad_config_raises_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        NMFSeparator(**kwargs)


def test_unfitted_model_and_bad_files(tmp_path):
    model = NMFSeparator()
    actions = [lambda: model(tf.zeros([1, 4, BINS, 2])), model.count_params, lambda: model.save(tmp_path / "x.npz")]
    for action in actions:
        with pytest.raises(ConfigError, match="no dictionaries yet: call fit"):
            action()
    with pytest.raises(ConfigError, match="refit instead"):
        model.with_config(rank=8)
    with pytest.raises(CheckpointError, match="no saved NMF model"):
        NMFSeparator.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(CheckpointError, match="not a saved NMF model"):
        NMFSeparator.load(tmp_path / "junk.npz")
