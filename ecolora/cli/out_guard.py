"""Safe run folders: check ``--out`` before the run, lock it during, clean what a crash left.

Why a separate module: ``run_folder.py`` says what a run folder holds; this one says who may
write into it. The rules (issue 15):

* ``--out ''`` is refused (it would write the run into the current directory); so is an ``--out``
  that exists but is not a folder, or whose nearest existing parent is not a writable folder.
* An existing non-empty ``--out`` is refused unless ``--overwrite`` (which empties a folder that
  is an ecolora run folder, and only such a folder) or ``--resume``.
* The folder is locked with ``flock`` on ``OUT/.ecolora.lock`` for the whole run, so a second run
  into it (started, resumed or overwriting) is refused instead of mixing its files in. The lock
  is released by the kernel when the process dies, so a killed run never leaves a stale lock.
* Temporary files of interrupted atomic writes (``.NAME.*.tmp``, ``.adapter*`` folders) are
  removed once the lock is held: no other writer can own them then.

All checks before the run have no side effects, so bad input leaves nothing behind.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from ecolora.errors import ConfigError

LOCK_NAME = ".ecolora.lock"
MARKERS = ("config.json", LOCK_NAME)  # a folder holding one of these is an ecolora run folder


def out_path(text: str | None) -> Path | None:
    """``--out`` as a path; the empty string is refused rather than read as the current folder."""
    if text is None:
        return None
    if not text.strip():
        raise ConfigError("--out is empty; name a run folder (default runs/METHOD-seedS)")
    return Path(text).expanduser()


def check_out(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse an ``--out`` the run could not or must not write into; touches nothing."""
    if resume and overwrite:
        raise ConfigError("--overwrite and --resume exclude each other: --resume continues the "
                          "folder, --overwrite starts it again")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    if out.is_dir():
        if not os.access(out, os.W_OK | os.X_OK):
            raise ConfigError(f"--out {out} is not writable")
        entries = [e.name for e in out.iterdir() if e.name != LOCK_NAME]
        if entries and not resume:
            if not overwrite:
                raise ConfigError(f"--out {out} is not empty; pass --overwrite to replace that "
                                  f"run, --resume {out} to continue it, or choose another --out")
            if not any((out / m).exists() for m in MARKERS):
                raise ConfigError(f"--overwrite would empty {out}, which is not an ecolora run "
                                  "folder (no config.json); choose another --out")
        return
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"cannot create --out {out}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot create --out {out}: {parent} is not writable")


class RunLock:
    """An exclusive ``flock`` on ``OUT/.ecolora.lock``, held until ``release`` or process exit."""

    def __init__(self, out: Path) -> None:
        import fcntl

        path = out / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask applies
        except OSError as exc:
            raise ConfigError(f"cannot lock run folder {out}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            owner = _read_owner(fd)
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                who = f" (pid {owner})" if owner else ""
                raise ConfigError(f"run folder {out} is in use by another ecolora run{who}; "
                                  "wait for it to finish or choose another --out") from None
            raise ConfigError(f"cannot lock run folder {out}: {exc.strerror or exc}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd: int | None = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None


def _read_owner(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""


def make_folder(out: Path) -> None:
    """``mkdir -p`` with a one-line error (a race or a full disk after ``check_out`` passed)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create run folder {out}: {exc.strerror or exc}") from None


def claim(out: Path, resume: bool, overwrite: bool) -> None:
    """With the lock held: re-check emptiness (another run may have finished meanwhile), empty
    the folder for ``--overwrite`` and drop temporary files of interrupted writes."""
    entries = [e for e in out.iterdir() if e.name != LOCK_NAME]
    if entries and not resume:
        if not overwrite:
            raise ConfigError(f"--out {out} is not empty (another run wrote into it meanwhile); "
                              "pass --overwrite or choose another --out")
        for entry in entries:
            _remove(entry)
    remove_stale_temps(out)


def remove_stale_temps(out: Path) -> list[str]:
    """Delete what interrupted atomic writes leave (``.X.*.tmp`` files, ``.adapter*`` dirs)."""
    removed = []
    for entry in out.iterdir():
        name = entry.name
        stale_file = name.startswith(".") and name.endswith(".tmp")
        stale_dir = name.startswith(".adapter") and entry.is_dir() and not entry.is_symlink()
        if stale_file or stale_dir:
            _remove(entry)
            removed.append(name)
    return removed


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)
