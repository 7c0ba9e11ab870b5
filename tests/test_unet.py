import numpy as np
import pytest
import tensorflow as tf

from mss_tf.errors import ConfigError
from mss_tf.losses import mag_phase_l1
from mss_tf.models.registry import build_model, get_preset
from mss_tf.models.unet import UNet


def _mixture(frames=37, bins=513, batch=2, seed=0):
    return tf.random.stateless_normal([batch, frames, bins, 2], seed=[seed, 1])


@pytest.mark.parametrize("frames,bins", [(37, 513), (94, 513), (8, 16), (13, 21)])
def test_output_shape_pads_and_crops_back(frames, bins):
    model = UNet(filters=[4, 8, 8], bottleneck_filters=8)
    out = model(_mixture(frames, bins), training=False)
    assert out.shape == (2, 4, frames, bins, 2)


def test_mask_estimate_reuses_mixture_phase_and_is_bounded():
    model = UNet(filters=[4, 8, 8], bottleneck_filters=8)
    mix = _mixture()
    out = model(mix, training=False).numpy()
    mix = mix.numpy()
    mix_c = mix[..., 0] + 1j * mix[..., 1]
    for i in range(4):
        est = out[:, i, ..., 0] + 1j * out[:, i, ..., 1]
        ratio = est / mix_c
        assert np.allclose(ratio.imag, 0, atol=1e-4)  # same phase
        assert np.all(ratio.real >= 0) and np.all(ratio.real <= 1 + 1e-5)  # sigmoid mask


def test_magnitude_head_is_non_negative_and_can_exceed_mixture():
    model = UNet(filters=[4, 8, 8], bottleneck_filters=8, output="magnitude")
    mix = _mixture()
    out = model(mix, training=False).numpy()
    mag = np.sqrt((out**2).sum(-1))
    assert np.all(np.isfinite(out)) and np.all(mag >= 0)
    mix_c = mix.numpy()[..., 0] + 1j * mix.numpy()[..., 1]
    est = out[:, 0, ..., 0] + 1j * out[:, 0, ..., 1]
    assert np.allclose(np.angle(est[np.abs(est) > 1e-3]), np.angle(mix_c[np.abs(est) > 1e-3]), atol=1e-3)


def test_seed_architecture_filters():
    model = build_model("unet")
    model(_mixture(16, 24), training=False)
    convs = [model.encoder[i].conv.filters for i in range(3)]
    assert convs == [8, 16, 32]
    assert model.bottleneck.filters == 64
    assert model.bottleneck_drop.rate == pytest.approx(0.3)
    assert [d.upsample.filters for d in model.decoder] == [32, 16, 8]
    assert all(d.dropout.rate == pytest.approx(0.2) for d in model.decoder)
    assert model.head.kernel_size == (1, 1) and model.head.filters == 4
    assert get_preset("unet").stft.to_dict() == {"sample_rate": 16000, "n_fft": 1024, "hop": 512}


def test_gradients_reach_every_weight():
    model = build_model("unet-tiny")
    mix = _mixture(16, 40)
    target = tf.random.stateless_normal([2, 4, 16, 40, 2], seed=[3, 4])
    with tf.GradientTape() as tape:
        loss = mag_phase_l1(target, model(mix, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads)


def test_bad_options_raise():
    with pytest.raises(ConfigError):
        UNet(output="phase")
    with pytest.raises(ConfigError):
        UNet(filters=[8, 16])
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("transformer")
