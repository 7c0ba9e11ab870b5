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


def test_magnitude_head_estimates_relu_of_the_head_with_the_mixture_phase():
    """output="magnitude": |estimate| is relu(head) whatever the mixture's magnitude, so unlike a
    mask it can exceed the mixture, and a negative head gives silence, not a negative magnitude."""
    model = UNet(filters=[4, 8, 8], bottleneck_filters=8, output="magnitude")
    mix = _mixture()
    model(mix, training=False)
    mix_c = mix.numpy()[..., 0] + 1j * mix.numpy()[..., 1]  # (B, T, F); |mix| is Rayleigh, mean 1.25
    estimates = {}
    for head in (-1.0, 3.0):
        model.head.kernel.assign(tf.zeros_like(model.head.kernel))
        model.head.bias.assign(tf.fill(model.head.bias.shape, head))
        out = model(mix, training=False).numpy()  # (B, targets, T, F, 2)
        estimates[head] = out[..., 0] + 1j * out[..., 1]  # (B, targets, T, F)
    np.testing.assert_allclose(np.abs(estimates[-1.0]), 0.0, atol=1e-6)
    np.testing.assert_allclose(np.abs(estimates[3.0]), 3.0, rtol=1e-4)
    assert np.mean(np.abs(estimates[3.0]) > np.abs(mix_c)[:, np.newaxis]) > 0.95  # above the mixture nearly everywhere
    np.testing.assert_allclose(np.angle(estimates[3.0] * np.conj(mix_c)[:, np.newaxis]), 0.0, atol=1e-3)  # its phase


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


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_fused_batch_norm_is_keras_batch_norm(policy):
    """The U-Net's fused batch normalisation: Keras' outputs, input gradients and moving statistics
    (biased batch variance) in training and inference, with the same variables, so a checkpoint
    of either loads into the other."""
    import keras

    from mss_tf.models.unet import FusedBatchNormalization

    x = tf.random.stateless_normal([3, 7, 10, 5], seed=[2, 3]) * 4.0 + 1.5
    keras.mixed_precision.set_global_policy(policy)
    try:
        plain, fused = keras.layers.BatchNormalization(momentum=0.5), FusedBatchNormalization(momentum=0.5)
        plain.build(x.shape)
        fused.build(x.shape)
        assert [v.path.split("/")[-1] for v in fused.weights] == [v.path.split("/")[-1] for v in plain.weights]
        fused.set_weights([w + 0.1 * i for i, w in enumerate(plain.get_weights())])
        plain.set_weights(fused.get_weights())
        for training in (True, True, False):
            with tf.GradientTape(persistent=True) as tape:
                tape.watch(x)
                outputs = [layer(tf.cast(x, layer.compute_dtype), training=training) for layer in (plain, fused)]
                losses = [tf.reduce_sum(tf.cast(y, tf.float32) ** 3) for y in outputs]
            assert outputs[1].dtype == outputs[0].dtype
            tol = 1e-5 if policy == "float32" else 2e-2
            np.testing.assert_allclose(outputs[1].numpy().astype(np.float32), outputs[0].numpy().astype(np.float32),
                                       atol=tol, rtol=tol)
            np.testing.assert_allclose(tape.gradient(losses[1], x), tape.gradient(losses[0], x), rtol=max(tol, 1e-4),
                                       atol=max(tol, 1e-3))
            for a, b in zip(fused.get_weights(), plain.get_weights()):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # gamma, beta and the moving statistics
        assert not np.allclose(fused.moving_variance.numpy(), 1.0 + 0.3)  # the statistics did move
    finally:
        keras.mixed_precision.set_global_policy("float32")
