"""Separation of audio of any length (evaluate.py, separate.py, exports): one chunk plan, one
model call on a chunk, one overlap-add.

- `chunks`: `ChunkPlan` (where chunks start, how they are crossfaded), `separate_chunks` (STFT ->
  model -> iSTFT on a batch of chunks; mono models channel by channel, stereo models on both
  channels at once), `OverlapAdd` / `overlap_add` (NumPy, streaming) and `overlap_add_graph`
  (the same in TensorFlow ops, for an export's graph).
- `separator`: `WaveformSeparator` (in memory, streaming, files, Wiener post-filter, for any
  per-chunk model call) and `Separator` (a run's model in this process, `Separator.from_run`).
"""

from mss_tf.audio.waveform import fit_length
from mss_tf.inference.chunks import (ChunkFunction, ChunkPlan, OverlapAdd, model_channels, overlap_add,
                                     overlap_add_graph, separate_chunks)
from mss_tf.inference.separator import (DEFAULT_CHUNK_SECONDS, DEFAULT_OVERLAP_SECONDS, Separator, StreamingSeparation,
                                        WaveformSeparator, check_separation_options, default_chunk_seconds,
                                        separate_file, wiener_filter)

__all__ = [
    "ChunkFunction", "ChunkPlan", "DEFAULT_CHUNK_SECONDS", "DEFAULT_OVERLAP_SECONDS", "OverlapAdd", "Separator",
    "StreamingSeparation", "WaveformSeparator", "check_separation_options", "default_chunk_seconds", "fit_length",
    "model_channels", "overlap_add", "overlap_add_graph", "separate_chunks", "separate_file", "wiener_filter",
]
