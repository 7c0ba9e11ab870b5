"""Typed errors raised by the library; only the CLIs turn them into one-line messages."""


class MssError(Exception):
    """Base class of every error mss_tf raises on bad input."""


class ConfigError(MssError):
    """An unknown preset name, a bad option value or a mismatched STFT config."""


class DataError(MssError):
    """A missing path, a folder not in MUSDB18 layout, a missing stem, a bad track."""


class AudioError(DataError):
    """An audio file that cannot be read or written (not audio, truncated, NaN)."""


class ShardError(DataError):
    """A shard folder whose manifest is missing, mismatched or corrupt."""


class CheckpointError(MssError):
    """A run directory without a usable checkpoint or config."""


class DamagedCheckpointError(CheckpointError):
    """A checkpoint whose files are missing, truncated or corrupt (as opposed to intact files of
    another model): training can resume from an earlier one, inference cannot use it."""


class TrainingError(MssError):
    """A run that cannot go on: too many non-finite steps in a row, a resume that does not match."""
