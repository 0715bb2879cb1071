"""File writing that a kill can never leave half-written: state files of searchers and schedulers, and the
storage file system Ray copies experiment snapshots and checkpoints through."""

import contextlib
import fnmatch
import io
import json
import logging
import os
import shutil
import tempfile
from typing import Callable, Optional

import pyarrow
import pyarrow.fs

logger = logging.getLogger(__name__)

#: The process's file-creation mask: files appear with the permissions ``open`` would give them.
_UMASK = os.umask(0)
os.umask(_UMASK)


def write_atomically(path: str, data: bytes) -> None:
    """Replace the file at ``path`` by ``data`` all at once: a reader (or a restore after a crash) sees the old
    content or the new one, never a part (a temporary file in the same folder, flushed to disk, then renamed)."""
    with _ReplacedOnClose(os.path.abspath(path), sync=True) as file:
        file.write(data)


class _ReplacedOnClose(io.RawIOBase):
    """A write-only file that becomes visible at ``path`` only when closed (a temporary sibling until then).

    A ``with`` block that raises discards the temporary file and leaves ``path`` as it was. ``sync``: flush to
    disk before the rename (survives a power cut, not only a killed process). ``is_whole``: a check of the
    written file; when it fails the file is discarded too.
    """

    def __init__(self, path: str, sync: bool = False, is_whole: Optional[Callable[[str], bool]] = None):
        super().__init__()
        folder, name = os.path.split(path)
        handle, self._temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=folder or ".")
        os.fchmod(handle, 0o666 & ~_UMASK)  # mkstemp makes files private to their owner
        self._file, self._path, self._sync = os.fdopen(handle, "wb"), path, sync
        self._is_whole = is_whole

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        return self._file.write(data)

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        if not self.closed:
            if self._sync:
                self._file.flush()
                os.fsync(self._file.fileno())
            self._file.close()
            if self._is_whole is None or self._is_whole(self._temporary):
                os.replace(self._temporary, self._path)
            else:
                logger.warning("%s: the copy is not whole (its source was being rewritten); the previous version "
                               "is kept", self._path)
                self._discard()
        super().close()

    def __exit__(self, error_type, error, traceback) -> None:
        if error_type is None:
            self.close()
            return
        self._file.close()
        self._discard()
        super().close()

    def _discard(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._temporary)


#: Ray writes its trial table in place in the driver's staging folder, and may rewrite it while the previous
#: snapshot's copy to storage still reads it (with short snapshot periods): such a copy holds a torn file.
_REWRITTEN_IN_PLACE = "experiment_state-*.json"


def _parses_as_json(path: str) -> bool:
    try:
        with open(path, "rb") as file:
            json.load(file)
    except (ValueError, UnicodeDecodeError):
        return False
    return True


def _whole_check(path: str) -> Optional[Callable[[str], bool]]:
    """How to tell a whole copy of the file at ``path`` from a torn one (None: any complete write is whole)."""
    return _parses_as_json if fnmatch.fnmatch(os.path.basename(path), _REWRITTEN_IN_PLACE) else None


class _CrashSafeLocalHandler(pyarrow.fs.FileSystemHandler):
    """The local file system, except that a file being written replaces the old one only once complete."""

    def __init__(self):
        self._local = pyarrow.fs.LocalFileSystem()

    def __eq__(self, other) -> bool:
        return isinstance(other, _CrashSafeLocalHandler)

    def __hash__(self) -> int:
        return hash(type(self))

    def equals(self, other) -> bool:
        return self == other

    def get_type_name(self) -> str:
        return "tunekit-crash-safe-local"

    def normalize_path(self, path: str) -> str:
        return self._local.normalize_path(path)

    def get_file_info(self, paths: list) -> list:
        return self._local.get_file_info(paths)

    def get_file_info_selector(self, selector) -> list:
        return self._local.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        self._local.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self._local.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self._local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise OSError("tunekit's crash-safe file system never deletes the root folder's contents")

    def delete_file(self, path: str) -> None:
        self._local.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self._local.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        with open(src, "rb") as source, _ReplacedOnClose(dest, is_whole=_whole_check(dest)) as target:
            shutil.copyfileobj(source, target)

    def open_input_stream(self, path: str):
        return self._local.open_input_stream(path)

    def open_input_file(self, path: str):
        return self._local.open_input_file(path)

    def open_output_stream(self, path: str, metadata) -> pyarrow.NativeFile:
        return pyarrow.PythonFile(_ReplacedOnClose(path, is_whole=_whole_check(path)), mode="w")

    def open_append_stream(self, path: str, metadata):
        return self._local.open_append_stream(path)


def crash_safe_filesystem() -> pyarrow.fs.FileSystem:
    """A local storage file system for Ray Tune on which a killed driver never leaves a half-written file.

    Ray copies its experiment snapshot (trial table, searcher and scheduler state) from a staging folder into
    the experiment folder in place, so a kill during the copy can leave them truncated, and ``Tuner.restore``
    then restarts the whole experiment from scratch. Every file written through this file system appears
    complete or not at all (the previous version stays until then), and a copy of Ray's trial table that is not
    whole JSON (Ray rewrote its staging copy during the upload) never replaces the previous one. Use it for
    local or NFS storage:
    ``tune.RunConfig(storage_path=..., storage_filesystem=crash_safe_filesystem())`` and the same
    ``storage_filesystem`` in ``tune.Tuner.restore``.
    """
    return pyarrow.fs.PyFileSystem(_CrashSafeLocalHandler())
