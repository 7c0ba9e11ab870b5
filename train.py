"""Train, tune or export a separation model: `python train.py --model unet`.
The program is `mss_tf.cli.train`, also installed as the `mss-train` command (see --help)."""

from mss_tf.cli.train import run

if __name__ == "__main__":
    run()
