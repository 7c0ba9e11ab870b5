"""The one audio file adapter: read, write, downmix and resample waveforms.

Every other module of mss_tf reads and writes audio through this file, so swapping the
decoder touches nothing else (as Spleeter's ``audio/adapter.py``). Two backends
decode single-stream files:

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
naming the path). Writing is identical in both backends and goes through
soundfile: ``.wav`` as 32-bit float (stems keep their exact values, including
peaks above 0 dBFS, which museval and re-mixing need), ``.flac`` as 16-bit PCM,
``.ogg`` as Vorbis and ``.mp3`` when libsndfile can encode it;
``save_audio(..., reproducible=True)`` writes the float ``.wav`` itself, without
libsndfile's PEAK chunk (which holds the time of writing), so equal samples give
equal bytes. Files are written to a temporary name beside the target and renamed
into place, so a crash never leaves a half-written file under the final name.
Resampling always uses soxr "HQ", whichever backend decodes:
``tfio.audio.resample`` is not accurate enough (a 440 Hz sine 44.1 -> 16 kHz is
off by up to 0.37 in amplitude).

MUSDB18's multi-stream ``.stem.mp4`` files are decoded here too, one stream at a time,
by stempeg (ffmpeg and ffprobe must be on PATH; stempeg is imported only then):
``stem_info`` probes a file, ``load_stem`` decodes one stream.

For audio longer than memory should hold, ``AudioReader`` reads a file in blocks (libsndfile;
formats it cannot open are decoded whole), ``StreamResampler`` resamples a stream of blocks
with the same samples as ``resample`` on the whole signal, and ``AudioWriter`` writes blocks to
a temporary file renamed into place when complete (``mss_tf.inference.separate_file``).
"""

from __future__ import annotations

import os
import shutil
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from mss_tf.errors import AudioError, ConfigError
from mss_tf.utils import atomic_path, one_line, temporary_path

__all__ = [
    "AudioReader",
    "AudioWriter",
    "FFMPEG_HINT",
    "StemInfo",
    "StreamResampler",
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
        return one_line(f"{type(error).__name__}: {error}")
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
    header = _check_file(path_str)

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


def _check_file(path_str: str) -> "_WavHeader | None":
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


# --------------------------------------------------------------------------- .stem.mp4 (MUSDB18)

FFMPEG_HINT = "install ffmpeg (e.g. `apt install ffmpeg`, `conda install ffmpeg`) or use MUSDB18-HQ (wav)"


def ffmpeg_problem() -> str | None:
    """Why ``.stem.mp4`` files cannot be decoded here, or None when ffmpeg and ffprobe are on PATH."""
    missing = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found on PATH"
    return None


def require_ffmpeg(path: str | os.PathLike) -> None:
    """Raise AudioError naming ``path`` when the ``.stem.mp4`` decoder cannot run."""
    problem = ffmpeg_problem()
    if problem is not None:
        raise AudioError(f"{path}: reading MUSDB18 .stem.mp4 files needs ffmpeg ({problem}); {FFMPEG_HINT}")


def _stempeg(path: str | os.PathLike):
    """Import stempeg (it raises at import without ffmpeg), mapping failures to AudioError."""
    require_ffmpeg(path)
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # stempeg imports the deprecated pkg_resources
            import stempeg
    except Exception as error:  # RuntimeError from stempeg.cmds, ImportError
        raise AudioError(
            f"{path}: cannot load the .stem.mp4 decoder stempeg ({one_line(error, 200)}); {FFMPEG_HINT}"
        ) from None
    return stempeg


class StemInfo:
    """The audio streams of a ``.stem.mp4`` as ffprobe reports them (made by ``stem_info``).

    Streams are numbered 0, 1, ... in file order (MUSDB18: mixture, drums, bass, other, vocals).
    """

    def __init__(self, path: str | os.PathLike, probe) -> None:
        self.path = path
        self._probe = probe  # stempeg.Info

    @property
    def streams(self) -> int:
        """The number of audio streams."""
        return int(self._probe.nb_audio_streams)

    def channels(self, stream: int) -> int:
        return self._probe.channels(stream)

    def sample_rate(self, stream: int) -> int:
        return self._probe.sample_rate(stream)

    def declared_samples(self, stream: int) -> int:
        """The samples a stream's header declares (0 when unknown)."""
        try:
            return int(round(float(self._probe.duration(stream)) * self._probe.sample_rate(stream)))
        except (KeyError, TypeError, ValueError):
            return 0


def stem_info(path: str | os.PathLike) -> StemInfo:
    """Probe a ``.stem.mp4`` (multi-stream mp4, decoded by stempeg through ffmpeg/ffprobe).

    Raises:
        AudioError: ffmpeg or stempeg missing, empty file, or not a readable mp4.
    """
    stempeg = _stempeg(path)
    if not os.path.isfile(path):
        raise AudioError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    try:
        probe = stempeg.Info(os.fspath(path))
    except Exception as error:
        raise AudioError(
            f"{path}: not a readable .stem.mp4 (truncated or corrupt; ffprobe: {_ffmpeg_error(error)})"
        ) from None
    return StemInfo(path, probe)


def load_stem(
    path: str | os.PathLike, stream: int, info: StemInfo | None = None, label: str | None = None
) -> tuple[np.ndarray, int]:
    """Decode one audio stream of a ``.stem.mp4`` as float32 ``(samples, channels)`` at its own rate.

    One ffmpeg process per call, so only this stream is held in memory. ``info`` (from
    ``stem_info``) saves probing the file again; ``label`` names the stream in messages
    (``file.stem.mp4 [stream 4: vocals]``). The decoded length is cut to the header's (AAC
    decodes to whole 1024-sample frames); a stream that decodes much shorter is truncated.

    Returns:
        ``(audio, rate)``.

    Raises:
        AudioError: the stream cannot be decoded or is truncated (and as ``stem_info``).
    """
    info = info if info is not None else stem_info(path)
    stempeg = _stempeg(path)
    where = f"{path} [stream {stream}: {label}]" if label else f"{path} [stream {stream}]"
    if not 0 <= stream < info.streams:
        raise AudioError(f"{where}: the file has {info.streams} audio streams")
    try:
        audio, _ = stempeg.read_stems(
            os.fspath(path),
            stem_id=info._probe.audio_stream_idx()[stream],
            always_3d=True,
            dtype=np.float32,
            info=info._probe,
            multiprocess=False,
        )
    except Exception as error:
        raise AudioError(f"{where}: cannot decode ({_ffmpeg_error(error)})") from None
    audio = np.ascontiguousarray(audio[0], dtype=np.float32)  # (samples, channels)
    declared = info.declared_samples(stream)
    if declared > 0:
        tolerance = max(4 * 1024, declared // 200)
        if audio.shape[0] < declared - tolerance:
            raise AudioError(
                f"{where}: truncated audio stream (header declares {declared} samples, decoded {audio.shape[0]})"
            )
        audio = audio[:declared]
    return audio, info.sample_rate(stream)


def _ffmpeg_error(error: Exception) -> str:
    """The last useful stderr line of an ffmpeg-python error, else the error text."""
    stderr = getattr(error, "stderr", None)
    if isinstance(stderr, bytes):
        lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
        if lines:
            return one_line(lines[-1], 200)
    return one_line(error, 200)


# --------------------------------------------------------------------------- writing


def save_audio(
    path: str | os.PathLike, audio: np.ndarray, sample_rate: int, reproducible: bool = False
) -> None:
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
        reproducible: ``.wav`` only: the same samples always give the same bytes. libsndfile
            adds a PEAK chunk holding the time of writing to float wav files; this writes the
            header itself, with a PAD chunk of the same size in its place (the layout
            libsndfile writes when told to leave the PEAK chunk out). The demo set uses it.

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
    if reproducible and file_format != "WAV":
        raise AudioError(f"{path_str}: reproducible writing is for .wav files only")
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
        raise AudioError(f"{path_str}: cannot create folder ({one_line(str(error))})") from None
    try:
        with atomic_path(target) as temporary:
            if reproducible:
                with open(temporary, "wb") as file:
                    file.write(_float_wav_header(*samples.shape, int(sample_rate)))
                    file.write(np.ascontiguousarray(samples, dtype="<f4").tobytes())
            else:
                sf.write(str(temporary), samples, int(sample_rate), format=file_format, subtype=subtype)
    except Exception as error:
        raise AudioError(f"{path_str}: cannot write audio ({one_line(str(error))})") from None


def _float_wav_header(frames: int, channels: int, sample_rate: int) -> bytes:
    """The header of a 32-bit float RIFF/WAVE file, laid out as libsndfile writes it with its
    PEAK chunk switched off: ``fmt `` (IEEE float), ``fact`` (frame count), a zero-filled ``PAD ``
    chunk where the PEAK chunk would be, then the ``data`` chunk header (samples follow)."""
    data_size = frames * channels * 4
    pad = 8 + 8 * channels  # the size of the PEAK chunk it stands in for
    if 4 + 24 + 12 + 8 + pad + 8 + data_size > 0xFFFFFFFF:
        raise ValueError(f"{frames} frames of {channels} channels do not fit in a RIFF wav (4 GB)")
    header = b"".join([
        b"WAVE",
        b"fmt " + struct.pack("<IHHIIHH", 16, 3, channels, sample_rate, sample_rate * 4 * channels, 4 * channels, 32),
        b"fact" + struct.pack("<II", 4, frames),
        b"PAD " + struct.pack("<I", pad) + bytes(pad),
        b"data" + struct.pack("<I", data_size),
    ])
    return b"RIFF" + struct.pack("<I", len(header) + data_size) + header


# --------------------------------------------------------------------------- signal


def mono(audio: np.ndarray) -> np.ndarray:
    """Average the channels of ``(samples, channels)`` audio into ``(samples, 1)``."""
    samples = np.asarray(audio, dtype=np.float32)
    if samples.ndim == 1:
        return samples[:, None]
    return samples.mean(axis=1, keepdims=True, dtype=np.float32)  # (samples, 1)


_mono = mono  # load_audio's ``mono`` argument shadows the function name


# soxr's quality setting of ``resample`` (librosa's "soxr_hq"): a stream
# resampled block by block gives the same samples as ``resample`` on the whole signal
# (tests/test_inference.py checks this to the last bit).
_SOXR_QUALITY = "HQ"


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample ``(samples, channels)`` audio from ``orig_sr`` to ``target_sr`` Hz.

    Uses soxr "HQ", one channel at a time: the samples of ``librosa.resample(...,
    res_type="soxr_hq")`` without the second librosa takes to import. Deterministic and
    alias-free to well past what separation metrics can see. The result has exactly
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
    import soxr

    length = int(round(samples.shape[0] * target_sr / orig_sr))
    resampled = np.zeros((length, samples.shape[1]), dtype=np.float32)
    for channel in range(samples.shape[1]):
        converted = soxr.resample(samples[:, channel], orig_sr, target_sr, quality=_SOXR_QUALITY)
        kept = min(length, converted.shape[0])  # soxr gives about `length`: trim or zero-pad to it
        resampled[:kept, channel] = converted[:kept]
    return resampled[:, 0] if squeeze else resampled


# --------------------------------------------------------------------------- streaming


class AudioReader:
    """An audio file read in blocks of float32 ``(frames, channels)``: ``load_audio`` one block at
    a time, so memory does not grow with the file.

    libsndfile (soundfile) decodes wav, flac, ogg and mp3 (libsndfile >= 1.1) block by block
    (``streamed`` is True). A format it cannot open (m4a / mp4 through audioread and ffmpeg) is
    decoded whole by ``load_audio`` and handed out in blocks: its memory is NOT bounded
    (``streamed`` is False). Streaming always decodes with libsndfile, whatever
    ``audio_backend()`` says (tensorflow-io decodes whole files only); wav and flac samples are
    the same either way, mp3 decoders may differ slightly.

    The checks of ``load_audio`` apply: a missing, empty, truncated or non-audio file raises
    ``AudioError`` here; NaN or infinite samples, a file without samples and an mp3 cut short
    raise it from ``blocks`` when found. Use as a context manager (or call ``close``).

    Attributes:
        sample_rate, channels: of the file.
        frames: the frame count the header declares (exact for wav, flac and the fallback;
            an estimate for mp3), or None when unknown.
        streamed: True when read block by block.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        import soundfile as sf

        self.path = path_str = os.fspath(path)
        _check_file(path_str)
        self._audio: np.ndarray | None = None
        try:
            self._file = sf.SoundFile(path_str)
        except (RuntimeError, TypeError, ValueError):  # LibsndfileError is a RuntimeError
            self._file = None
        if self._file is None:
            self._audio, self.sample_rate = load_audio(path_str)  # raises AudioError if not audio
            self.channels = int(self._audio.shape[1])
            self.frames: int | None = int(self._audio.shape[0])
            self.streamed = False
        else:
            self.sample_rate = int(self._file.samplerate)
            self.channels = int(self._file.channels)
            declared = int(self._file.frames)
            self.frames = declared if 0 <= declared < (1 << 62) else None
            self.streamed = True
            if self.frames == 0:
                self.close()
                raise AudioError(f"{path_str}: contains no audio samples")

    def blocks(self, block_frames: int) -> "Iterator[np.ndarray]":
        """Yield the file's samples as float32 ``(<= block_frames, channels)`` arrays, in order."""
        block_frames = max(1, int(block_frames))
        if self._audio is not None:
            for start in range(0, self._audio.shape[0], block_frames):
                yield self._audio[start : start + block_frames]
            return
        decoded = 0
        while True:
            try:
                block = self._file.read(block_frames, dtype="float32", always_2d=True)
            except (RuntimeError, TypeError, ValueError) as error:
                raise AudioError(
                    f"{self.path}: truncated or corrupt audio data ({one_line(str(error))})"
                ) from None
            if block.shape[0] == 0:
                break
            if not np.isfinite(block).all():
                raise AudioError(f"{self.path}: contains NaN or infinite samples")
            decoded += block.shape[0]
            yield block
        if decoded == 0:
            raise AudioError(f"{self.path}: contains no audio samples")
        # as _load_soundfile: libsndfile quietly stops early in a cut mp3
        declared = self.frames or 0
        if 0 < declared and decoded < declared - max(4 * 1152, declared // 200):
            raise AudioError(
                f"{self.path}: truncated audio file (header declares {declared} frames, decoded {decoded})"
            )

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._audio = None

    def __enter__(self) -> "AudioReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AudioWriter:
    """An audio file written in blocks, atomically: samples go to a temporary file beside
    ``path`` (``.<name>.tmp-<pid><ext>``), which ``commit`` renames into place once complete;
    ``abort`` (or leaving the ``with`` block by an exception) deletes it, so ``path`` is never
    half-written and an existing file there is replaced only by a complete one.

    Formats as ``save_audio``: ``.wav`` 32-bit float (RF64 when ``frames_hint`` says it would
    pass the 4 GB limit of RIFF), ``.flac`` 16-bit (clipped to [-1, 1]), ``.ogg``, ``.mp3``.

    Raises:
        AudioError: unknown extension, bad shape, NaN/inf samples, or a failed write.
    """

    def __init__(self, path: str | os.PathLike, sample_rate: int, channels: int,
                 frames_hint: int | None = None) -> None:
        import soundfile as sf

        self.path = os.fspath(path)
        target = Path(self.path)
        extension = target.suffix.lower()
        if extension not in _WRITE_FORMATS:
            raise AudioError(
                f"{self.path}: cannot write {extension or 'extension-less'} files "
                f"(use one of {', '.join(sorted(_WRITE_FORMATS))})"
            )
        file_format, subtype, self._clip = _WRITE_FORMATS[extension]
        if file_format == "WAV" and frames_hint and frames_hint * channels * 4 > 0xFFFFFFFF - (1 << 20):
            file_format = "RF64"
        if not sf.check_format(file_format, subtype):
            raise AudioError(
                f"{self.path}: this libsndfile ({sf.__libsndfile_version__}) cannot write {file_format}/{subtype}"
            )
        if not 0 < int(channels) <= _MAX_CHANNELS:
            raise AudioError(f"{self.path}: cannot write {channels} channels")
        self.channels = int(channels)
        self.frames = 0
        self.temporary = temporary_path(target)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._file = sf.SoundFile(str(self.temporary), "w", int(sample_rate), self.channels,
                                      subtype=subtype, format=file_format)
        except Exception as error:
            self._file = None
            self._remove_temporary()
            raise AudioError(f"{self.path}: cannot write audio ({one_line(str(error))})") from None

    def write(self, block: np.ndarray) -> None:
        """Append ``(frames, channels)`` samples."""
        samples = np.asarray(block, dtype=np.float32)
        if samples.ndim != 2 or samples.shape[1] != self.channels:
            raise AudioError(f"{self.path}: expected blocks shaped (frames, {self.channels}), got {samples.shape}")
        if self._file is None:
            raise AudioError(f"{self.path}: writer is closed")
        if not np.isfinite(samples).all():
            raise AudioError(f"{self.path}: refusing to write NaN or infinite samples")
        if self._clip:
            samples = np.clip(samples, -1.0, 1.0)
        try:
            self._file.write(samples)
        except Exception as error:
            raise AudioError(f"{self.path}: cannot write audio ({one_line(str(error))})") from None
        self.frames += samples.shape[0]

    def commit(self) -> None:
        """Close the temporary file and rename it to ``path``."""
        if self._file is None:
            raise AudioError(f"{self.path}: writer is closed")
        try:
            self._file.close()
            self._file = None
            os.replace(self.temporary, self.path)
        except Exception as error:
            self.abort()
            raise AudioError(f"{self.path}: cannot write audio ({one_line(str(error))})") from None

    def abort(self) -> None:
        """Close and delete the temporary file (nothing is written to ``path``)."""
        if self._file is not None:
            try:
                self._file.close()
            except Exception:
                pass
            self._file = None
        self._remove_temporary()

    def _remove_temporary(self) -> None:
        try:
            os.unlink(self.temporary)
        except OSError:
            pass

    def __enter__(self) -> "AudioWriter":
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None or self._file is not None:
            self.abort()


class StreamResampler:
    """``resample`` for a stream of ``(frames, channels)`` blocks (soxr HQ,
    ``soxr.ResampleStream``): the concatenated output of ``process`` and ``flush`` is exactly
    ``resample`` of the concatenated input, ``round(n * target_sr / orig_sr)`` samples (the
    flush pads or cuts the last ones as ``resample`` does). Equal rates pass blocks through.
    Memory is soxr's filter state, whatever the stream's length.
    """

    def __init__(self, orig_sr: int, target_sr: int, channels: int) -> None:
        self.orig_sr, self.target_sr, self.channels = int(orig_sr), int(target_sr), int(channels)
        if self.orig_sr <= 0 or self.target_sr <= 0:
            raise ConfigError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
        self._stream = None
        if self.orig_sr != self.target_sr:
            import soxr

            self._stream = soxr.ResampleStream(self.orig_sr, self.target_sr, self.channels,
                                               dtype="float32", quality=_SOXR_QUALITY)
        self.frames_in = 0
        self.frames_out = 0
        self._held = np.zeros((0, self.channels), np.float32)  # output beyond what may be emitted yet

    def _length(self) -> int:
        return int(round(self.frames_in * self.target_sr / self.orig_sr))  # as ``resample``

    def process(self, block: np.ndarray) -> np.ndarray:
        """Resample the next ``(frames, channels)`` block; returns the output ready so far."""
        samples = np.ascontiguousarray(block, dtype=np.float32)
        if samples.ndim != 2 or samples.shape[1] != self.channels:
            raise ConfigError(f"expected blocks shaped (frames, {self.channels}), got {samples.shape}")
        self.frames_in += samples.shape[0]
        if self._stream is None:
            self.frames_out += samples.shape[0]
            return samples
        out = self._stream.resample_chunk(samples, last=False)
        return self._emit(out, self._length())

    def flush(self) -> np.ndarray:
        """The rest of the output, once the input has ended: the total is then ``resample``'s length."""
        if self._stream is None:
            return np.zeros((0, self.channels), np.float32)
        out = self._stream.resample_chunk(np.zeros((0, self.channels), np.float32), last=True)
        out = self._emit(out, self._length())
        missing = self._length() - self.frames_out
        if missing > 0:
            out = np.concatenate([out, np.zeros((missing, self.channels), np.float32)])
            self.frames_out += missing
        return out

    def _emit(self, out: np.ndarray, limit: int) -> np.ndarray:
        """Output up to ``limit`` frames in total (never past ``resample``'s length); hold the rest."""
        if self._held.shape[0]:
            out = np.concatenate([self._held, out])
        n = max(0, min(out.shape[0], limit - self.frames_out))
        self._held = out[n:]
        self.frames_out += n
        return np.asarray(out[:n], dtype=np.float32).reshape(n, self.channels)


# --------------------------------------------------------------------------- helpers


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


