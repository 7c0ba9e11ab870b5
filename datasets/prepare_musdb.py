"""Prepare MUSDB18 as STFT shards for a preset, or check a shard folder.
The program is `mss_tf.cli.prepare_musdb`, also installed as the `mss-prepare` command (see --help)."""

from mss_tf.cli.prepare_musdb import run

if __name__ == "__main__":
    run()
