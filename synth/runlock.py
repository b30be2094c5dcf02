"""One writer per dataset folder: the output folder (and a generation cache shared through
--cache-dir) is locked for the whole run, and checked before anything is written to it.

The lock is an OS file lock (`filelock`: flock on POSIX) on `OUT/.synth/run.lock`: the kernel
drops it when the process ends, however it ends, so the lock of a run killed with -9 is simply
free for the next one (which says whose lock it took over). Next to it, `run.lock.json` names the
holder (pid, host, start time, run id, command): a second run stops at once with that in its
message instead of deleting the first one's shards.
"""

import json
import logging
import os
import socket
import stat
import sys
from collections.abc import Iterable
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock, Timeout

from synth.atomic import atomic_write_json

LOCK_NAME = "run.lock"
log = logging.getLogger("synth")

# Virtual filesystems: never a place for a dataset (and as root, writing there can do harm).
_VIRTUAL = (Path("/proc"), Path("/sys"))


class OutputError(Exception):
    """The output or cache folder cannot be used as it is; the message says what to do."""


class RunLocked(OutputError):
    """Another run holds the folder."""


def _describe(holder: dict | None) -> str:
    if not holder:
        return "a run that has not said who it is yet"
    parts = [f"pid {holder.get('pid')} on {holder.get('host')}", f"started {holder.get('started')}"]
    if holder.get("run_id"):
        parts.append(f"run {holder['run_id']}")
    text = ", ".join(parts)
    if holder.get("command"):
        text += f": {holder['command']}"
    return text


def _read_holder(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


class RunLock:
    """An exclusive lock on `folder`, taken at once or not at all (`RunLocked`)."""

    def __init__(self, folder: Path, what: str):
        self.folder = Path(folder)
        self.what = what  # "the dataset folder OUT", "the generation cache DIR": for messages
        self.path = self.folder / LOCK_NAME
        self.info_path = self.folder / f"{LOCK_NAME}.json"
        self._lock = FileLock(str(self.path), timeout=0)
        self.taken_over: dict | None = None  # the holder of a lock left behind by a run that died
        self._info: dict | None = None

    def acquire(self, run_id: str | None = None, command: str | None = None) -> "RunLock":
        try:
            self._lock.acquire()
        except Timeout:
            holder = _read_holder(self.info_path)
            raise RunLocked(
                f"{self.what} is in use by another synth run ({_describe(holder)}). Wait for it to end (or stop it), "
                f"or choose another --out; the lock goes away with the process that holds it."
            ) from None
        except OSError as error:
            raise OutputError(f"cannot lock {self.path} ({error.strerror or error}): choose a writable folder") from None
        self.taken_over = _read_holder(self.info_path)  # left by a run that ended without releasing it
        if self.taken_over:
            log.warning(
                "%s was last held by a run that ended without releasing it (%s); taken over",
                self.what, _describe(self.taken_over),
            )
        self._info = {
            "pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "run_id": run_id, "command": command or " ".join(sys.argv),
        }
        try:
            atomic_write_json(self.info_path, self._info)
        except BaseException:
            self._lock.release()
            raise
        return self

    def release(self) -> None:
        if not self._lock.is_locked:
            return
        try:
            if _read_holder(self.info_path) == self._info:
                self.info_path.unlink(missing_ok=True)
        finally:
            self._lock.release(force=True)

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _kind(mode: int) -> str:
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a file"


def check_folder(path: Path, option: str) -> Path:
    """Make sure `path` is (or can be made) a writable folder; create it. Raises OutputError."""
    path = Path(path)
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as error:  # a symlink loop
        raise OutputError(f"{option} {path}: cannot be resolved ({error}); choose another folder") from None
    if any(resolved == root or root in resolved.parents for root in _VIRTUAL):
        raise OutputError(f"{option} {path} is on a virtual filesystem ({resolved}): choose a folder on a real disk")
    # The path itself, then each parent up to the first that exists: each must be a folder.
    for candidate in [path, *path.parents]:
        try:
            mode = os.stat(candidate).st_mode
        except FileNotFoundError:
            continue
        except NotADirectoryError:
            continue  # a parent further up is a file: found on the way up
        except OSError as error:
            raise OutputError(f"{option} {path}: cannot use {candidate} ({error.strerror}); choose another folder") from None
        if not stat.S_ISDIR(mode):
            where = "is" if candidate == path else f"is inside {candidate}, which is"
            raise OutputError(f"{option} {path} {where} {_kind(mode)}, not a folder: choose a folder (it is created if missing)")
        break
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{option} {path}: cannot create the folder ({error.strerror or error}); choose a writable folder") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {path}: the folder is not writable by this user; fix its permissions or choose another")
    return path


def check_entries(folder: Path, files: Iterable[str] = (), folders: Iterable[str] = ()) -> None:
    """What synth writes inside `folder` must not be in the way: `files` must not be folders (or
    other non-files), `folders` must not be files."""
    for name in files:
        path = folder / name
        if path.is_symlink() and not path.exists():
            continue  # a dangling link is replaced by the atomic rename
        if path.exists() and not path.is_file():
            raise OutputError(f"{path} is a folder (or not a plain file), but synth writes a file there: move it away or choose another --out")
    for name in folders:
        path = folder / name
        if path.exists() and not path.is_dir():
            raise OutputError(f"{path} is a file, but synth writes a folder there: move it away or choose another --out")


@contextmanager
def locked_output(
    out: Path,
    cache_dir: Path | None = None,
    *,
    files: Iterable[str] = (),
    folders: Iterable[str] = (),
    run_id: str | None = None,
    command: str | None = None,
):
    """Check and lock the dataset folder (and a separate cache folder) for the block's duration."""
    out = check_folder(out, "--out")
    check_entries(out, files, [".synth", *folders])
    work = out / ".synth"
    check_entries(work, (), ["chunks", "runs"])
    work.mkdir(exist_ok=True)
    locks = [RunLock(work, f"the dataset folder {out}")]
    if cache_dir is not None:
        cache_dir = check_folder(cache_dir, "--cache-dir")
        if cache_dir.resolve() != work.resolve():
            locks.append(RunLock(cache_dir, f"the generation cache {cache_dir}"))
    held = []
    try:
        for lock in locks:
            held.append(lock.acquire(run_id, command))
        yield held
    finally:
        for lock in reversed(held):
            lock.release()
