"""Writing files and folders so that a failure leaves nothing half-written: into a temporary sibling, renamed into
place only once complete (save_compressed, the exporters, report's results.json)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

# The manifest of a folder written by tcompress.recipes.save_compressed: what marks a folder as compressed.
COMPRESSED_MANIFEST = "tcompress.json"


@contextlib.contextmanager
def atomic_directory(target: Path):
    """Yields an empty temporary sibling of ``target``; on success it replaces ``target``, on failure it is removed,
    so a failed export leaves no half-written folder (and an existing one untouched)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.rename(target, old / "x")
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(target: Path):
    """Yields a temporary sibling path of ``target``; on success it replaces ``target`` in one rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.partial-", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
