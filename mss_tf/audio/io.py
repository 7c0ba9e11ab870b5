"""The one audio file adapter: read, write, downmix and resample waveforms.

Every other module reads and writes audio through this file, so swapping the
decoder touches nothing else (as Spleeter's ``audio/adapter.py``). Two backends
decode files:

- ``"tensorflow-io"``: ``tfio.audio.AudioIOTensor`` (wav, flac, mp3, ogg). Its
  compiled ops load only on the TensorFlow it was built for (2.16.x for 0.37.1).
- ``"soundfile"``: libsndfile through soundfile (wav, flac, ogg, and mp3 with
  libsndfile >= 1.1), then ``librosa.load`` (audioread) as a last resort.

The backend is chosen once per process: tensorflow-io when its ops load, else
soundfile. ``MSS_TF_AUDIO_BACKEND=fallback`` (or ``soundfile``) forces soundfile;
``MSS_TF_AUDIO_BACKEND=tfio`` forces tensorflow-io and fails loudly if it cannot
load. Every ``tensorflow_io`` import lives in this module, inside functions.

Both backends return the same thing: float32 ``(samples, channels)`` in
[-1, 1] for integer files, and the same typed errors (``AudioError``, one line,
naming the path). Writing is identical in both backends and goes through
soundfile: ``.wav`` as 32-bit float (stems keep their exact values, including
peaks above 0 dBFS, which museval and re-mixing need), ``.flac`` as 16-bit PCM,
``.ogg`` as Vorbis and ``.mp3`` when libsndfile can encode it. Files are written
to a temporary name beside the target and renamed into place, so a crash never
leaves a half-written file under the final name. Resampling always uses soxr
"HQ" via librosa, whichever backend decodes: ``tfio.audio.resample`` is not
accurate enough (a 440 Hz sine 44.1 -> 16 kHz is off by up to 0.37 in amplitude).
"""

from __future__ import annotations

import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mss_tf.errors import AudioError, ConfigError

__all__ = [
    "audio_backend",
    "load_audio",
    "mono",
    "resample",
    "reset_backend",
    "save_audio",
]

BACKEND_ENV = "MSS_TF_AUDIO_BACKEND"
TFIO = "tensorflow-io"
SOUNDFILE = "soundfile"

_FORCE_FALLBACK = {"fallback", "soundfile"}
_FORCE_TFIO = {"tfio", "tensorflow-io", "tensorflow_io"}
_AUTO = {"", "auto"}

# Formats tensorflow-io decodes; anything else goes to soundfile directly.
_TFIO_EXTENSIONS = {".wav", ".wave", ".flac", ".mp3", ".ogg"}

# extension -> (libsndfile format, subtype, is an integer format that must be clipped)
_WRITE_FORMATS = {
    ".wav": ("WAV", "FLOAT", False),
    ".wave": ("WAV", "FLOAT", False),
    ".flac": ("FLAC", "PCM_16", True),
    ".ogg": ("OGG", "VORBIS", True),
    ".mp3": ("MP3", "MPEG_LAYER_III", True),
}

# A (channels, samples) array passed by mistake would otherwise be written as a
# file with thousands of channels.
_MAX_CHANNELS = 32

_backend: str | None = None
_backend_lock = threading.Lock()


# --------------------------------------------------------------------------- backend


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
        return _one_line(f"{type(error).__name__}: {error}")
    return None


# --------------------------------------------------------------------------- reading


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

    if audio_backend() == TFIO and _tfio_can_decode(path_str, header):
        audio, rate = _load_tfio(path_str)
    else:
        audio, rate = _load_soundfile(path_str)

    if audio.shape[0] == 0:
        raise AudioError(f"{path_str}: contains no audio samples")
    if not np.isfinite(audio).all():
        raise AudioError(f"{path_str}: contains NaN or infinite samples")

    if mono:
        audio = _mono(audio)
    if sample_rate is not None and int(sample_rate) != rate:
        audio = resample(audio, rate, int(sample_rate))
        rate = int(sample_rate)
    return audio, rate


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
            f"{path}: not a readable audio file ({_one_line(str(sf_error))})"
        ) from None
    try:
        samples, rate = sf.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, TypeError, ValueError) as sf_error:
        raise AudioError(
            f"{path}: truncated or corrupt audio data ({_one_line(str(sf_error))})"
        ) from None
    # libsndfile quietly returns what it could decode from a cut mp3. The declared
    # length of an mp3 without a Xing header is an estimate, hence the tolerance
    # (4 mp3 frames or 0.5 %): a cut that loses less than that goes unnoticed.
    tolerance = max(4 * 1152, declared_frames // 200)
    if 0 < declared_frames < (1 << 62) and samples.shape[0] < declared_frames - tolerance:
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


# --------------------------------------------------------------------------- writing


def save_audio(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> None:
    """Write ``audio`` to ``path`` atomically; the format follows the extension.

    ``.wav`` is written as 32-bit float (values kept exactly, no clipping);
    ``.flac`` as 16-bit PCM, ``.ogg`` as Vorbis and ``.mp3`` (when libsndfile can
    encode it) are clipped to [-1, 1] first. Parent folders are created. The file
    is written under a temporary name in the same folder and renamed into place,
    so readers never see a partial file and a failed write leaves any existing
    file untouched.

    Args:
        path: destination file.
        audio: ``(samples, channels)`` or ``(samples,)`` array.
        sample_rate: in Hz.

    Raises:
        AudioError: unknown extension, bad shape, NaN/inf samples, or the write failed.
    """
    import soundfile as sf

    path_str = os.fspath(path)
    target = Path(path_str)
    extension = target.suffix.lower()
    if extension not in _WRITE_FORMATS:
        raise AudioError(
            f"{path_str}: cannot write {extension or 'extension-less'} files "
            f"(use one of {', '.join(sorted(_WRITE_FORMATS))})"
        )
    file_format, subtype, is_integer = _WRITE_FORMATS[extension]
    if not sf.check_format(file_format, subtype):
        raise AudioError(
            f"{path_str}: this libsndfile ({sf.__libsndfile_version__}) cannot "
            f"write {file_format}/{subtype}"
        )

    samples = np.asarray(audio, dtype=np.float32)
    if samples.ndim == 1:
        samples = samples[:, None]  # (samples, 1)
    if samples.ndim != 2 or samples.shape[1] == 0 or samples.shape[1] > _MAX_CHANNELS:
        raise AudioError(
            f"{path_str}: expected audio shaped (samples, channels), got {np.shape(audio)}"
        )
    if not np.isfinite(samples).all():
        raise AudioError(f"{path_str}: refusing to write NaN or infinite samples")
    if is_integer:
        samples = np.clip(samples, -1.0, 1.0)

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise AudioError(f"{path_str}: cannot create folder ({_one_line(str(error))})") from None
    # Keep the real extension last so anything sniffing the name sees the format.
    temporary = target.with_name(f".{target.stem}.tmp-{os.getpid()}{target.suffix}")
    try:
        sf.write(
            str(temporary), samples, int(sample_rate), format=file_format, subtype=subtype
        )
        os.replace(temporary, target)
    except Exception as error:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise AudioError(f"{path_str}: cannot write audio ({_one_line(str(error))})") from None


# --------------------------------------------------------------------------- signal


def mono(audio: np.ndarray) -> np.ndarray:
    """Average the channels of ``(samples, channels)`` audio into ``(samples, 1)``."""
    samples = np.asarray(audio, dtype=np.float32)
    if samples.ndim == 1:
        return samples[:, None]
    return samples.mean(axis=1, keepdims=True, dtype=np.float32)  # (samples, 1)


_mono = mono  # load_audio's ``mono`` argument shadows the function name


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample ``(samples, channels)`` audio from ``orig_sr`` to ``target_sr`` Hz.

    Uses soxr "HQ" (through librosa), deterministic and alias-free to well past
    what separation metrics can see. The result has exactly
    ``round(samples * target_sr / orig_sr)`` samples; equal rates return the input.
    """
    samples = np.asarray(audio, dtype=np.float32)
    orig_sr, target_sr = int(orig_sr), int(target_sr)
    if orig_sr <= 0 or target_sr <= 0:
        raise ConfigError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    if orig_sr == target_sr:
        return samples
    squeeze = samples.ndim == 1
    if squeeze:
        samples = samples[:, None]
    import librosa

    length = int(round(samples.shape[0] * target_sr / orig_sr))
    resampled = librosa.resample(
        samples, orig_sr=orig_sr, target_sr=target_sr, res_type="soxr_hq", axis=0
    )  # (about length, channels)
    resampled = librosa.util.fix_length(resampled, size=length, axis=0)
    resampled = np.ascontiguousarray(resampled, dtype=np.float32)
    return resampled[:, 0] if squeeze else resampled


# --------------------------------------------------------------------------- helpers


def _tf_error_text(error: Exception) -> str:
    """The useful part of a TensorFlow op error, without the function-node noise."""
    text = getattr(error, "message", None) or str(error)
    if "}} " in text:
        text = text.split("}} ", 1)[1]
    text = text.split(" [Op:", 1)[0]
    return _one_line(text)


def _reason(error: AudioError, path: str) -> str:
    """An AudioError's message without its leading ``"{path}: not a readable ... ("``."""
    text = str(error)
    text = text[len(path) + 2 :] if text.startswith(f"{path}: ") else text
    wrapper = "not a readable audio file ("
    if text.startswith(wrapper) and text.endswith(")"):
        text = text[len(wrapper) : -1]
    return text


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
