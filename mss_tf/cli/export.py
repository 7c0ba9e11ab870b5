"""The `mss-export` command: `python -m mss_tf.export` (the exporter's own main) as a console script."""

from __future__ import annotations

from mss_tf import cli


def main(argv: list[str] | None = None) -> int:
    """mss_tf.export's main with the one-line-error parser, as `python -m mss_tf.export` runs it."""
    from mss_tf.export import main as export_main

    return export_main(argv, parser_class=cli.ArgumentParser)


def run() -> None:
    """The `mss-export` command: `main` with typed errors as one `error: ...` line, exit code 2."""
    cli.run(main)


if __name__ == "__main__":
    run()
