"""Reading audio files: the decoding backend, `load_audio`, and the checks every reader makes.

Two backends decode single-stream files:

- ``"tensorflow-io"``: ``tfio.audio.AudioIOTensor`` (wav, flac, mp3, ogg). Its
  compiled ops load only on the TensorFlow it was built for (2.16.x for 0.37.1).
- ``"soundfile"``: libsndfile through soundfile (wav, flac, ogg, and mp3 with
  libsndfile >= 1.1), then ``librosa.load`` (audioread) as a last resort.

The backend is chosen once per process: tensorflow-io when its ops load, else
soundfile. ``MSS_TF_AUDIO_BACKEND=fallback`` (or ``soundfile``) forces soundfile;
``MSS_TF_AUDIO_BACKEND=tfio`` forces tensorflow-io and fails loudly if it cannot
load. Every ``tensorflow_io`` import for files lives in this module, inside
functions (the SpecAugment masks have their own adapter, ``mss_tf.audio.specaugment``).

Both backends return the same thing: float32 ``(samples, channels)`` in
[-1, 1] for integer files, and the same typed errors (``AudioError``, one line,
naming the path): a missing, empty, truncated or non-audio file, NaN samples.
"""

from __future__ import annotations

import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mss_tf.audio.resample import resample
from mss_tf.audio.waveform import mono as downmix
from mss_tf.errors import AudioError, ConfigError
from mss_tf.utils import one_line

BACKEND_ENV = "MSS_TF_AUDIO_BACKEND"
TFIO = "tensorflow-io"
SOUNDFILE = "soundfile"

_FORCE_FALLBACK = {"fallback", "soundfile"}
_FORCE_TFIO = {"tfio", "tensorflow-io", "tensorflow_io"}
_AUTO = {"", "auto"}

# Formats tensorflow-io decodes; anything else goes to soundfile directly.
_TFIO_EXTENSIONS = {".wav", ".wave", ".flac", ".mp3", ".ogg"}

_backend: str | None = None
_backend_lock = threading.Lock()


def audio_backend() -> str:
    """Return the decoding backend in use: ``"tensorflow-io"`` or ``"soundfile"``.

    Chosen on first call and cached; ``reset_backend()`` clears the cache so that
    ``MSS_TF_AUDIO_BACKEND`` is read again.

    Raises:
        ConfigError: ``MSS_TF_AUDIO_BACKEND`` has an unknown value, or is ``tfio``
            and tensorflow-io's compiled ops cannot load.
    """
    global _backend
    with _backend_lock:
        if _backend is None:
            _backend = _choose_backend()
        return _backend


def reset_backend() -> None:
    """Forget the chosen backend, so the next call re-reads ``MSS_TF_AUDIO_BACKEND``."""
    global _backend
    with _backend_lock:
        _backend = None


def _choose_backend() -> str:
    requested = os.environ.get(BACKEND_ENV, "").strip().lower()
    if requested in _FORCE_FALLBACK:
        return SOUNDFILE
    if requested in _FORCE_TFIO:
        problem = _tfio_problem()
        if problem is not None:
            raise ConfigError(
                f"{BACKEND_ENV}={requested}: tensorflow-io cannot load ({problem})"
            )
        return TFIO
    if requested in _AUTO:
        return TFIO if _tfio_problem() is None else SOUNDFILE
    raise ConfigError(
        f"{BACKEND_ENV}={requested!r}: expected one of auto, tfio, fallback, soundfile"
    )


def _tfio_problem() -> str | None:
    """Return why tensorflow-io is unusable, or None when its audio ops work.

    Importing the package is not enough: its ``.so`` files load lazily and fail
    on a TensorFlow they were not built for, so decode a tiny in-memory wav.
    """
    try:
        import tensorflow as tf
        import tensorflow_io as tfio

        # init_scope: run eagerly even when first asked while a tf.function or map is traced
        with tf.init_scope():
            wav = tf.audio.encode_wav(tf.zeros((4, 1), tf.float32), 8000)
            decoded = tfio.audio.decode_wav(wav, dtype=tf.int16)
        if tuple(decoded.shape) != (4, 1):
            return f"decode_wav returned shape {tuple(decoded.shape)}"
    except Exception as error:  # ImportError, NotImplementedError, tf.errors.*
        return one_line(f"{type(error).__name__}: {error}")
    return None

def load_audio(
    path: str | os.PathLike, sample_rate: int | None = None, mono: bool = False
) -> tuple[np.ndarray, int]:
    """Read an audio file as float32 ``(samples, channels)``.

    Args:
        path: a wav, flac, mp3 or ogg file (any format the backend decodes).
        sample_rate: resample to this rate (soxr HQ) when given and different.
        mono: average the channels into one, keeping the ``(samples, 1)`` shape.

    Returns:
        ``(audio, rate)``: float32 array ``(samples, channels)``, integer formats
        scaled to [-1, 1]; ``rate`` is ``sample_rate`` when given, else the file's.

    Raises:
        AudioError: missing file, not audio, empty, truncated, NaN/inf samples.
            The message is one line and starts with the path.
    """
    path_str = os.fspath(path)
    header = check_file(path_str)

    if audio_backend() == TFIO and _tfio_can_decode(path_str, header):
        audio, rate = _load_tfio(path_str)
    else:
        audio, rate = _load_soundfile(path_str)

    if audio.shape[0] == 0:
        raise AudioError(f"{path_str}: contains no audio samples")
    if not np.isfinite(audio).all():
        raise AudioError(f"{path_str}: contains NaN or infinite samples")

    if mono:
        audio = downmix(audio)
    if sample_rate is not None and int(sample_rate) != rate:
        audio = resample(audio, rate, int(sample_rate))
        rate = int(sample_rate)
    return audio, rate


def check_file(path_str: str) -> "_WavHeader | None":
    """The checks every reader makes before decoding: the file exists, is not a folder, is not
    empty and (for wav) holds the samples its header declares. Returns the wav header (or None)."""
    if not os.path.exists(path_str):
        raise AudioError(f"{path_str}: no such file")
    if os.path.isdir(path_str):
        raise AudioError(f"{path_str}: is a directory, not an audio file")
    if os.path.getsize(path_str) == 0:
        raise AudioError(f"{path_str}: empty file (0 bytes)")
    header = _read_wav_header(path_str)
    if header is not None and header.truncated:
        raise AudioError(
            f"{path_str}: truncated audio file (header declares {header.data_size} "
            f"bytes of samples, file holds {header.data_available})"
        )
    return header


def _tfio_can_decode(path: str, header: "_WavHeader | None") -> bool:
    if Path(path).suffix.lower() not in _TFIO_EXTENSIONS:
        return False
    # tensorflow-io 0.37 reinterprets 32-bit integer wav samples as float32 bits
    # (a 0.5 sine reads back as 2.0) and rejects 64-bit float wav; libsndfile
    # decodes both correctly.
    if header is not None and not header.tfio_decodes_correctly:
        return False
    return True


def _load_tfio(path: str) -> tuple[np.ndarray, int]:
    import tensorflow as tf
    import tensorflow_io as tfio

    try:
        audio_io = tfio.audio.AudioIOTensor(path)
        rate = int(audio_io.rate.numpy())
    except tf.errors.OpError as init_error:
        # The container was not recognised (e.g. AIFF, or not audio at all):
        # let libsndfile have a go before giving up, and report both reasons.
        try:
            return _load_soundfile(path)
        except AudioError as sf_error:
            raise AudioError(
                f"{path}: not a readable audio file (tensorflow-io: "
                f"{_tf_error_text(init_error)}; soundfile: {_reason(sf_error, path)})"
            ) from None
    try:
        samples = audio_io.to_tensor().numpy()
    except tf.errors.OpError as read_error:
        raise AudioError(
            f"{path}: truncated or corrupt audio data ({_tf_error_text(read_error)})"
        ) from None
    return _to_float32(samples), rate


def _load_soundfile(path: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        declared_frames = sf.info(path).frames
    except (RuntimeError, TypeError, ValueError) as sf_error:  # LibsndfileError is a RuntimeError
        audio = _load_audioread(path)
        if audio is not None:
            return audio
        raise AudioError(
            f"{path}: not a readable audio file ({one_line(str(sf_error))})"
        ) from None
    try:
        samples, rate = sf.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, TypeError, ValueError) as sf_error:
        raise AudioError(
            f"{path}: truncated or corrupt audio data ({one_line(str(sf_error))})"
        ) from None
    if cut_short(declared_frames, samples.shape[0]):
        raise AudioError(
            f"{path}: truncated audio file (header declares {declared_frames} "
            f"frames, decoded {samples.shape[0]})"
        )
    return np.ascontiguousarray(samples, dtype=np.float32), int(rate)


def _load_audioread(path: str) -> tuple[np.ndarray, int] | None:
    """Last resort for formats libsndfile lacks (needs ffmpeg or gstreamer)."""
    if Path(path).suffix.lower() in {".wav", ".wave", ".flac", ".ogg"}:
        return None  # libsndfile's verdict on these is final
    try:
        import warnings

        import librosa

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            samples, rate = librosa.load(path, sr=None, mono=False, dtype=np.float32)
    except Exception:
        return None
    samples = samples[:, None] if samples.ndim == 1 else samples.T
    return np.ascontiguousarray(samples, dtype=np.float32), int(rate)


def _to_float32(samples: np.ndarray) -> np.ndarray:
    """Scale decoded integer PCM to float32 [-1, 1]; floats pass unchanged."""
    if samples.ndim == 1:
        samples = samples[:, None]
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / np.float32(1 << 15)
    if samples.dtype == np.int32:  # 24-bit files arrive left-aligned in int32
        return (samples.astype(np.float64) / float(1 << 31)).astype(np.float32)
    if samples.dtype == np.uint8:
        return (samples.astype(np.float32) - 128.0) / np.float32(128.0)
    return np.ascontiguousarray(samples, dtype=np.float32)


@dataclass(frozen=True)
class _WavHeader:
    format_tag: int  # 1 = integer PCM, 3 = IEEE float
    bits_per_sample: int
    data_size: int  # as declared in the header
    data_available: int  # bytes actually present after the data chunk header

    @property
    def truncated(self) -> bool:
        # 0 and 0xFFFFFFFF mark "size unknown" in streamed wav files.
        if self.data_size in (0, 0xFFFFFFFF):
            return False
        return self.data_available < self.data_size

    @property
    def tfio_decodes_correctly(self) -> bool:
        if self.format_tag == 1:
            return self.bits_per_sample in (8, 16, 24)
        if self.format_tag == 3:
            return self.bits_per_sample == 32
        return False


def _read_wav_header(path: str) -> _WavHeader | None:
    """Parse a RIFF/WAVE header; None when the file is not a plain RIFF wav.

    libsndfile reads a wav whose data was cut short without complaint (it
    returns fewer frames), so the declared data size is checked here.
    """
    try:
        with open(path, "rb") as file:
            riff = file.read(12)
            if len(riff) < 12 or riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
                return None
            file_size = os.fstat(file.fileno()).st_size
            format_tag = bits = None
            while True:
                chunk = file.read(8)
                if len(chunk) < 8:
                    return None
                chunk_id, chunk_size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if chunk_id == b"fmt ":
                    fmt = file.read(chunk_size + (chunk_size & 1))
                    if len(fmt) < 16:
                        return None
                    format_tag, bits = struct.unpack("<H", fmt[:2])[0], struct.unpack(
                        "<H", fmt[14:16]
                    )[0]
                    if format_tag == 0xFFFE and len(fmt) >= 26:  # WAVE_FORMAT_EXTENSIBLE
                        format_tag = struct.unpack("<H", fmt[24:26])[0]
                elif chunk_id == b"data":
                    if format_tag is None:
                        return None
                    return _WavHeader(
                        format_tag=format_tag,
                        bits_per_sample=bits,
                        data_size=chunk_size,
                        data_available=file_size - file.tell(),
                    )
                else:
                    file.seek(chunk_size + (chunk_size & 1), os.SEEK_CUR)
    except (OSError, struct.error):
        return None


def cut_short(declared: int, decoded: int) -> bool:
    """Whether a file that declares `declared` frames and decoded to `decoded` was cut short.

    libsndfile quietly returns what it could decode from a cut mp3. The declared length of an
    mp3 without a Xing header is an estimate, hence the tolerance (4 mp3 frames or 0.5 %): a cut
    that loses less than that goes unnoticed. 0 (or a huge value) declares an unknown length.
    """
    return 0 < declared < (1 << 62) and decoded < declared - max(4 * 1152, declared // 200)


def _tf_error_text(error: Exception) -> str:
    """The useful part of a TensorFlow op error, without the function-node noise."""
    text = getattr(error, "message", None) or str(error)
    if "}} " in text:
        text = text.split("}} ", 1)[1]
    text = text.split(" [Op:", 1)[0]
    return one_line(text)


def _reason(error: AudioError, path: str) -> str:
    """An AudioError's message without its leading ``"{path}: not a readable ... ("``."""
    text = str(error)
    text = text[len(path) + 2 :] if text.startswith(f"{path}: ") else text
    wrapper = "not a readable audio file ("
    if text.startswith(wrapper) and text.endswith(")"):
        text = text[len(wrapper) : -1]
    return text


