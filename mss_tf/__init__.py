"""mss-tf: music source separation in TensorFlow/Keras (BSRNN, BSRNN-SE, U-Net, NMF)."""

import os as _os
import sys as _sys

__version__ = "0.1.0"

TARGETS = ("vocals", "drums", "bass", "other")  # the stems, in the order of every shard and output
SOURCES = ("mixture",) + TARGETS  # the audio files of a MUSDB18-HQ track

# TensorFlow's oneDNN kernels (matmul, einsum, transpose, conv) are on by default only on CPUs
# with AVX-512 VNNI/AMX; on AVX2 machines they are still faster for our models
# (benchmarks/RESULTS.md times the paper-size BSRNN with and without them). The switch is read
# when TensorFlow is imported, so it only takes effect when mss_tf is imported first (every
# entry point of the suite does); a value the user set, e.g. TF_ENABLE_ONEDNN_OPTS=0, is kept.
if "tensorflow" not in _sys.modules:
    _os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
