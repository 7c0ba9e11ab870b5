"""BS-RoFormer and Mel-Band RoFormer: shapes, the reference code's semantics block by block
(RMSNorm, rotary embedding, attention, bands, mask averaging) against NumPy and librosa, and a
tiny preset that learns. (Equivalence of whole models with converted PyTorch weights is the
converter's test.)"""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from mss_tf.config import TrainConfig
from mss_tf.errors import ConfigError
from mss_tf.models.per_band import BandSplit
from mss_tf.models.registry import build_model, get_preset, model_parameters, search_space
from mss_tf.models.bands import DEFAULT_FREQS_PER_BANDS, bs_roformer_bands, mel_band_bins, mel_filterbank
from mss_tf.models.roformer import BSRoformer, MelBandRoformer
from mss_tf.models import blocked_attention as blocked_attention_module
from mss_tf.models.blocked_attention import blocked_attention
from mss_tf.models.transformer import Attention, RMSNorm, RotaryEmbedding, dot_product_attention_available
from mss_tf.training.loop import Trainer

BINS = 129  # n_fft 256: the unit tests' STFT
BS_BANDS = [2] * 8 + [4] * 8 + [8] * 4 + [24, 25]


@pytest.fixture(autouse=True)
def _slow_only_when_selected(request):
    """Keep `pytest tests/test_roformer.py` fast: paper-size tests run only under `-m slow`."""
    if request.node.get_closest_marker("slow") and "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("paper-size test; run with -m slow")


def _model(cls, **kwargs):
    args = dict(sample_rate=16000, n_fft=256, dim=16, depth=1, heads=2, dim_head=8, attn_dropout=0.0, ff_dropout=0.0,
                mlp_expansion_factor=2)
    args.update({"freqs_per_bands": BS_BANDS} if cls is BSRoformer else {"num_bands": 8})
    return cls(**{**args, **kwargs})


def _mixture(frames=6, batch=2, channels=1, seed=0):
    shape = [batch, frames, BINS, 2] if channels == 1 else [batch, channels, frames, BINS, 2]
    return tf.random.stateless_normal(shape, seed=[seed, 1])


def _perturb(layer, seed=0, scale=0.3):
    rng = np.random.default_rng(seed)
    layer.set_weights([w + scale * rng.standard_normal(w.shape).astype(w.dtype) for w in layer.get_weights()])


# --- shapes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [BSRoformer, MelBandRoformer])
@pytest.mark.parametrize("channels, targets", [(1, ["vocals"]), (2, ["vocals", "drums", "bass", "other"])])
def test_output_shapes_mono_stereo_one_and_four_targets(cls, channels, targets):
    model = _model(cls, channels=channels, targets=targets)
    out = model(_mixture(5, channels=channels), training=False)
    expected = (2, len(targets), 5, BINS, 2) if channels == 1 else (2, len(targets), 2, 5, BINS, 2)
    assert out.shape == expected and out.dtype == tf.float32 and np.all(np.isfinite(out.numpy()))
    assert len(model.mask_estimators) == len(targets)
    if channels == 2 and cls is MelBandRoformer:  # any length through one graph, as in exports
        spec = tf.TensorSpec([None, 2, None, BINS, 2], tf.float32)
        forward = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
        np.testing.assert_allclose(forward(_mixture(5, channels=2)), out, atol=1e-5)
        assert forward(_mixture(11, batch=1, channels=2)).shape == (1, 4, 2, 11, BINS, 2)


# --- blocks against NumPy -----------------------------------------------------------------------


def _numpy_rmsnorm(x, gamma):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12) * np.sqrt(x.shape[-1]) * gamma


def test_rmsnorm_is_f_normalize_times_sqrt_dim_times_gamma():
    norm = RMSNorm(12)
    x = np.random.default_rng(0).standard_normal((3, 5, 12)).astype(np.float32) * 7
    x[0, 0] = 0.0  # F.normalize's floor: a zero vector stays zero
    norm.build()
    _perturb(norm)
    np.testing.assert_allclose(norm(x), _numpy_rmsnorm(x, norm.gamma.numpy()), rtol=1e-5, atol=1e-6)
    assert np.all(norm(x).numpy()[0, 0] == 0)


def test_band_split_rms_norm_and_dense_per_band():
    """The RoFormers' band split: per band RMSNorm over its own values, then its own Dense, with
    bands of different widths padded in runs (PerBandNorm's RMS path)."""
    widths, per_bin, dim = [1, 2, 2, 3, 7, 9], 4, 5
    split = BandSplit(widths, dim, per_bin, norm="rms")
    split.build(None)
    _perturb(split)
    assert [w.name for w in split.weights] == ["norm_gamma", "kernel", "bias"]
    x = np.random.default_rng(1).standard_normal((2, 3, sum(widths) * per_bin)).astype(np.float32)
    gamma, kernel, bias = (w.numpy() for w in split.weights)
    expected, start = [], 0
    for k, size in enumerate(w * per_bin for w in widths):
        band = _numpy_rmsnorm(x[..., start : start + size], gamma[start : start + size])
        expected.append(band @ kernel[start : start + size] + bias[k])
        start += size
    np.testing.assert_allclose(split(x), np.stack(expected, axis=2), rtol=1e-4, atol=1e-5)


def _numpy_rope(x, theta=10000.0):
    """Rotary embedding as complex numbers: pair (2i, 2i + 1) of position p times exp(j p f_i)."""
    n, dim = x.shape[1], x.shape[-1]
    freqs = theta ** -(np.arange(0, dim, 2) / dim)  # (dim / 2,)
    rotation = np.exp(1j * np.arange(n)[:, None] * freqs)[:, None]  # (n, 1, dim / 2)
    z = (x[..., 0::2] + 1j * x[..., 1::2]) * rotation  # (B, n, H, dim / 2)
    return np.stack([z.real, z.imag], axis=-1).reshape(x.shape)


def test_rotary_embedding_matches_numpy_and_depends_on_offsets_only():
    rope = RotaryEmbedding(8)
    x = np.random.default_rng(2).standard_normal((2, 40, 3, 8)).astype(np.float32)
    rope.build()
    assert not rope.trainable_weights and rope.freqs.shape == (4,)
    np.testing.assert_allclose(rope.freqs, 10000.0 ** -(np.arange(0, 8, 2) / 8), rtol=1e-6)
    np.testing.assert_allclose(rope(x), _numpy_rope(x.astype(np.float64)), atol=1e-4)
    # what RoPE is for: a query-key product depends on their offset, not their positions
    q, k = (np.broadcast_to(v, (1, 40, 1, 8)).astype(np.float32) for v in np.random.default_rng(3).standard_normal((2, 8)))
    dots = np.einsum("bihd,bjhd->ij", rope(q).numpy(), rope(k).numpy())
    np.testing.assert_allclose(dots[3, 10], dots[20, 27], rtol=1e-4)


def _numpy_attention(layer, x):
    """The reference's attention, written out: RMSNorm, qkv 'b n (qkv h d)', RoPE on q and k,
    softmax(q k^T / sqrt(d)) v per head, times sigmoid(per-head gate), 'b n (h d)', to_out."""
    h, d = layer.heads, layer.dim_head
    normed = _numpy_rmsnorm(x, layer.norm.gamma.numpy())
    qkv = (normed @ layer.to_qkv.kernel.numpy()).reshape(*x.shape[:2], 3, h, d)
    q, k, v = _numpy_rope(qkv[:, :, 0]), _numpy_rope(qkv[:, :, 1]), qkv[:, :, 2]
    sim = np.einsum("bihd,bjhd->bhij", q, k) / np.sqrt(d)
    weights = np.exp(sim - sim.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = np.einsum("bhij,bjhd->bihd", weights, v)
    gates = normed @ layer.to_gates.kernel.numpy() + layer.to_gates.bias.numpy()  # (B, n, H)
    out = out / (1 + np.exp(-gates[..., None]))
    return out.reshape(*x.shape[:2], h * d) @ layer.to_out.kernel.numpy()


@pytest.mark.parametrize("implementation", ["blocked", "einsum"])
@pytest.mark.parametrize("transformer_implementation", ["layers", "fused"])
def test_attention_matches_numpy_in_every_implementation(implementation, transformer_implementation):
    rope = RotaryEmbedding(8)
    layer = Attention(12, heads=3, dim_head=8, rotary_embed=rope, implementation=implementation,
                      transformer_implementation=transformer_implementation)
    x = np.random.default_rng(4).standard_normal((2, 9, 12)).astype(np.float32)
    layer.build()
    _perturb(layer, seed=5)
    rope.freqs.assign(10000.0 ** -(np.arange(0, 8, 2) / 8))  # (_perturb moved the frequencies too)
    expected = _numpy_attention(layer, x.astype(np.float64))
    np.testing.assert_allclose(layer(x), expected, rtol=1e-4, atol=1e-5)
    if (implementation, transformer_implementation) != ("einsum", "layers"):
        return
    if not dot_product_attention_available():
        with pytest.raises(ConfigError, match="needs keras.ops.dot_product_attention"):
            _model(BSRoformer, attention_implementation="dot_product_attention")
        pytest.skip(f"keras.ops.dot_product_attention is not in Keras {keras.__version__}")
    fused = Attention(12, heads=3, dim_head=8, rotary_embed=rope, implementation="dot_product_attention")
    fused.build()
    fused.set_weights(layer.get_weights())
    np.testing.assert_allclose(fused(x), layer(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("group_elements, groups, per", [(25, 8, 1), (3 * 25, 3, 3), (1 << 20, 1, 8)])
def test_blocked_attention_and_its_gradient_are_softmax_attentions_with_the_same_dropout(group_elements, groups, per):
    """8 sequences of 5 steps, one, three (3 + 3 + 2, one padded) or all at a time."""
    rng = np.random.default_rng(8)
    q, k, v, weight = (tf.constant(rng.standard_normal((8, 5, 4)).astype(np.float32)) for _ in range(4))
    grouped, count = blocked_attention_module._groups(q, group_elements)
    assert (int(count), *grouped.shape[:2]) == (groups, groups, per)
    seed = tf.constant([3, 9], tf.int64)
    masks = [blocked_attention_module._keep_mask(seed, g, [per, 5, 5], 0.4) for g in range(groups)]
    for rate, mask in [(0.0, 1.0), (0.4, tf.concat(masks, axis=0)[:8])]:
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([q, k, v])
            expected = tf.matmul(tf.nn.softmax(tf.matmul(q, k, transpose_b=True)) * mask, v)
            got = blocked_attention(q, k, v, dropout=rate, seed=seed if rate else None, group_elements=group_elements)
            losses = [tf.reduce_sum(out * weight) for out in (expected, got)]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        for a, b in zip(tape.gradient(losses[1], [q, k, v]), tape.gradient(losses[0], [q, k, v])):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert float(tf.reduce_max(tf.abs(got - tf.matmul(tf.nn.softmax(tf.matmul(q, k, transpose_b=True)), v)))) > 0.1  # dropped


@pytest.mark.parametrize("cls, channels", [(BSRoformer, 2), (MelBandRoformer, 1)])
def test_fused_transformer_blocks_compute_what_the_layers_do(cls, channels):
    """The fused blocks (the default) on the same weights: outputs and gradients of the layer by
    layer path, with gains, gates and rotary frequencies away from their initial values."""
    models = [_model(cls, channels=channels, depth=2, transformer_implementation=impl) for impl in ("layers", "fused")]
    x = _mixture(7, channels=channels)
    for model in models:
        model(x, training=False)
    _perturb(models[0], seed=7)
    models[1].set_weights(models[0].get_weights())
    outputs, gradients = [], []
    for model in models:
        with tf.GradientTape() as tape:
            out = model(x, training=True)  # no dropout in _model: deterministic
            loss = tf.reduce_sum(tf.square(out))
        outputs.append(out.numpy())
        gradients.append([tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, model.trainable_variables)])
    peak = np.abs(outputs[0]).max()
    assert np.abs(outputs[1] - outputs[0]).max() <= 1e-5 * peak
    for plain, fused in zip(*gradients):
        np.testing.assert_allclose(fused, plain, rtol=1e-4, atol=1e-4 * np.abs(plain).max())
    assert _model(cls).transformer_implementation == "auto"


def test_gradient_checkpointing_recomputes_the_same_dropout_masks():
    """Transformers recomputed in the backward pass give the gradients of the model that keeps
    its activations, dropout included (the recomputation draws the forward pass's masks)."""
    models = [_model(BSRoformer, attn_dropout=0.3, ff_dropout=0.3, gradient_checkpointing=flag) for flag in (False, True)]
    x = _mixture(6)
    for model in models:
        model(x, training=False)
    models[1].set_weights(models[0].get_weights())
    seeds = [[v for v in model.variables if "seed_generator_state" in v.path] for model in models]
    assert len(seeds[0]) == 2 * 4  # (time, freq) x (attention weights and output, 2 in the feed-forward)

    def step(model):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(model(x, training=True)))
        return loss, [tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_variables)]

    plain, checkpointed = (tf.function(lambda model=model: step(model)) for model in models)
    for variable, value in zip(seeds[1], seeds[0]):
        variable.assign(value)
    loss, expected = plain()
    loss_checkpointed, got = checkpointed()
    assert float(loss_checkpointed) == pytest.approx(float(loss), rel=1e-6)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b.numpy()).max())
    np.testing.assert_array_equal([v.numpy() for v in seeds[1]], [v.numpy() for v in seeds[0]])  # drew as often
    _, other = checkpointed()  # the next masks: another gradient (dropout is active)
    assert max(float(np.abs(a - b).max()) for a, b in zip(other, got)) > 1e-3


def test_dropout_only_in_training():
    model = _model(BSRoformer, attn_dropout=0.5, ff_dropout=0.5)
    x = _mixture(4, batch=1)
    np.testing.assert_array_equal(model(x, training=False), model(x, training=False))
    assert np.max(np.abs(model(x, training=True) - model(x, training=False))) > 1e-3


# --- bands ------------------------------------------------------------------------------------


def test_bs_bands_are_the_references_at_44_1_khz_and_its_hz_edges_elsewhere():
    assert bs_roformer_bands(44100, 2048) == list(DEFAULT_FREQS_PER_BANDS)
    assert len(DEFAULT_FREQS_PER_BANDS) == 62 and sum(DEFAULT_FREQS_PER_BANDS) == 1025
    widths = bs_roformer_bands(16000, 1024)
    assert len(widths) == 52 and sum(widths) == 513 and min(widths) >= 2
    edges_hz = np.cumsum(widths)[:-1] * 16000 / 1024
    reference_hz = np.cumsum(DEFAULT_FREQS_PER_BANDS)[:51] * 44100 / 2048  # the 51 reference edges below 8 kHz
    assert reference_hz[-1] < 8000 < reference_hz[-1] + 24 * 44100 / 2048
    np.testing.assert_allclose(edges_hz, reference_hz, atol=16000 / 1024 / 2)  # within half a bin


@pytest.mark.parametrize("sample_rate, n_fft, bands", [(44100, 2048, 60), (16000, 1024, 45), (16000, 1024, 16),
                                                       (16000, 256, 8), (48000, 2048, 64)])
def test_mel_filterbank_is_librosas_and_band_bins_the_references(sample_rate, n_fft, bands):
    librosa = pytest.importorskip("librosa")
    filters = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=bands)
    np.testing.assert_array_equal(mel_filterbank(sample_rate, n_fft, bands), filters)
    filters[0][0] = filters[-1][-1] = 1.0  # as mel_band_roformer.py
    expected = [np.nonzero(row > 0)[0] for row in filters]
    got = mel_band_bins(sample_rate, n_fft, bands)
    assert len(got) == bands and all(np.array_equal(a, b) for a, b in zip(got, expected))
    counts = np.bincount(np.concatenate(got), minlength=n_fft // 2 + 1)
    assert counts.min() >= 1 and counts.max() >= 2  # every bin covered, some by two bands


def _set_constant_mask(head, values):
    """Make a mask head output `values` (one per band value, band order) whatever its input."""
    kernel, bias = np.zeros(head.glu.kernel.shape, np.float32), np.zeros(head.glu.bias.shape, np.float32)
    start = 0
    for size in head.band_sizes:
        bias[2 * start : 2 * start + size] = values[start : start + size]
        bias[2 * start + size : 2 * (start + size)] = 40.0  # sigmoid(40) == 1 in float32
        start += size
    head.glu.kernel.assign(kernel)
    head.glu.bias.assign(bias)


@pytest.mark.parametrize("channels", [1, 2])
def test_mel_masks_of_overlapping_bands_are_averaged_per_bin_and_channel(channels):
    model = _model(MelBandRoformer, channels=channels, zero_dc=False)
    mix = _mixture(3, batch=1, channels=channels)
    model(mix, training=False)
    head = model.mask_estimators[0]
    values = np.random.default_rng(6).uniform(-2, 2, head.total).astype(np.float32)
    _set_constant_mask(head, values)
    # expected, by bands: every (bin, channel) gets the mean complex mask of the bands that hold its bin
    total = np.zeros((BINS, channels), complex)
    count = np.zeros(BINS)
    start = 0
    for bins in model.band_bins:
        band = values[start : start + 2 * channels * len(bins)].reshape(len(bins), channels, 2)
        total[bins] += band[..., 0] + 1j * band[..., 1]
        count[bins] += 1
        start += band.size
    mask = total / count[:, None]  # (F, C)
    mix_c = mix.numpy()[..., 0] + 1j * mix.numpy()[..., 1]  # (1, [C,] T, F)
    expected = mix_c * (mask[:, 0] if channels == 1 else mask.T[:, None, :])
    out = model(mix, training=False).numpy()[:, 0]
    np.testing.assert_allclose(out[..., 0] + 1j * out[..., 1], expected, atol=1e-5)
    assert count.max() >= 2  # there were overlaps to average


def test_zero_dc_zeroes_bin_0_of_every_estimate():
    mix = _mixture(4)
    for cls in (BSRoformer, MelBandRoformer):
        keras.utils.set_random_seed(3)
        model = _model(cls, targets=["vocals", "bass"])
        out = model(mix, training=False).numpy()
        keras.utils.set_random_seed(3)
        unzeroed = _model(cls, targets=["vocals", "bass"], zero_dc=False)(mix, training=False).numpy()
        assert np.all(out[:, :, :, 0] == 0) and np.max(np.abs(unzeroed[:, :, :, 0])) > 0
        np.testing.assert_allclose(out[:, :, :, 1:], unzeroed[:, :, :, 1:], atol=1e-6)


def test_mask_estimator_depth_as_each_reference_counts_it():
    """bs_roformer.py: depth Linear layers (2 -> Linear, Tanh, Linear); mel_band_roformer.py:
    depth hidden layers (2 -> three Linear layers)."""
    names = lambda model: [re.sub(r".*/", "", v.path) for v in model.mask_estimators[0].weights]
    for cls, depth, hidden in [(BSRoformer, 1, 0), (BSRoformer, 2, 1), (BSRoformer, 3, 2), (MelBandRoformer, 1, 1),
                               (MelBandRoformer, 2, 2)]:
        model = _model(cls, mask_estimator_depth=depth)
        model(_mixture(2, batch=1), training=False)
        head = model.mask_estimators[0]
        assert head.hidden_layers == hidden and head.norm is None
        expected = [*[f"hidden_{w}{'' if i == 0 else f'_{i}'}" for i in range(hidden) for w in ("kernel", "bias")],
                    "kernel", "bias"]
        assert names(model) == expected, (cls.__name__, depth)
        assert head.glu.kernel.shape[0] == (model.dim * model.mlp_expansion_factor if hidden else model.dim)


# --- the model contract: weights, precision, training -----------------------------------------


def test_weight_paths_the_converter_maps_onto():
    """Checkpoint keys (mss_tf/checkpoints.py: attribute paths) of a two-block stereo BS-RoFormer
    and a Mel-Band RoFormer with two targets: what a PyTorch state dict is converted into."""
    from mss_tf.checkpoints import model_variables

    def transformer(prefix, layers, norm):
        keys = []
        for j in range(layers):
            a, f = f"{prefix}/attention/{j}", f"{prefix}/feed_forward/{j}"
            keys += [f"{a}/norm/gamma", f"{a}/to_qkv/kernel", f"{a}/to_gates/kernel", f"{a}/to_gates/bias",
                     f"{a}/to_out/kernel", f"{f}/norm/gamma", f"{f}/proj_in/kernel", f"{f}/proj_in/bias",
                     f"{f}/proj_out/kernel", f"{f}/proj_out/bias"]
        return keys + ([f"{prefix}/norm/gamma"] if norm else [])

    head = lambda s, hidden: [*[f"mask_estimators/{s}/hidden_{w}{'' if i == 0 else f'_{i}'}" for i in range(hidden)
                                for w in ("kernel", "bias")], f"mask_estimators/{s}/glu/kernel", f"mask_estimators/{s}/glu/bias"]
    start = ["band_split/norm_gamma", "band_split/dense/kernel", "band_split/dense/bias", "time_rotary_embed/freqs",
             "freq_rotary_embed/freqs"]
    bs = _model(BSRoformer, channels=2, depth=2, time_transformer_depth=2)
    bs(_mixture(2, batch=1, channels=2), training=False)
    expected = start + [k for i in range(2) for k in transformer(f"time_transformers/{i}", 2, False)
                        + transformer(f"freq_transformers/{i}", 1, False)] + ["final_norm/gamma"] + head(0, 1)
    assert sorted(model_variables(bs)) == sorted(expected)
    assert model_variables(bs)["band_split/dense/kernel"].shape == (BINS * 4, 16)  # stereo: 4 values per bin
    mel = _model(MelBandRoformer, targets=["vocals", "other"])
    mel(_mixture(2, batch=1), training=False)
    expected = start + transformer("time_transformers/0", 1, True) + transformer("freq_transformers/0", 1, True) \
        + head(0, 2) + head(1, 2)
    assert sorted(model_variables(mel)) == sorted(expected)
    assert model_variables(mel)["band_split/norm_gamma"].shape == (2 * sum(len(b) for b in mel.band_bins),)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_outputs_float32_and_finite_gradients(policy):
    keras.utils.set_random_seed(4)
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = _model(MelBandRoformer, targets=["vocals", "bass"])
        mix = _mixture(5)
        with tf.GradientTape() as tape:
            out = model(mix, training=True)
            loss = tf.reduce_mean(tf.abs(out - mix[:, tf.newaxis]))
        grads = tape.gradient(loss, model.trainable_variables)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.time_transformers[0].attention[0].to_qkv.compute_dtype == policy.split("_")[1]
    assert model.time_transformers[0].attention[0].norm.gamma.dtype == "float32"
    assert out.dtype == tf.float32 and np.all(np.isfinite(out.numpy()))
    assert all(g is not None and np.all(np.isfinite(tf.convert_to_tensor(g).numpy())) for g in grads)


def test_tiny_presets_learn_a_fixed_batch():
    spec = get_preset("bs-roformer-tiny").stft
    for preset in ("bs-roformer-tiny", "mel-roformer-tiny"):
        keras.utils.set_random_seed(0)
        config = TrainConfig(model=preset, batch_size=2, learning_rate=3e-3).resolve()
        trainer = Trainer(build_model(preset), config)  # the step train.py runs (the preset's default loss)
        mix = tf.random.stateless_normal([2, 8, spec.n_bins, 2], seed=[5, 1])
        low_pass = tf.cast(tf.range(spec.n_bins) < 60, tf.float32)[tf.newaxis, tf.newaxis, :, tf.newaxis]
        target = (mix * low_pass)[:, tf.newaxis]  # (2, 1, 8, 513, 2): the low band of the mixture
        losses = [float(trainer.train_step(mix, target)[0]) for _ in range(30)]
        print(f"{preset}: loss {losses[0]:.4f} -> {losses[-1]:.4f} in 30 steps")
        assert losses[-1] < 0.5 * losses[0], (preset, losses[0], losses[-1])


def test_search_spaces_are_sized_from_the_preset():
    small = {p.name: p for p in search_space("bs-roformer-small").parameters}
    assert {"dim", "depth", "heads", "dropout", "learning_rate"} <= set(small)
    assert small["dim"].values == (24, 48, 96) and (small["depth"].min, small["depth"].max) == (1, 3)
    paper = search_space("mel-roformer")
    assert {p.name: p for p in paper.parameters}["dim"].values == (192, 384, 768)
    assert paper.model_kwargs({"dim": 192, "dropout": 0.2}, {}) == {"dim": 192, "attn_dropout": 0.2, "ff_dropout": 0.2}


def test_bad_options_are_one_line_errors():
    bad = [
        (BSRoformer, {"channels": 3}, "channels must be 1 or 2"),
        (MelBandRoformer, {"targets": []}, "at least one target"),
        (BSRoformer, {"freqs_per_bands": [64, 64]}, "summing to the 129 bins"),
        (MelBandRoformer, {"num_bands": 100}, "no bin|in no band"),
        (BSRoformer, {"attention_implementation": "flash"}, "attention_implementation must be one of"),
        (BSRoformer, {"transformer_implementation": "xla"}, "transformer_implementation must be one of"),
        (BSRoformer, {"mask_estimator_depth_counts": "layers"}, "mask_estimator_depth_counts must be"),
        (MelBandRoformer, {"dim_head": 7}, "even dim_head"),
    ]
    for cls, kwargs, message in bad:
        with pytest.raises(ConfigError, match=message) as error:
            _model(cls, **kwargs)
        assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="bins=129"):
        _model(BSRoformer)(tf.zeros([1, 4, 513, 2]))


# --- paper size (slow) --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("preset, bands", [("bs-roformer", 62), ("mel-roformer", 60)])
def test_paper_size_presets_build_and_run(preset, bands):
    model = build_model(preset)
    spec = get_preset(preset).stft
    assert (model.dim, model.depth, model.heads, model.dim_head, model.channels) == (384, 6, 8, 64, 2)
    assert len(model.band_widths) == bands and (spec.sample_rate, spec.n_fft, spec.hop) == (44100, 2048, 512)
    out = model(tf.random.stateless_normal([1, 2, 20, spec.n_bins, 2], seed=[1, 2]), training=False)
    assert out.shape == (1, 1, 2, 20, spec.n_bins, 2) and np.all(np.isfinite(out.numpy()))
    print(f"{preset}: {model_parameters(model):,} parameters")
