"""Audio longer than memory should hold, in blocks: ``AudioReader`` reads a file block by block
(libsndfile; formats it cannot open are decoded whole), ``AudioWriter`` writes blocks to a
temporary file renamed into place when complete (``mss_tf.inference.separate_file``; resampling
a stream is ``mss_tf.audio.resample.StreamResampler``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np

from mss_tf.audio.decode import check_file, cut_short, load_audio
from mss_tf.audio.encode import MAX_CHANNELS, check_writable, write_format
from mss_tf.errors import AudioError
from mss_tf.utils import one_line, temporary_path

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
        check_file(path_str)
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
        # as load_audio: libsndfile quietly stops early in a cut mp3
        if cut_short(self.frames or 0, decoded):
            raise AudioError(
                f"{self.path}: truncated audio file (header declares {self.frames} frames, decoded {decoded})"
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
        file_format, subtype, self._clip = write_format(self.path)
        if file_format == "WAV" and frames_hint and frames_hint * channels * 4 > 0xFFFFFFFF - (1 << 20):
            file_format = "RF64"
        check_writable(self.path, file_format, subtype)
        if not 0 < int(channels) <= MAX_CHANNELS:
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
