"""Serve the local separation page for one model.

    python -m mss_tf.app --model runs/unet-demo              # then open http://127.0.0.1:8000/
    python -m mss_tf.app --model runs/unet-demo/export --port 8080 --max-upload-mb 500

The page takes an audio file (wav, flac, mp3, ogg, m4a, ...), separates it with the model (the
streaming separator of separate.py: same stems, same lengths), shows the progress, and offers
each stem to listen to, as a spectrogram and as a download (wav 32-bit float, flac 16-bit).
Files stay on this machine: the server binds 127.0.0.1 unless --host says otherwise, and keeps
each job's files in a temporary folder removed when it stops (Ctrl-C or SIGTERM). One song is separated at
a time; up to --queue songs wait or run, one more upload is answered 429 (too many requests),
a larger file than --max-upload-mb 413 and a file that is not audio 415.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from mss_tf import cli
from mss_tf.app.server import DEFAULT_MAX_UPLOAD_MB, DEFAULT_QUEUE


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(prog="python -m mss_tf.app", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True,
                        help="a train.py run directory (its best checkpoint) or a SavedModel (train.py --export)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB, metavar="N",
                        help=f"largest upload accepted, in MB; larger ones get HTTP 413 (default {DEFAULT_MAX_UPLOAD_MB:g})")
    parser.add_argument("--queue", type=int, default=DEFAULT_QUEUE, metavar="N",
                        help=f"songs waiting or being separated at once; one more gets HTTP 429 (default {DEFAULT_QUEUE})")
    parser.add_argument("--chunk-seconds", type=float,
                        help="separation chunk length in seconds (default: the model's, as separate.py)")
    cli.add_separation_flags(parser)
    parser.add_argument("--log-requests", action="store_true", help="print a line per HTTP request")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.max_upload_mb > 0:
        parser.error(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    if args.queue < 1:
        parser.error(f"--queue must be at least 1, got {args.queue}")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be 0..65535, got {args.port}")
    from mss_tf.threads import configure_threads, model_class_at, parse_threads

    configure_threads(parse_threads(args.threads), model_class_at(args.model))  # before TensorFlow's first op
    from mss_tf.app.server import SeparationApp, make_server, serve
    from mss_tf.export import load_separator

    separator = load_separator(args.model, precision=args.precision, chunk_seconds=args.chunk_seconds,
                               overlap_seconds=args.overlap)
    app = SeparationApp(separator, args.model.resolve().name, args.max_upload_mb, args.queue)
    try:
        server = make_server(app, args.host, args.port, verbose=args.log_requests)
    except OSError as exc:
        app.close()
        from mss_tf.errors import ConfigError

        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    # a service manager's SIGTERM stops it as Ctrl-C does: the jobs' files are removed
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    host, port = server.server_address[:2]
    print(f"separating with {args.model} ({', '.join(separator.targets)}); open http://{host}:{port}/ "
          "(Ctrl-C stops the server and removes its files)", flush=True)
    serve(app, server)
    return 0


def run() -> None:
    """The `mss-app` command: `main` with typed errors as one `error: ...` line, exit code 2."""
    cli.run(main)
