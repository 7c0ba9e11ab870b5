"""Small helpers that every layer of mss_tf may import (standard library only, no TensorFlow).

- ``atomic_write`` and ``atomic_path``: a file is written under a temporary name in its own
  folder and renamed into place once complete, so a crash never leaves a half-written file under
  the final name and a failed write leaves an existing file untouched.
- ``one_line``: an error text squeezed onto one line of bounded length, for one-line messages.
- ``dataclass_from_dict``: a settings dataclass from its JSON form, refusing unknown keys.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, TypeVar

from mss_tf.errors import ConfigError

__all__ = ["atomic_path", "atomic_write", "dataclass_from_dict", "one_line", "temporary_path"]

T = TypeVar("T")


def temporary_path(path: str | os.PathLike) -> Path:
    """The temporary name ``.<stem>.tmp-<pid><suffix>`` beside ``path``.

    Hidden, in the same folder (so the final rename is atomic), and ending in the real
    extension, so writers that choose the format from the name (matplotlib, soundfile) still do.
    """
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer to create (``np.save``, ``savefig``, ...).

    When the block ends normally the file is renamed onto ``path``; when it raises, the temporary
    file is deleted and ``path`` is left as it was.
    """
    temporary = temporary_path(path)
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` (text, or bytes) to ``path`` through a temporary name and a rename."""
    with atomic_path(path) as temporary:
        if isinstance(data, (bytes, bytearray, memoryview)):
            temporary.write_bytes(data)
        else:
            temporary.write_text(data)


def one_line(text: object, limit: int = 300) -> str:
    """``str(text)`` with every run of whitespace (newlines too) made one space, cut to ``limit``
    characters (ending in ``...`` when cut)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def dataclass_from_dict(cls: type[T], data: Mapping[str, Any], what: str, tuples: Iterable[str] | None = None) -> T:
    """``cls(**data)`` for a settings dataclass read back from JSON: an unknown key is a
    one-line ConfigError naming ``what``; lists become tuples again (for the fields in
    ``tuples``, or for every field when it is None)."""
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {what} settings {unknown} (known: {sorted(known)})")
    convert = known if tuples is None else set(tuples)
    return cls(**{k: tuple(v) if k in convert and isinstance(v, list) else v for k, v in data.items()})
