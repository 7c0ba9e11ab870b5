"""MUSDB18's multi-stream ``.stem.mp4`` files, decoded one stream at a time by stempeg (ffmpeg
and ffprobe must be on PATH; stempeg is imported only then): ``stem_info`` probes a file,
``load_stem`` decodes one stream."""

from __future__ import annotations

import os
import shutil

import numpy as np

from mss_tf.errors import AudioError
from mss_tf.utils import one_line

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
