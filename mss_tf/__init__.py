"""mss-tf: music source separation in TensorFlow/Keras (BSRNN, BSRNN-SE, U-Net, NMF)."""

__version__ = "0.1.0"

TARGETS = ("vocals", "drums", "bass", "other")
