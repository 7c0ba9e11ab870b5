"""Split audio files into stems: `python separate.py song.mp3 --model RUN --out DIR`.
The program is `mss_tf.cli.separate`, also installed as the `mss-separate` command (see --help)."""

from mss_tf.cli.separate import run

if __name__ == "__main__":
    run()
