"""The local separation page: `python -m mss_tf.app --model RUN_OR_EXPORT` serves, on 127.0.0.1, a
page where a song is dropped, separated by the streaming separator of separate.py
(mss_tf.inference.separate_file) with its progress shown, and each stem heard, seen as a
spectrogram and downloaded (wav or flac). The server and its HTTP API: mss_tf.app.server."""

from mss_tf.app.server import DEFAULT_MAX_UPLOAD_MB, DEFAULT_QUEUE, SeparationApp, make_server, serve

__all__ = ["DEFAULT_MAX_UPLOAD_MB", "DEFAULT_QUEUE", "SeparationApp", "make_server", "serve"]
