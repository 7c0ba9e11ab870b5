"""The one audio file adapter: read, write, downmix and resample waveforms.

Every other module of mss_tf reads and writes audio through this interface, so swapping the
decoder touches nothing else (as Spleeter's ``audio/adapter.py``). The work is split by job,
and every public name is importable from here:

- ``mss_tf.audio.decode``: the decoding backend (tensorflow-io when its compiled ops load,
  else soundfile; ``MSS_TF_AUDIO_BACKEND`` forces one) and ``load_audio``, with the checks
  every reader makes (a missing, empty, truncated or non-audio file, NaN samples: one
  ``AudioError`` naming the path).
- ``mss_tf.audio.stem_mp4``: MUSDB18's multi-stream ``.stem.mp4`` files (stempeg and ffmpeg),
  ``stem_info`` and ``load_stem``.
- ``mss_tf.audio.encode``: ``save_audio``, atomic (a temporary name renamed into place);
  ``.wav`` as 32-bit float, ``.flac`` 16-bit, ``.ogg``, ``.mp3``; ``reproducible=True`` gives
  equal bytes for equal samples.
- ``mss_tf.audio.resample``: soxr "HQ" for a whole signal (``resample``) and for a stream of
  blocks (``StreamResampler``), with the same samples, whichever backend decodes.
- ``mss_tf.audio.streams``: ``AudioReader`` and ``AudioWriter``, files read and written in
  blocks so memory does not grow with the song (``mss_tf.inference.separate_file``).
- ``mss_tf.audio.waveform``: ``mono`` (and ``fit_length``).
"""

from __future__ import annotations

from mss_tf.audio.decode import BACKEND_ENV, SOUNDFILE, TFIO, audio_backend, load_audio, reset_backend
from mss_tf.audio.encode import save_audio
from mss_tf.audio.resample import StreamResampler, resample
from mss_tf.audio.stem_mp4 import FFMPEG_HINT, StemInfo, ffmpeg_problem, load_stem, require_ffmpeg, stem_info
from mss_tf.audio.streams import AudioReader, AudioWriter
from mss_tf.audio.waveform import mono

__all__ = [
    "AudioReader",
    "AudioWriter",
    "BACKEND_ENV",
    "FFMPEG_HINT",
    "SOUNDFILE",
    "StemInfo",
    "StreamResampler",
    "TFIO",
    "audio_backend",
    "ffmpeg_problem",
    "load_audio",
    "load_stem",
    "mono",
    "require_ffmpeg",
    "resample",
    "reset_backend",
    "save_audio",
    "stem_info",
]
