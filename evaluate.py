"""Evaluate a model (museval, uSDR) or compare evaluations: `python evaluate.py --run DIR`.
The program is `mss_tf.cli.evaluate`, also installed as the `mss-evaluate` command (see --help)."""

from mss_tf.cli.evaluate import run

if __name__ == "__main__":
    run()
