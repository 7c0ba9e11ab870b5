"""`python -m mss_tf.convert`: the `mss-convert` command (mss_tf.cli.convert)."""

if __name__ == "__main__":
    from mss_tf.cli.convert import run  # the CLI plumbing first, so TensorFlow starts quietly

    run()
