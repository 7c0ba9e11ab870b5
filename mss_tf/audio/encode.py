"""Writing audio files, atomically, with soundfile: ``.wav`` as 32-bit float (stems keep their
exact values, including peaks above 0 dBFS, which museval and re-mixing need), ``.flac`` as
16-bit PCM, ``.ogg`` as Vorbis and ``.mp3`` when libsndfile can encode it (these three clipped
to [-1, 1]). ``save_audio(..., reproducible=True)`` writes the float ``.wav`` itself, without
libsndfile's PEAK chunk (which holds the time of writing), so equal samples give equal bytes.
Files are written to a temporary name beside the target and renamed into place, so a crash
never leaves a half-written file under the final name.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from mss_tf.errors import AudioError
from mss_tf.utils import atomic_path, one_line

# extension -> (libsndfile format, subtype, is an integer format that must be clipped)
WRITE_FORMATS = {
    ".wav": ("WAV", "FLOAT", False),
    ".wave": ("WAV", "FLOAT", False),
    ".flac": ("FLAC", "PCM_16", True),
    ".ogg": ("OGG", "VORBIS", True),
    ".mp3": ("MP3", "MPEG_LAYER_III", True),
}

# A (channels, samples) array passed by mistake would otherwise be written as a
# file with thousands of channels.
MAX_CHANNELS = 32


def write_format(path: str) -> tuple[str, str, bool]:
    """(libsndfile format, subtype, clip to [-1, 1]) for the extension of `path`; AudioError for
    an extension that is not written."""
    extension = Path(path).suffix.lower()
    if extension not in WRITE_FORMATS:
        raise AudioError(
            f"{path}: cannot write {extension or 'extension-less'} files "
            f"(use one of {', '.join(sorted(WRITE_FORMATS))})"
        )
    return WRITE_FORMATS[extension]


def check_writable(path: str, file_format: str, subtype: str) -> None:
    """AudioError naming `path` when this libsndfile cannot write `file_format`/`subtype`."""
    import soundfile as sf

    if not sf.check_format(file_format, subtype):
        raise AudioError(
            f"{path}: this libsndfile ({sf.__libsndfile_version__}) cannot write {file_format}/{subtype}"
        )


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
    file_format, subtype, is_integer = write_format(path_str)
    if reproducible and file_format != "WAV":
        raise AudioError(f"{path_str}: reproducible writing is for .wav files only")
    check_writable(path_str, file_format, subtype)

    samples = np.asarray(audio, dtype=np.float32)
    if samples.ndim == 1:
        samples = samples[:, None]  # (samples, 1)
    if samples.ndim != 2 or samples.shape[1] == 0 or samples.shape[1] > MAX_CHANNELS:
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
