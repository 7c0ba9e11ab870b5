"""Waveform <-> spectrogram (tf.signal), resampling and audio file I/O."""
