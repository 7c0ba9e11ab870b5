"""The `mss-convert` command: `python -m mss_tf.convert` (the converter's own main) as a console script."""

from __future__ import annotations

import argparse

from mss_tf import cli


def build_parser() -> argparse.ArgumentParser:
    """The converter's flags with the one-line-error parser."""
    from mss_tf.convert import build_parser as convert_parser

    return convert_parser(cli.ArgumentParser)


def main(argv: list[str] | None = None) -> int:
    """mss_tf.convert's main with the one-line-error parser, as `python -m mss_tf.convert` runs it."""
    from mss_tf.convert import main as convert_main

    return convert_main(argv, parser_class=cli.ArgumentParser)


def run() -> None:
    """The `mss-convert` command: `main` with typed errors as one `error: ...` line, exit code 2."""
    cli.run(main)


if __name__ == "__main__":
    run()
