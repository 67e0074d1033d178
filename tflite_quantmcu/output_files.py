"""Writing output files all or nothing.

Single files (``analyze --json``, ``write_model_file``): :func:`write_bytes_atomically`.

* A regular file (or a new name) is replaced atomically: the bytes go to a hidden
  temporary file in the same folder, are flushed to disk, then renamed over the name.
* A symbolic link is written *through*: its final target gets the new bytes (atomically
  as above, if the target is a regular file or does not exist yet); the link stays.
* A character device or FIFO (``/dev/stdout``, ``/dev/null``, a named pipe) is written
  through as a stream, never replaced (``--json /dev/full`` fails with "no space left on
  device" and leaves the device node alone). A directory, block device or socket is refused.

Output sets (``convert --out DIR``): :func:`lock_output_directory` and
:meth:`OutputDirectory.commit`.

* **Lock.** ``convert`` holds an exclusive ``flock`` on the output directory itself for its
  whole run. A second ``convert`` into the same directory meanwhile is refused with
  :class:`OutputBusyError` before it does any work, so two runs never interleave their files.
  No lock file is created; the kernel drops the lock when the process ends, however it ends.
* **Commit.** Every file of the set is first written into a staging folder
  ``DIR/.qmcu-staging-*``. The commit then moves the files of the previous set that the new
  set no longer has (the previous set is listed in ``DIR/.qmcu-manifest``, which the
  commit rewrites; files with this model's known output names count too) into the staging
  folder, keeps a hard link to each file it replaces there, renames the new files over the
  old names (each name always exists), and removes the staging folder with the old files
  in it. A rename that fails puts the previous set back.
* **Signals.** Staging, commit and cleanup run with SIGINT, SIGTERM, SIGHUP and SIGQUIT
  deferred (:func:`deferred_signals`): a signal that arrives meanwhile is recorded and
  re-raised once the directory holds the whole new set (or, after a failure, the whole
  previous set) and the staging folder is gone; Ctrl-C or ``kill`` can therefore never leave
  part of a set or a staging folder. Only an uncatchable end (SIGKILL, power loss) can leave
  a staging folder; the next ``convert`` into the directory removes it under the lock.
* **Never replace what is not ours.** An output name in ``DIR`` that is a symbolic link,
  a directory or a special file is refused (:class:`OutputError`): the commit renames files
  inside ``DIR`` only. Stale names of the previous set are removed only when they are
  regular files.
* **No empty folder on failure.** Folders that ``convert`` created for ``--out`` are removed
  again when the run fails and they are still empty.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import shutil
import signal
import stat
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tflite_quantmcu.errors import OutputBusyError, OutputError

STAGING_PREFIX = ".qmcu-staging-"
MANIFEST_NAME = ".qmcu-manifest"
DEFERRED_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP",
                                                             "SIGQUIT") if hasattr(signal, name))
NEW_FILE_MODE = 0o666  # narrowed by the user's umask, like any file the shell creates


# -- signals ----------------------------------------------------------------------------------
@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Runs the block with SIGINT/SIGTERM/SIGHUP/SIGQUIT recorded instead of acted on; on
    leaving, the old handlers are back and each recorded signal is raised again.

    Python runs signal handlers in the main thread only, so in another thread the block
    is never interrupted by a Python exception anyway and nothing is changed.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, _frame: received.append(signum))
                for signum in DEFERRED_SIGNALS if signal.getsignal(signum) is not None}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(received):
            signal.raise_signal(signum)


# -- single files -----------------------------------------------------------------------------
def write_bytes_atomically(*, data: bytes, path: str | Path) -> None:
    """Writes `data` to `path` (module doc: replace, write through, or refuse) or raises
    OutputError leaving nothing behind."""
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    kind = _file_kind(path=target)
    if kind == "symbolic link":
        raise OutputError(f"{path}: is a symbolic link that cannot be resolved (a loop)")
    if kind in ("directory", "block device", "socket"):
        raise OutputError(f"{path}: is a {kind}, expected a file path")
    with deferred_signals():
        if kind in ("character device", "FIFO"):
            _write_through(data=data, path=target, shown=path)
        else:
            _replace_file(data=data, path=target, shown=path)


def _file_kind(*, path: Path) -> str | None:
    """'regular', 'directory', ... of what `path` names (not following a last link), or None."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as err:
        raise OutputError(f"{path}: cannot be examined ({err.strerror})") from err
    kinds = ((stat.S_ISREG, "regular file"), (stat.S_ISDIR, "directory"),
             (stat.S_ISLNK, "symbolic link"), (stat.S_ISCHR, "character device"),
             (stat.S_ISBLK, "block device"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"))
    return next((name for test, name in kinds if test(mode)), "special file")


def _write_through(*, data: bytes, path: Path, shown: Path) -> None:
    try:
        with open(path, "wb") as handle:
            handle.write(data)
    except OSError as err:
        raise OutputError(f"{shown}: cannot be written ({err.strerror})") from err


def _replace_file(*, data: bytes, path: Path, shown: Path) -> None:
    directory = path.parent
    if _file_kind(path=directory) != "directory":
        raise OutputError(f"{shown}: cannot write into {directory} (no such directory)")
    mode = stat.S_IMODE(os.stat(path).st_mode) if path.exists() else None
    try:
        tmp = _create_hidden_file(directory=directory, stem=path.name, data=data, mode=mode)
    except OSError as err:
        raise OutputError(f"{shown}: cannot write into {directory} ({err.strerror})") from err
    try:
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{shown}: cannot be written ({err.strerror})") from err


def _create_hidden_file(*, directory: Path, stem: str, data: bytes,
                        mode: int | None = None) -> Path:
    """A new `.{stem}.<random>.tmp` in `directory` holding `data`, flushed to disk."""
    while True:
        tmp = directory / f".{stem}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, NEW_FILE_MODE)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def json_bytes(*, data: object) -> bytes:
    """Indented, key-sorted JSON: the same data always gives the same bytes."""
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")


def write_json_atomically(*, data: object, path: str | Path) -> None:
    write_bytes_atomically(data=json_bytes(data=data), path=path)


# -- output sets ------------------------------------------------------------------------------
@dataclass
class OutputDirectory:
    """A locked output directory (from :func:`lock_output_directory`)."""

    path: Path
    committed: bool = False

    def commit(self, *, files: dict[str, bytes], replaces: Iterable[str] = ()) -> None:
        """Makes `files` the directory's output set, all or nothing (module doc).

        `replaces`: more names of earlier outputs to remove if this set does not have them.
        """
        for name in files:
            _check_output_name(name=name)
        with deferred_signals():
            _commit(directory=self.path, files=files, replaces=tuple(replaces))
        self.committed = True


@contextlib.contextmanager
def lock_output_directory(*, directory: str | Path) -> Iterator[OutputDirectory]:
    """Creates `directory` if needed and holds its lock for the block (module doc).

    OutputBusyError if another process holds it. If the block raises and this call created
    folders that are still empty, they are removed.
    """
    directory = Path(directory)
    with deferred_signals():
        created = _make_directories(directory=directory)
        try:
            fd = _locked_directory_fd(directory=directory)
        except BaseException:
            _remove_empty(folders=created)
            raise
    out = OutputDirectory(path=directory)
    try:
        _remove_stale_staging(directory=directory)
        yield out
    finally:
        with deferred_signals():
            if not out.committed:
                _remove_empty(folders=created)
            os.close(fd)


def write_outputs_atomically(*, directory: str | Path, files: dict[str, bytes]) -> None:
    """Writes every file into `directory` or none of them (lock, then commit)."""
    with lock_output_directory(directory=directory) as out:
        out.commit(files=files)


def _make_directories(*, directory: Path) -> list[Path]:
    """mkdir -p; returns the folders it created, deepest first."""
    missing = []
    folder = directory
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    created = []
    try:
        for folder in reversed(missing):
            try:
                folder.mkdir()
                created.insert(0, folder)
            except FileExistsError:
                pass
    except OSError as err:
        _remove_empty(folders=created)
        raise OutputError(f"{directory}: cannot create output directory ({err.strerror})") \
            from err
    if not directory.is_dir():
        _remove_empty(folders=created)
        raise OutputError(f"{directory}: exists and is not a directory")
    return created


def _locked_directory_fd(*, directory: Path) -> int:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as err:
        raise OutputError(f"{directory}: cannot open output directory ({err.strerror})") \
            from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise OutputBusyError(f"{directory}: another convert is writing into this output "
                                  "directory; wait for it or choose another --out") from err
        raise OutputError(f"{directory}: cannot lock output directory ({err.strerror})") \
            from err
    return fd


def _remove_empty(*, folders: list[Path]) -> None:
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _remove_stale_staging(*, directory: Path) -> None:
    """Staging folders of a run that ended uncatchably (SIGKILL); safe under the lock."""
    for entry in os.scandir(directory):
        if entry.name.startswith(STAGING_PREFIX) and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)


def _check_output_name(*, name: str) -> None:
    if not _is_plain_name(name) or name.startswith(STAGING_PREFIX) or name == MANIFEST_NAME:
        raise OutputError(f"output name {name!r}: expected a plain file name")


def _is_plain_name(name: object) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name \
        and "\0" not in name and (os.altsep is None or os.altsep not in name)


def _commit(*, directory: Path, files: dict[str, bytes], replaces: tuple[str, ...]) -> None:
    new_names = list(files) + [MANIFEST_NAME]
    for name in new_names:
        kind = _file_kind(path=directory / name)
        if kind not in (None, "regular file"):
            raise OutputError(f"{directory / name}: is a {kind}; an output is never written "
                              "over one (remove it or choose another --out)")
    manifest = json_bytes(data=sorted(files))
    stale = [name for name in dict.fromkeys(_previous_outputs(directory=directory) + replaces)
             if name not in files and _file_kind(path=directory / name) == "regular file"]
    try:
        staging = Path(os.path.realpath(directory)) / f"{STAGING_PREFIX}{secrets.token_hex(6)}"
        staging.mkdir()
    except OSError as err:
        raise OutputError(f"{directory}: cannot write outputs ({err.strerror})") from err
    try:
        _stage_and_swap(directory=directory, staging=staging,
                        files={**files, MANIFEST_NAME: manifest}, stale=stale)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _stage_and_swap(*, directory: Path, staging: Path, files: dict[str, bytes],
                    stale: list[str]) -> None:
    new, old = staging / "new", staging / "old"
    try:
        new.mkdir()
        old.mkdir()
        for name, data in files.items():
            _write_flushed(path=new / name, data=data)
    except OSError as err:
        raise OutputError(f"{directory}: cannot write outputs ({err.strerror})") from err
    backed_up: list[str] = []   # hard links to (or, for stale names, the) previous files
    placed: list[str] = []
    try:
        for name in files:
            if os.path.lexists(directory / name):
                _keep_previous(current=directory / name, backup=old / name)
                backed_up.append(name)
        for name in stale:
            os.replace(directory / name, old / name)
            backed_up.append(name)
        for name in files:
            os.replace(new / name, directory / name)
            placed.append(name)
        _fsync_directory(directory=directory)
    except OSError as err:
        _roll_back(directory=directory, old=old, backed_up=backed_up, placed=placed)
        raise OutputError(f"{directory}: cannot write outputs ({err.strerror}); the previous "
                          "outputs were kept") from err


def _keep_previous(*, current: Path, backup: Path) -> None:
    """A hard link keeps the name present until the new file replaces it; where the file
    system has none, the file is moved (the name is missing for one rename)."""
    try:
        os.link(current, backup)
    except OSError:
        os.replace(current, backup)


def _write_flushed(*, path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, NEW_FILE_MODE)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_directory(*, directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _roll_back(*, directory: Path, old: Path, backed_up: list[str], placed: list[str]) -> None:
    for name in placed:
        if name not in backed_up:
            with contextlib.suppress(OSError):
                os.unlink(directory / name)
    for name in backed_up:
        with contextlib.suppress(OSError):
            os.replace(old / name, directory / name)


def _previous_outputs(*, directory: Path) -> tuple[str, ...]:
    """Names the previous commit listed in its manifest (plain names only; anything else in
    a damaged or hand-edited manifest is ignored)."""
    path = directory / MANIFEST_NAME
    if _file_kind(path=path) != "regular file":
        return ()
    try:
        names = json.loads(path.read_bytes()[:1 << 20].decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return ()
    if not isinstance(names, list):
        return ()
    return tuple(n for n in names if _is_plain_name(n) and not n.startswith(STAGING_PREFIX)
                 and n != MANIFEST_NAME)
