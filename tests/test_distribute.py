"""The tf.data pipeline under tf.distribute: two logical CPU devices as two replicas."""

import subprocess
import sys
import textwrap

from tests.conftest import REPO


def test_mirrored_strategy_splits_batches_over_two_cpu_replicas(tone_musdb, tmp_path):
    # logical devices must be configured before TensorFlow initialises: use a fresh process
    script = textwrap.dedent(f"""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from mss_tf.audio.spectrogram import SpectrogramConfig
        from mss_tf.data.crops import CropConfig
        from mss_tf.data.pipeline import PipelineConfig, distribute, make_dataset
        from mss_tf.data.prepare import PrepareConfig, prepare_dataset
        stft = SpectrogramConfig(16000, 1024, 512)
        out = prepare_dataset({str(tone_musdb)!r}, {str(tmp_path / 's')!r}, stft,
                              PrepareConfig(crops=CropConfig(seconds=2.0)), splits=["train"], progress=False)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        ds = make_dataset(out / "train", stft, ["vocals"], PipelineConfig(batch_size=4, train_frames=8), seed=0)
        mixture, targets = next(iter(distribute(ds, strategy)))
        shapes = [tuple(t.shape) for t in strategy.experimental_local_results(mixture)]
        devices = [t.device for t in strategy.experimental_local_results(targets)]
        print(shapes, devices)
        assert strategy.num_replicas_in_sync == 2
        assert shapes == [(2, 8, 513, 2), (2, 8, 513, 2)], shapes
        assert devices[0].endswith("CPU:0") and devices[1].endswith("CPU:1"), devices
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
