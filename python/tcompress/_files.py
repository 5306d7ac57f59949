"""Writing files and folders so that a failure leaves nothing half-written: into a temporary sibling, renamed into
place only once complete (save_compressed, the exporters, report's results.json).

Temporary siblings are named ``.NAME.partial-<pid>-<random>`` (and ``.NAME.old-<pid>-<random>`` while a folder is
replaced). SIGTERM during a write is turned into an exception like Ctrl-C, so the sibling is removed; what only SIGKILL
or a power cut can leave behind is removed by the next write to the same place, once the process that made it is gone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path

# The manifest of a folder written by tcompress.recipes.save_compressed: what marks a folder as compressed.
COMPRESSED_MANIFEST = "tcompress.json"


def display_path(path: str | os.PathLike) -> str:
    """``path`` as recorded in labels, results and reports: relative to ``$TCOMPRESS_DATA_DIR`` (written
    ``$TCOMPRESS_DATA_DIR/...``), to an installed package's site directory (``<site-packages>/...``) or to the
    working directory, so that a report says where its inputs came from without the paths of the machine it ran on.
    Anything else stays absolute."""
    import site
    import sysconfig

    resolved = Path(path).expanduser().resolve()
    data_dir = os.environ.get("TCOMPRESS_DATA_DIR")
    anchors = [("$TCOMPRESS_DATA_DIR", data_dir)] if data_dir else []
    site_dirs = {sysconfig.get_paths().get("purelib"), sysconfig.get_paths().get("platlib"), *site.getsitepackages()}
    anchors += [("<site-packages>", d) for d in sorted(d for d in site_dirs if d)]
    for name, anchor in anchors:
        try:
            return f"{name}/{resolved.relative_to(Path(anchor).expanduser().resolve()).as_posix()}"
        except ValueError:
            continue
    try:
        return resolved.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(resolved)


def _sibling_prefix(target: Path, kind: str) -> str:
    return f".{target.name}.{kind}-{os.getpid()}-"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_siblings(target: Path) -> list[Path]:
    """Removes the temporary siblings of ``target`` whose writing process no longer exists; returns them.

    A sibling of a live process (another save to the same place, still running) is left alone, as is anything not
    named like a sibling (``.NAME.partial-<pid>-...`` / ``.NAME.old-<pid>-...``).
    """
    removed = []
    if not target.parent.is_dir():
        return removed
    for kind in ("partial", "old"):
        for path in target.parent.glob(f".{target.name}.{kind}-*"):
            pid = path.name[len(f".{target.name}.{kind}-") :].split("-", 1)[0]
            if not pid.isdigit() or _process_alive(int(pid)):
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


class Terminated(SystemExit):
    """Raised in the main thread by SIGTERM while a file or folder is being written (exit status 143)."""


@contextlib.contextmanager
def _terminate_like_interrupt():
    """While the body runs, SIGTERM raises :class:`Terminated` instead of killing the process outright, so cleanup
    runs as it does for Ctrl-C. Only where Python may install handlers (the main thread) and the handler is the
    default one (a program's own SIGTERM handling is left alone)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def handler(signum, frame):
        raise Terminated(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def atomic_directory(target: Path):
    """Yields an empty temporary sibling of ``target``; on success it replaces ``target``, on failure (also SIGTERM)
    it is removed, so a failed export leaves no half-written folder (and an existing one untouched). Stale siblings of
    earlier writes that were killed are removed first."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(target)
    with _terminate_like_interrupt():
        tmp = Path(tempfile.mkdtemp(prefix=_sibling_prefix(target, "partial"), dir=target.parent))
        try:
            yield tmp
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=_sibling_prefix(target, "old"), dir=target.parent))
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
    """Yields a temporary sibling path of ``target``; on success it replaces ``target`` in one rename (on failure,
    also SIGTERM, it is removed; stale siblings of killed writes are removed first)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(target)
    with _terminate_like_interrupt():
        fd, name = tempfile.mkstemp(prefix=_sibling_prefix(target, "partial"), dir=target.parent)
        os.close(fd)
        tmp = Path(name)
        try:
            yield tmp
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
