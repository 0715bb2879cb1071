"""File writing shared by searchers and schedulers: state files that a kill can never leave half-written."""

import contextlib
import os
import tempfile


def write_atomically(path: str, data: bytes) -> None:
    """Replace the file at ``path`` by ``data`` all at once: a reader (or a restore after a crash) sees the old
    content or the new one, never a part (a temporary file in the same folder, flushed, then renamed)."""
    folder, name = os.path.split(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
