"""`python -m mss_tf.app` (the `mss-app` command): mss_tf.cli.app."""

if __name__ == "__main__":
    from mss_tf.cli.app import run

    run()
