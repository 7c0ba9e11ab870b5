import os
import re

import numpy as np
import pytest
import tensorflow as tf
import keras

from mss_tf.audio.spectrogram import SpectrogramConfig, istft
from mss_tf.errors import ConfigError
from mss_tf.losses import bsrnn_paper, get_loss, mag_phase_l1
from mss_tf.models.bands import BAND_SCHEMES, band_edges_hz, band_widths
from mss_tf.models.bsrnn import BSRNN, BandSplit, MaskEstimator, ResidualRNN, SqueezeExcitation
from mss_tf.models.lstm import BidirectionalLSTM, resolve_lstm_implementation
from mss_tf.models.per_band import BandLayout
from mss_tf.config import TrainConfig
from mss_tf.models.registry import build_model, get_preset, model_parameters
from mss_tf.training.loop import Trainer
from tests.conftest import REPO

BINS = 1025


def _mixture(frames=12, batch=2, seed=0, channels=None):
    shape = [batch, frames, BINS, 2] if channels is None else [batch, channels, frames, BINS, 2]
    return tf.random.stateless_normal(shape, seed=[seed, 1])


@pytest.fixture(autouse=True)
def _slow_only_when_selected(request):
    """Keep `pytest tests/test_bsrnn.py` fast: paper-size tests run only under `-m slow`."""
    if request.node.get_closest_marker("slow") and "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("paper-size test; run with -m slow")


def _small(**kwargs):
    args = dict(band_scheme="coarse", feature_dim=8, num_modules=1, se_reduction=4)
    return BSRNN(**{**args, **kwargs})


# --- band schemes -------------------------------------------------------------------------


@pytest.mark.parametrize("scheme,count", [("v7", 41), ("bass", 30), ("drums", 55)])
def test_paper_band_counts_tile_all_bins_once(scheme, count):
    widths = band_widths(scheme, 44100, 2048)
    assert len(widths) == count
    assert sum(widths) == BINS and min(widths) >= 1
    owner = np.repeat(np.arange(count), widths)
    assert owner.shape == (BINS,) and np.all(np.diff(owner) >= 0)  # contiguous, each bin once


def test_v7_bands_follow_the_hz_rules():
    edges = band_edges_hz(BAND_SCHEMES["v7"], 44100)
    assert edges[:3] == [0.0, 100.0, 200.0] and edges[10] == 1000.0 and edges[22] == 4000.0
    assert edges[-2] == 20000.0 and edges[-1] == 22050.0
    widths = band_widths("v7", 44100, 2048)
    starts = np.concatenate([[0], np.cumsum(widths)[:-1]])
    bin_hz = 44100 / 2048
    for start, lo in zip(starts, edges[:-1]):  # first bin of each band is the first at or above its edge
        assert start * bin_hz >= lo - 1e-6 and (start - 1) * bin_hz < lo
    assert widths[:10] == [5, 5, 4, 5, 5, 4, 5, 5, 4, 5]


@pytest.mark.parametrize("scheme,edges", [
    # the paper's rule boundaries: band index -> edge in Hz
    ("bass", {1: 50.0, 10: 500.0, 11: 600.0, 15: 1000.0, 16: 1500.0, 21: 4000.0, 25: 8000.0, 29: 16000.0}),
    ("drums", {1: 50.0, 20: 1000.0, 21: 1100.0, 30: 2000.0, 38: 4000.0, 46: 8000.0, 54: 16000.0}),
])
def test_bass_and_drums_bands_follow_the_paper_rules(scheme, edges):
    got = band_edges_hz(BAND_SCHEMES[scheme], 44100)
    assert {i: got[i] for i in edges} == edges and got[-1] == 22050.0


@pytest.mark.parametrize("scheme,count", [("v7", 30), ("bass", 25), ("drums", 46)])
def test_paper_schemes_are_cut_at_nyquist_at_16_khz(scheme, count):
    edges = band_edges_hz(BAND_SCHEMES[scheme], 16000)
    assert edges[-1] == 8000.0 and all(a < b for a, b in zip(edges, edges[1:]))
    assert edges[:-1] == [e for e in band_edges_hz(BAND_SCHEMES[scheme], 44100) if e < 8000.0]
    widths = band_widths(scheme, 16000, 1024)
    assert len(widths) == count and sum(widths) == 513


def test_band_scheme_errors():
    with pytest.raises(ConfigError, match="unknown band scheme"):
        band_widths("v9", 44100, 2048)
    with pytest.raises(ConfigError, match="without bins"):
        band_widths("v7", 44100, 256)
    with pytest.raises(ConfigError):
        band_widths([[1000, 300]], 44100, 2048)  # 300 Hz does not tile 0-1000 Hz


# --- model ------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["bsrnn-tiny", "bsrnn-se-tiny"])
def test_output_shape_and_dtype(preset):
    model = build_model(preset)
    out = model(_mixture(), training=False)
    assert out.shape == (2, 1, 12, BINS, 2) and out.dtype == tf.float32
    assert model.targets == ["vocals"]


@pytest.mark.parametrize("preset, se_blocks", [("bsrnn-small", 0), ("bsrnn-se-small", 8)])
def test_cpu_size_presets_run_at_the_unet_stft_with_four_targets(preset, se_blocks):
    model = build_model(preset)
    spec = get_preset(preset).stft
    assert spec.to_dict() == get_preset("unet").stft.to_dict()
    assert len(model.band_widths) == 30 and model.feature_dim == 32 and model.num_modules == 4
    assert len(model.se_blocks) == se_blocks and model.targets == ["vocals", "drums", "bass", "other"]
    out = model(tf.random.stateless_normal([1, 20, spec.n_bins, 2], seed=[3, 4]), training=False)
    assert out.shape == (1, 4, 20, spec.n_bins, 2) and bool(tf.reduce_all(tf.math.is_finite(out)))


def test_several_targets_and_stereo_shapes():
    model = _small(targets=["vocals", "drums", "bass"])
    assert model(_mixture(7), training=False).shape == (2, 3, 7, BINS, 2)
    assert len(model.mask_estimators) == 3
    stereo = _small(targets=["vocals", "bass"], channels=2)
    assert stereo(_mixture(7, channels=2), training=False).shape == (2, 2, 2, 7, BINS, 2)
    assert stereo.band_split.features_per_bin == 4


def _set_constant_mask(head, mask):
    """Make a mask head output `mask` (F, C, 2) whatever its input: zero GLU kernel, the mask as
    the value bias and a saturated gate. Band k's GLU outputs are [value | gate], each in the
    band's (bin, channel, real/imag) order, at columns 2 * (first value of band k)."""
    values = mask.reshape(-1)
    kernel, bias = np.zeros(head.glu.kernel.shape, np.float32), np.zeros(head.glu.bias.shape, np.float32)
    start = 0
    for size in head.band_sizes:
        bias[2 * start : 2 * start + size] = values[start : start + size]
        bias[2 * start + size : 2 * (start + size)] = 40.0  # sigmoid(40) == 1 in float32
        start += size
    head.glu.kernel.assign(kernel)
    head.glu.bias.assign(bias)


@pytest.mark.parametrize("channels", [1, 2])
def test_estimate_is_the_complex_mask_times_the_mixture(channels):
    """With every head forced to a known mask (an identity mask for the first target, a random
    complex one for the second), the estimates must be the mixture and the complex product
    mask x mixture per bin and channel, computed here in NumPy."""
    model = _small(targets=["vocals", "bass"], channels=channels)
    stereo = channels == 2
    mix = _mixture(5, channels=2 if stereo else None)
    out = model(mix, training=False).numpy()
    # an untrained head's mask is complex: the estimate does not keep the mixture's phase
    mix_c = mix.numpy()[..., 0] + 1j * mix.numpy()[..., 1]
    ratio = (out[:, 0, ..., 0] + 1j * out[:, 0, ..., 1]) / mix_c
    assert np.mean(np.abs(ratio.imag)) > 1e-2 * np.mean(np.abs(ratio.real))
    rng = np.random.default_rng(0)
    identity = np.zeros((BINS, channels, 2), np.float32)
    identity[..., 0] = 1.0
    mask = rng.uniform(-2, 2, (BINS, channels, 2)).astype(np.float32)
    _set_constant_mask(model.mask_estimators[0], identity)
    _set_constant_mask(model.mask_estimators[1], mask)
    out = model(mix, training=False).numpy()
    np.testing.assert_allclose(out[:, 0], mix.numpy(), atol=1e-6)
    mask_c = mask[..., 0] + 1j * mask[..., 1]  # (F, C)
    mask_c = mask_c.T[:, np.newaxis] if stereo else mask_c[:, 0]  # (C, 1, F) or (F,)
    expected = mask_c * mix_c  # (B, [C,] T, F)
    np.testing.assert_allclose(out[:, 1, ..., 0], expected.real, atol=1e-5)
    np.testing.assert_allclose(out[:, 1, ..., 1], expected.imag, atol=1e-5)


def _parameter_counts(names):
    counts = {}
    for name in names:
        model = build_model(name)
        model.build((None, None, BINS, 2))
        counts[name] = model_parameters(model)
        print(f"{name}: {counts[name]:,} parameters")
    return counts


def test_paper_size_architecture_and_tiny_parameter_counts():
    counts = _parameter_counts(["bsrnn-tiny", "bsrnn-se-tiny"])
    model = build_model("bsrnn-se")
    assert len(model.band_widths) == 41 and model.num_modules == 12
    assert model.feature_dim == 128 and model.lstm_hidden == 256 and model.mask_hidden == 512
    se = [layer for layer in model._flatten_layers() if isinstance(layer, SqueezeExcitation)]
    assert len(se) == 24 == len(model.se_blocks)
    assert all(block.squeeze_dense.units == 8 and block.excite_dense.units == 128 for block in se)
    assert 0 < counts["bsrnn-se-tiny"] - counts["bsrnn-tiny"]
    assert (counts["bsrnn-se-tiny"] - counts["bsrnn-tiny"]) / counts["bsrnn-tiny"] < 0.01
    assert get_preset("bsrnn").stft.to_dict() == {"sample_rate": 44100, "n_fft": 2048, "hop": 512}
    assert get_preset("bsrnn").training.batch_size == 2 and get_preset("bsrnn").training.clip_norm == 5.0


def test_auto_band_scheme_follows_the_target():
    assert len(_small(targets=["bass"], band_scheme="auto").band_widths) == 30
    assert len(_small(targets=["drums"], band_scheme="auto").band_widths) == 55
    assert len(_small(targets=["other"], band_scheme="auto").band_widths) == 41
    assert len(_small(targets=["vocals", "bass"], band_scheme="auto").band_widths) == 41


def _output_without(model, block, mix):
    """The model's output with one SE block made the identity (excitation 1 on every channel:
    zero kernel, saturated sigmoid), its weights restored afterwards."""
    weights = block.get_weights()
    block.excite_dense.kernel.assign(tf.zeros_like(block.excite_dense.kernel))
    block.excite_dense.bias.assign(tf.fill(block.excite_dense.bias.shape, 40.0))  # sigmoid(40) == 1 in float32
    try:
        return model(mix, training=False).numpy()
    finally:
        block.set_weights(weights)


def test_every_one_of_24_se_blocks_changes_the_output():
    # the paper-size structure (12 modules, SE after each of the 24 BLSTMs) at N = 8; the fused
    # LSTM kernel (one op per direction) keeps these 25 eager forward passes fast
    model = _small(num_modules=12, squeeze_excitation=True, lstm_implementation="fused")
    mix = _mixture(6, batch=1)
    reference = model(mix, training=False).numpy()
    assert len(model.se_blocks) == 24
    for i, block in enumerate(model.se_blocks):
        changed = np.max(np.abs(_output_without(model, block, mix) - reference))
        assert changed > 1e-4 * np.max(np.abs(reference)), f"SE block {i} does not change the output"
    np.testing.assert_allclose(model(mix, training=False).numpy(), reference, atol=1e-6)


def test_se_placement_module_puts_one_block_after_each_band_blstm():
    model = _small(num_modules=3, squeeze_excitation=True, se_placement="module")
    model(_mixture(3, batch=1), training=False)
    assert len(model.se_blocks) == 3
    assert all(m.time_rnn.se is None and m.band_rnn.se is model.se_blocks[i] for i, m in enumerate(model.band_sequence))


def test_se_squeeze_and_output_ignore_frames_past_valid_frames():
    se = SqueezeExcitation(8, reduction=4)
    x = tf.random.stateless_normal([2, 12, 5, 8], seed=[4, 1])  # (B, T, K, N)
    lengths = [7, 12]
    garbage = tf.range(12)[tf.newaxis, :, tf.newaxis, tf.newaxis] >= tf.constant(lengths)[:, None, None, None]
    padded = tf.where(garbage, 3.0 + x, x)  # item 0: 7 frames of signal, then 5 of garbage
    squeezed = se.squeeze(padded, tf.constant(lengths)).numpy()
    for b, length in enumerate(lengths):
        alone = x[b : b + 1, :length]  # (1, length, K, N), unpadded
        np.testing.assert_allclose(squeezed[b], se.squeeze(alone)[0], atol=1e-6)
        out = se(padded[b : b + 1], valid_frames=tf.constant([length]))
        np.testing.assert_allclose(out[:, :length], se(alone), atol=1e-6)
    np.testing.assert_allclose(se.squeeze(x, tf.constant(12)), se.squeeze(x), atol=1e-6)  # a scalar: whole batch
    assert np.max(np.abs(se.squeeze(padded)[0] - squeezed[0])) > 1.0  # the plain mean would see the garbage


def test_se_squeeze_is_float32_under_mixed_precision():
    se = SqueezeExcitation(8, reduction=4, dtype="mixed_float16")
    x = tf.cast(tf.random.stateless_normal([1, 300, 4, 8], seed=[5, 1]) + 100.0, tf.float16)
    squeezed = se.squeeze(x, tf.constant([200]))
    assert squeezed.dtype == tf.float32 and se(x, valid_frames=tf.constant([200])).dtype == tf.float16
    expected = np.mean(x.numpy()[:, :200].astype(np.float64), axis=(1, 2))
    np.testing.assert_allclose(squeezed, expected, rtol=1e-6)


def test_bsrnn_se_with_valid_frames_ignores_zero_padding():
    # 10 frames padded with 30 silent ones. A fresh model (zero biases) keeps silent frames at
    # zero through band split and norm, and a backward LSTM that starts in that silence keeps a
    # zero state, so it enters the 10 frames as at the end of the unpadded input: the SE squeeze
    # is then the only way for the padding to reach them. With valid_frames the squeezes and the
    # output match the unpadded input; without, the first squeeze also averages the 30 frames.
    model = _small(squeeze_excitation=True)
    mix = _mixture(10, batch=1)
    padded = tf.concat([mix, tf.zeros([1, 30, BINS, 2])], axis=1)  # (1, 40, F, 2)
    model(mix, training=False)
    squeezes = []
    for block in model.se_blocks:
        def recording(x, valid_frames=None, squeeze=block.squeeze):
            squeezes.append(squeeze(x, valid_frames).numpy())
            return squeezes[-1]
        block.squeeze = recording
    reference = model(mix, training=False).numpy()
    unpadded_squeezes = squeezes[:]
    out = model(padded, training=False, valid_frames=tf.constant([10])).numpy()
    padded_squeezes = squeezes[len(unpadded_squeezes):]
    assert len(unpadded_squeezes) == len(padded_squeezes) == 2
    for ref, got in zip(unpadded_squeezes, padded_squeezes):
        np.testing.assert_allclose(got, ref, atol=1e-5 * np.max(np.abs(ref)))
    np.testing.assert_allclose(out[:, :, :10], reference, atol=1e-5 * np.max(np.abs(reference)))
    squeezes.clear()
    model(padded, training=False)
    change = np.linalg.norm(squeezes[0] - unpadded_squeezes[0]) / np.linalg.norm(unpadded_squeezes[0])
    assert change > 0.3


def test_gradients_reach_every_weight():
    keras.utils.set_random_seed(1)  # fixed init: no chance of every ReLU of a small SE bottleneck being off
    model = build_model("bsrnn-se-tiny", targets=["vocals", "bass"])
    mix = _mixture(8)
    target = tf.random.stateless_normal([2, 2, 8, BINS, 2], seed=[3, 4])
    with tf.GradientTape() as tape:
        loss = mag_phase_l1(target, model(mix, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    dead = [v.path for g, v in zip(grads, model.trainable_variables) if g is None or float(tf.reduce_sum(tf.abs(g))) == 0]
    assert not dead


def test_fused_lstm_matches_keras_lstm_outputs_and_gradients():
    model = _small(num_modules=2, squeeze_excitation=True, lstm_implementation="keras")
    mix = _mixture(7)
    model(mix)
    fused = BSRNN.from_config({**model.get_config(), "lstm_implementation": "fused"})
    fused(mix)
    fused.set_weights(model.get_weights())
    np.testing.assert_allclose(fused(mix), model(mix), atol=1e-5)
    grads = []
    weights = tf.random.stateless_normal(model(mix).shape, seed=[7, 8])  # a smooth loss: L1's sign() would
    for m in (model, fused):  # turn 1e-7 output differences near zero into gradient differences
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(m(mix, training=True) * weights)
        grads.append(tape.gradient(loss, m.trainable_variables))
    assert len(grads[0]) == len(grads[1])
    for g_keras, g_fused, v in zip(*grads, model.trainable_variables):
        assert g_fused is not None, v.path
        dense = lambda g: tf.convert_to_tensor(g).numpy()  # gathered weights get IndexedSlices
        np.testing.assert_allclose(dense(g_fused), dense(g_keras), atol=1e-5, rtol=1e-3, err_msg=v.path)


def _numpy_lstm(x, kernel, recurrent_kernel, bias):
    """An LSTM written out in NumPy (Keras' gate order i, f, c, o; sigmoid gates, tanh cell):
    x (steps, batch, features) -> hidden states (steps, batch, units)."""
    sigmoid = lambda z: 1 / (1 + np.exp(-z))
    units = recurrent_kernel.shape[0]
    h = c = np.zeros((x.shape[1], units))
    states = []
    for x_t in x:
        i, f, g, o = np.split(x_t @ kernel + h @ recurrent_kernel + bias, 4, axis=-1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        states.append(h)
    return np.stack(states)


def test_blstm_layer_fused_call_matches_keras_call():
    x = tf.random.stateless_normal([9, 3, 6], seed=[9, 10])  # time-major (steps, batch, features)
    keras_blstm, fused_blstm = BidirectionalLSTM(5, "keras"), BidirectionalLSTM(5, "fused")
    keras_blstm.build(x.shape)
    fused_blstm.build(x.shape)
    _perturb(keras_blstm, seed=3)  # non-zero biases
    fused_blstm.set_weights(keras_blstm.get_weights())
    expected = keras_blstm(x).numpy()
    assert expected.shape == (9, 3, 10)
    np.testing.assert_allclose(fused_blstm(x).numpy(), expected, atol=1e-5)
    # both against an LSTM written out in NumPy: the forward direction runs over axis 0 (the
    # layer is time-major), the backward one over axis 0 reversed, its states back in time order
    cells = [keras_blstm.rnn.forward_layer.cell, keras_blstm.rnn.backward_layer.cell]
    weights = [[w.numpy().astype(np.float64) for w in (cell.kernel, cell.recurrent_kernel, cell.bias)] for cell in cells]
    values = x.numpy().astype(np.float64)
    forward = _numpy_lstm(values, *weights[0])
    backward = _numpy_lstm(values[::-1], *weights[1])[::-1]
    np.testing.assert_allclose(expected, np.concatenate([forward, backward], axis=-1), atol=1e-5)


def test_auto_lstm_implementation_is_fused_on_cpu_and_keras_with_a_gpu(monkeypatch):
    model = build_model("bsrnn-tiny")
    assert model.lstm_implementation == "auto"
    blstm = model.band_sequence[0].time_rnn.blstm
    for gpus, expected in [([], "fused"), (["/GPU:0"], "keras")]:
        monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None, gpus=gpus: gpus if kind == "GPU" else [])
        assert resolve_lstm_implementation("auto") == expected and blstm.runs_fused == (expected == "fused")
        assert resolve_lstm_implementation("keras") == "keras" and resolve_lstm_implementation("fused") == "fused"


@pytest.mark.parametrize("implementation", ["keras", "fused"])
@pytest.mark.parametrize("axis", ["time", "band"])
def test_residual_rnn_runs_the_blstm_along_its_axis(axis, implementation):
    """Against a direct reading of the paper: the time block runs one BLSTM over the frames of
    each band, the band block one BLSTM over the bands of each frame; norm -> BLSTM -> Dense,
    plus the input."""
    block = ResidualRNN(6, 5, axis=axis, lstm_implementation=implementation)
    x = tf.random.stateless_normal([2, 9, 4, 6], seed=[5, 6])  # (B, T, K, N)
    out = block(x).numpy()
    assert out.shape == (2, 9, 4, 6)
    blstm = block.blstm.rnn  # the Keras Bidirectional layer holding the weights (batch-major)
    expected = np.zeros_like(out)
    for b in range(2):
        if axis == "time":
            for k in range(4):
                seq = x[b : b + 1, :, k, :]  # (1, T, N)
                expected[b, :, k, :] = (seq + block.projection(blstm(block.norm(seq))))[0]
        else:
            for t in range(9):
                seq = x[b : b + 1, t, :, :]  # (1, K, N)
                expected[b, t, :, :] = (seq + block.projection(blstm(block.norm(seq))))[0]
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_importing_mss_tf_turns_on_onednn_unless_the_user_chose():
    import subprocess
    import sys

    code = "import os, mss_tf, tensorflow; print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'))"
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    run = lambda env: subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                                     text=True, check=True).stdout.strip()
    assert run(env) == "1"
    assert run({**env, "TF_ENABLE_ONEDNN_OPTS": "0"}) == "0"


def test_variable_length_input():
    model = build_model("bsrnn-se-tiny")
    forward = tf.function(
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec([None, None, BINS, 2], tf.float32)],
    )
    for frames in (3, 17, 40):
        out = forward(_mixture(frames, batch=1))
        assert out.shape == (1, 1, frames, BINS, 2) and np.all(np.isfinite(out.numpy()))
    # no statistic is pooled over time before the BLSTMs: band features of a frame do not
    # depend on the chunk it sits in
    short, long = _mixture(5, batch=1), _mixture(30, batch=1)
    long = tf.concat([short, long[:, 5:]], axis=1)
    features = [model.band_split(tf.reshape(x, [1, x.shape[1], -1])) for x in (short, long)]
    np.testing.assert_allclose(features[0], features[1][:, :5], atol=1e-5)


def test_mixed_precision_outputs_float32():
    keras.utils.set_random_seed(2)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model("bsrnn-se-tiny")
        out = model(_mixture(6), training=False)
        with tf.GradientTape() as tape:
            loss = mag_phase_l1(tf.zeros_like(out), model(_mixture(6), training=True))
        grads = tape.gradient(loss, model.trainable_variables)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.band_sequence[0].time_rnn.projection.compute_dtype == "float16"
    assert out.dtype == tf.float32 and np.all(np.isfinite(out.numpy()))
    assert all(g is not None for g in grads)


def test_tiny_preset_learns_a_fixed_batch():
    keras.utils.set_random_seed(0)
    config = TrainConfig(model="bsrnn-tiny", batch_size=2, learning_rate=3e-3, loss="mag_phase_l1").resolve()
    trainer = Trainer(build_model("bsrnn-tiny"), config)  # the step train.py runs, without a run directory
    mix = _mixture(8, batch=2, seed=5)
    low_pass = tf.cast(tf.range(BINS) < 120, tf.float32)[tf.newaxis, tf.newaxis, :, tf.newaxis]
    target = (mix * low_pass)[:, tf.newaxis]  # (2, 1, 8, 1025, 2): the bass of the mixture
    losses = [float(trainer.train_step(mix, target)[0])]
    while len(losses) < 150 and losses[-1] >= 0.4 * losses[0]:
        losses.append(float(trainer.train_step(mix, target)[0]))
    print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f} in {len(losses) - 1} steps")
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])
    assert int(trainer.global_step.numpy()) == len(losses)


def test_bad_options_raise():
    with pytest.raises(ConfigError):
        BSRNN(channels=3)
    with pytest.raises(ConfigError):
        BSRNN(targets=[])
    with pytest.raises(ConfigError):
        BSRNN(lstm_implementation="cudnn")
    with pytest.raises(ConfigError):
        SqueezeExcitation(16, reduction=0)
    with pytest.raises(ConfigError, match="bins=1025"):
        _small()(tf.zeros([1, 4, 513, 2]))


# --- speed rewrites that must not change the function (fused path, per-band runs) ---------


def _perturb(model_or_layer, seed=0, scale=0.3):
    """Add noise to every weight (norm gains and biases included), so that no gain of one or bias
    of zero from the initialisers can hide a mistake."""
    rng = np.random.default_rng(seed)
    weights = model_or_layer.get_weights()
    model_or_layer.set_weights([w + scale * rng.standard_normal(w.shape).astype(w.dtype) for w in weights])


@pytest.mark.parametrize("squeeze_excitation", [False, True])
def test_fused_path_matches_keras_path_on_perturbed_weights(squeeze_excitation):
    # the fused path folds each block's norm gain and bias into the BLSTM's input weights and
    # sums the residual in one add: with non-trivial gains and biases it must still compute the
    # Keras layers' function, forward and backward
    model = _small(num_modules=2, squeeze_excitation=squeeze_excitation, lstm_implementation="keras")
    mix = _mixture(7)
    model(mix)
    _perturb(model)
    fused = BSRNN.from_config({**model.get_config(), "lstm_implementation": "fused"})
    fused(mix)
    fused.set_weights(model.get_weights())
    expected = model(mix, training=False).numpy()
    np.testing.assert_allclose(fused(mix, training=False), expected, atol=1e-5 * np.max(np.abs(expected)))
    weights = tf.random.stateless_normal(expected.shape, seed=[7, 8])
    grads = []
    for m in (model, fused):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(m(mix, training=True) * weights)
        grads.append([tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, m.trainable_variables)])
    for g_keras, g_fused, v in zip(*grads, model.trainable_variables):
        np.testing.assert_allclose(g_fused, g_keras, atol=1e-5 * max(1.0, np.max(np.abs(g_keras))), rtol=1e-3, err_msg=v.path)


@pytest.mark.parametrize("scheme", ["v7", "bass", "drums", "coarse"])
@pytest.mark.parametrize("chunks", [1, 2])
def test_band_runs_tile_the_bands_with_little_padding(scheme, chunks):
    widths = band_widths(scheme, 44100, 2048)
    layout = BandLayout([2 * chunks * w for w in widths], chunks)
    total = layout.total
    assert total == 2 * chunks * BINS
    runs = layout.runs
    assert runs[0][0] == 0 and runs[-1][1] == len(widths)
    assert all(a[1] == b[0] for a, b in zip(runs, runs[1:]))  # consecutive runs, every band once
    padded = np.concatenate([pad.ravel() for _, _, pad in runs])
    np.testing.assert_array_equal(padded[layout.unpad_index], np.arange(total))  # unpad inverts the padding
    assert np.sum(padded < total) == total  # every value once; the rest is the zero slot
    assert len(runs) <= 6 and padded.size <= 1.05 * total  # one layout for all 41 v7 bands: 3.8 x
    for first, stop, pad in runs:  # a band's chunks hold its values in order, each padded on its own
        for j, size in enumerate(layout.sizes[first:stop]):
            values = pad[j].reshape(chunks, -1)[:, : size // chunks]
            np.testing.assert_array_equal(values.ravel(), sum(layout.sizes[: first + j]) + np.arange(size))


def _chain(layers, x, seed):
    """Build `layers` as a chain on x with perturbed weights; returns the chain's output."""
    for i, layer in enumerate(layers):
        layer.build(x.shape)
        _perturb(layer, seed=10 * seed + i)
        x = layer(x)
    return x


@pytest.mark.parametrize("scheme,channels", [("v7", 1), ("drums", 2), ("coarse", 2)])
def test_band_split_and_mask_estimator_match_one_dense_per_band(scheme, channels):
    """The paper's per-band reading with plain Keras layers, one set per band: band k's values
    (its bins' channel x real/imag values, as BSRNN lays out the spectrum) -> LayerNormalization
    -> Dense(N); band k's features -> LayerNormalization -> Dense(hidden, tanh) -> Dense(2 x its
    values) -> GLU. Their weights, written into ours at each band's place (rows of the band
    split's kernel, [value | gate] columns of the mask's), must give the same outputs."""
    widths = band_widths(scheme, 44100, 2048)
    k, n, h, per_bin = len(widths), 6, 10, 2 * channels
    spectrum = tf.random.stateless_normal([2, 3, BINS, channels, 2], seed=[1, 2])  # (B, T, F, C, 2)
    features = tf.random.stateless_normal([2, 3, k, n], seed=[3, 4])  # (B, T, K, N)
    split_layers, mask_layers, split_out, mask_out = [], [], [], []
    start = 0
    for band, width in enumerate(widths):
        values = tf.reshape(spectrum[:, :, start : start + width], [2, 3, width * per_bin])
        split_layers.append((keras.layers.LayerNormalization(epsilon=1e-5), keras.layers.Dense(n)))
        split_out.append(_chain(split_layers[-1], values, seed=2 * band))  # (B, T, N)
        mask_layers.append((keras.layers.LayerNormalization(epsilon=1e-5), keras.layers.Dense(h, activation="tanh"),
                            keras.layers.Dense(2 * width * per_bin)))
        value, gate = np.split(_chain(mask_layers[-1], features[:, :, band], seed=2 * band + 1).numpy(), 2, axis=-1)
        mask_out.append(value / (1 + np.exp(-gate)))  # GLU, (B, T, values)
        start += width
    split, head = BandSplit(widths, n, per_bin), MaskEstimator(widths, n, h, per_bin)
    split.build(None)
    head.build(None)
    norms, denses = zip(*split_layers)
    split.set_weights([np.concatenate([m.gamma.numpy() for m in norms]), np.concatenate([m.beta.numpy() for m in norms]),
                       np.concatenate([d.kernel.numpy() for d in denses]), np.stack([d.bias.numpy() for d in denses])])
    norms, hidden, glu = zip(*mask_layers)
    head.set_weights([np.stack([m.gamma.numpy() for m in norms]), np.stack([m.beta.numpy() for m in norms]),
                      np.stack([d.kernel.numpy() for d in hidden]), np.stack([d.bias.numpy() for d in hidden]),
                      np.concatenate([d.kernel.numpy() for d in glu], axis=1), np.concatenate([d.bias.numpy() for d in glu])])
    got = split(tf.reshape(spectrum, [2, 3, -1])).numpy()  # (B, T, K, N)
    np.testing.assert_allclose(got, np.stack(split_out, axis=2), atol=1e-4)
    got = head(features).numpy()  # (B, T, F * C * 2), in the spectrum's value order
    np.testing.assert_allclose(got, np.concatenate(mask_out, axis=-1), atol=1e-4)


def test_variable_layout_is_unchanged():
    """Checkpoints are keyed by the order of `model.weights` (mss_tf/checkpoints.py): every
    variable keeps its name, shape and place, whatever the layers do with it when they run."""
    model = _small(squeeze_excitation=True, targets=["vocals", "bass"])
    model(_mixture(3, batch=1))
    got = [(re.sub(r"_lstm_\d+/", "_lstm/", v.path.split("/", 1)[1]), tuple(v.shape)) for v in model.weights]
    lstm = lambda path: [(f"{path}/lstm_cell/kernel", (8, 64)), (f"{path}/lstm_cell/recurrent_kernel", (16, 64)),
                         (f"{path}/lstm_cell/bias", (64,))]
    block = lambda path: [
        (f"{path}/norm/gamma", (8,)), (f"{path}/norm/beta", (8,)),
        *lstm(f"{path}/blstm/blstm/forward_lstm"), *lstm(f"{path}/blstm/blstm/backward_lstm"),
        (f"{path}/projection/kernel", (32, 8)), (f"{path}/projection/bias", (8,)),
        (f"{path}/se/squeeze/kernel", (8, 2)), (f"{path}/se/squeeze/bias", (2,)),
        (f"{path}/se/excite/kernel", (2, 8)), (f"{path}/se/excite/bias", (8,)),
    ]
    head = lambda target: [
        (f"mask_{target}/norm_gamma", (12, 8)), (f"mask_{target}/norm_beta", (12, 8)),
        (f"mask_{target}/hidden_kernel", (12, 8, 32)), (f"mask_{target}/hidden_bias", (12, 32)),
        (f"mask_{target}/glu/kernel", (32, 4100)), (f"mask_{target}/glu/bias", (4100,)),
    ]
    expected = [
        ("band_split/norm_gamma", (2050,)), ("band_split/norm_beta", (2050,)),
        ("band_split/dense/kernel", (2050, 8)), ("band_split/dense/bias", (12, 8)),
        *block("band_sequence_0/time_rnn"), *block("band_sequence_0/band_rnn"), *head("vocals"), *head("bass"),
    ]
    assert got == expected


# --- loss -------------------------------------------------------------------------------


def test_bsrnn_paper_loss_terms():
    stft = SpectrogramConfig(44100, 2048, 512)
    target = tf.random.stateless_normal([2, 1, 6, BINS, 2], seed=[1, 2])
    estimate = tf.random.stateless_normal([2, 1, 6, BINS, 2], seed=[3, 4])
    loss_fn = get_loss("bsrnn_paper", stft=stft, alpha=0.5)  # alpha is dropped for this loss
    assert float(loss_fn(target, target)) == pytest.approx(0.0, abs=1e-6)
    spectral = np.mean(np.abs(estimate.numpy() - target.numpy()), axis=tuple(range(4)))
    to_wave = lambda s: istft(tf.complex(s[..., 0], s[..., 1]), stft, 5 * stft.hop).numpy()
    waveform = np.mean(np.abs(to_wave(estimate) - to_wave(target)))
    assert float(loss_fn(target, estimate)) == pytest.approx(spectral.sum() + waveform, rel=1e-4)
    assert float(bsrnn_paper(target, estimate)) == pytest.approx(float(loss_fn(target, estimate)), rel=1e-6)
    with pytest.raises(ConfigError, match="bins"):
        get_loss("bsrnn_paper", stft=SpectrogramConfig(16000, 1024, 512))(target, estimate)


# --- paper size (slow) --------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["bsrnn", "bsrnn-se"])
def test_paper_size_forward_pass(preset):
    model = build_model(preset)
    out = model(_mixture(16, batch=1), training=False)
    assert out.shape == (1, 1, 16, BINS, 2) and np.all(np.isfinite(out.numpy()))
    print(f"{preset}: {model_parameters(model):,} parameters")


@pytest.mark.slow
def test_paper_size_parameter_counts_se_adds_under_one_percent():
    counts = _parameter_counts(["bsrnn", "bsrnn-se"])
    se_params = 24 * (128 * 8 + 8 + 8 * 128 + 128)
    assert counts["bsrnn-se"] - counts["bsrnn"] == se_params
    assert se_params / counts["bsrnn"] < 0.01


@pytest.mark.slow
def test_paper_size_every_se_block_changes_the_output():
    model = build_model("bsrnn-se", lstm_implementation="fused")
    mix = _mixture(4, batch=1)
    reference = model(mix, training=False).numpy()
    for i, block in enumerate(model.se_blocks):
        changed = np.max(np.abs(_output_without(model, block, mix) - reference))
        assert changed > 1e-5 * np.max(np.abs(reference)), f"SE block {i} does not change the output"


def test_blstms_build_inside_keras_object_sharing_scope():
    """keras.models.load_model builds layers inside an ObjectSharingScope, which matches objects by
    id(): Bidirectional's copy of a fresh LSTM could be swapped for an earlier one (a flaky
    ValueError, both directions going backwards, a few times in a hundred constructions)."""
    from keras.src.saving.serialization_lib import ObjectSharingScope

    from mss_tf.models.lstm import BidirectionalLSTM

    with ObjectSharingScope():
        layers = [BidirectionalLSTM(4) for _ in range(150)]
    assert all(not layer.rnn.forward_layer.go_backwards and layer.rnn.backward_layer.go_backwards for layer in layers)
