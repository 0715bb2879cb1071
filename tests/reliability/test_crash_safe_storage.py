"""A driver killed while Ray copies its experiment snapshot must leave the previous snapshot readable.

Ray writes snapshot files into the experiment folder in place through its storage file system; a kill in the
middle leaves them truncated and ``Tuner.restore`` starts the experiment again from scratch. The child process
here writes a new version of a snapshot file exactly as Ray's copy does (``open_output_stream``) and SIGKILLs
itself half-way; plain ``LocalFileSystem`` shows the damage, so the test can fail.
"""

import glob
import os
import signal
import subprocess
import sys

import pytest

OLD = b"complete previous snapshot " * 1000

_KILLED_HALF_WAY = """
import os, signal, sys
import pyarrow.fs
from tunekit.files import crash_safe_filesystem
fs = crash_safe_filesystem() if sys.argv[2] == "crash_safe" else pyarrow.fs.LocalFileSystem()
stream = fs.open_output_stream(sys.argv[1])
stream.write(b"half of the new snapshot")
stream.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""


def _write_and_get_killed(path: str, filesystem: str) -> None:
    child = subprocess.run([sys.executable, "-c", _KILLED_HALF_WAY, path, filesystem], timeout=120)
    assert child.returncode == -signal.SIGKILL


@pytest.mark.parametrize("filesystem", ["crash_safe", "local"])
def test_a_kill_during_a_write_leaves_the_previous_file_whole(tmp_path, filesystem):
    state = tmp_path / "searcher-state-2026-01-01_00-00-00.pkl"
    state.write_bytes(OLD)
    _write_and_get_killed(str(state), filesystem)
    if filesystem == "local":
        assert state.read_bytes() != OLD  # what Ray's default storage leaves behind
        return
    assert state.read_bytes() == OLD
    assert glob.glob(str(tmp_path / "searcher-state-*.pkl")) == [str(state)]  # the partial copy is never picked


def test_a_finished_write_replaces_the_file_and_leaves_no_partial_copy(tmp_path):
    from tunekit.files import crash_safe_filesystem

    state = tmp_path / "experiment_state.json"
    state.write_bytes(OLD)
    filesystem = crash_safe_filesystem()
    with filesystem.open_output_stream(str(state)) as stream:
        stream.write(b"new")
    filesystem.copy_file(str(state), str(tmp_path / "copy.json"))
    assert state.read_bytes() == b"new" and (tmp_path / "copy.json").read_bytes() == b"new"
    umask = os.umask(0)
    os.umask(umask)
    assert state.stat().st_mode & 0o777 == 0o666 & ~umask  # as readable as a plain write, not owner-only
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.json", "experiment_state.json"]



def test_a_copy_that_fails_half_way_leaves_the_previous_file_and_no_partial_copy(tmp_path, monkeypatch):
    import tunekit.files
    from tunekit.files import crash_safe_filesystem

    def copy_half_then_fail(source, target):
        target.write(source.read(4))
        raise OSError("the source vanished half-way")

    monkeypatch.setattr(tunekit.files.shutil, "copyfileobj", copy_half_then_fail)
    state, source = tmp_path / "searcher-state.pkl", tmp_path / "staged.pkl"
    state.write_bytes(OLD)
    source.write_bytes(b"the new snapshot")
    with pytest.raises(OSError, match="half-way"):
        crash_safe_filesystem().copy_file(str(source), str(state))
    assert state.read_bytes() == OLD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["searcher-state.pkl", "staged.pkl"]


def test_a_torn_copy_of_rays_trial_table_never_replaces_the_previous_one(tmp_path):
    """Ray rewrites ``experiment_state-*.json`` in place in its staging folder, possibly while the previous
    snapshot's upload reads it (seen in the kill sweep with snapshots after every event: the stored trial table
    was cut at character 184,195 and ``Tuner.restore`` started the experiment again from scratch)."""
    import json

    import pyarrow.fs

    from tunekit.files import crash_safe_filesystem

    staging, storage = tmp_path / "staging", tmp_path / "storage"
    staging.mkdir(), storage.mkdir()
    table = {"trial_data": [["{}", "{}"]] * 50, "runner_data": {}}
    whole = json.dumps(table).encode()
    (storage / "experiment_state-1.json").write_bytes(whole)
    (staging / "experiment_state-1.json").write_bytes(whole[: len(whole) // 2])  # read mid-rewrite
    (staging / "searcher-state-1.pkl").write_bytes(b"new searcher state")
    pyarrow.fs.copy_files(str(staging), str(storage), destination_filesystem=crash_safe_filesystem())
    assert (storage / "experiment_state-1.json").read_bytes() == whole
    assert (storage / "searcher-state-1.pkl").read_bytes() == b"new searcher state"
    assert sorted(p.name for p in storage.iterdir()) == ["experiment_state-1.json", "searcher-state-1.pkl"]

    table["runner_data"] = {"newer": True}
    (staging / "experiment_state-1.json").write_text(json.dumps(table))
    pyarrow.fs.copy_files(str(staging), str(storage), destination_filesystem=crash_safe_filesystem())
    assert json.loads((storage / "experiment_state-1.json").read_text())["runner_data"] == {"newer": True}
