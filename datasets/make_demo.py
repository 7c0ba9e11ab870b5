"""Build the procedural demo set: `python datasets/make_demo.py --out DIR`.
The program is `mss_tf.cli.make_demo`, also installed as the `mss-make-demo` command (see --help)."""

from mss_tf.cli.make_demo import run

if __name__ == "__main__":
    run()
