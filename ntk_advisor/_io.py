"""Files: atomic writes, folders that are replaced only when they are ours, the cache folder.

Every artifact is written under a temporary name beside its target and renamed when whole,
so a crash never leaves half a file where a later command would read it. ``--force`` may
replace an output folder only when that folder is one this tool wrote, of the same kind
(it holds the kind's marker file, or only entries the tool writes there), and never a
folder that holds the caller's inputs or the working directory: a user's folder is never
deleted by a mistyped ``--out``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import OutputError


def cache_dir() -> Path:
    """The one cache folder: $NTK_ADVISOR_CACHE, else ~/.cache/ntk-advisor (created on write)."""
    return Path(os.environ.get("NTK_ADVISOR_CACHE") or Path.home() / ".cache" / "ntk-advisor").expanduser()


# ----------------------------------------------------------------------------- JSON
def json_safe(value):
    """inf/NaN are not JSON: write them as strings a person (and read_json) can read."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def json_restore(value):
    """The inverse of json_safe: 'inf', '-inf' and 'nan' strings become floats again."""
    if value in ("inf", "-inf", "nan"):
        return float(value)
    if isinstance(value, dict):
        return {k: json_restore(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_restore(v) for v in value]
    return value


def read_json(path: Path):
    """A JSON file written with write_json, with its non-finite floats restored."""
    return json_restore(json.loads(Path(path).read_text(encoding="utf-8")))


def write_json(path: Path, document) -> None:
    write_text_atomically(path, json.dumps(json_safe(document), indent=2, default=float) + "\n")


# ----------------------------------------------------------------------------- files
def write_atomically(path: Path, write: Callable[[str], None]) -> Path:
    """Call write(temp_path) for a temp file beside ``path``, then rename it onto ``path``."""
    path = Path(path)
    _make_parent(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_text_atomically(path: Path, text: str) -> Path:
    return write_atomically(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(f"cannot write '{path}': a part of its folder path is a file; choose another path") from None
    except PermissionError:
        raise OutputError(f"cannot write '{path}': permission denied; choose a folder you can write") from None


# ----------------------------------------------------------------------------- folders
def _contains(folder: Path, path: Path) -> bool:
    folder, path = folder.resolve(), path.resolve()
    return path == folder or folder in path.parents


def check_replaceable(target: Path, *, marker: str | None = None, entries: Iterable[str] = (),
                      protect: Iterable[str | Path] = (), what: str = "output") -> None:
    """Raise unless ``--force`` may delete ``target``: an empty folder, or one of this kind.

    A folder is of this kind when it holds ``marker`` and no file outside ``entries``
    (``entries`` empty: the marker alone decides), or when every entry is one of ``entries``.
    Whatever the contents, a folder that is, or holds, the working directory or a path in
    ``protect`` (the recipe, the data file) is refused.
    """
    target = Path(target)
    if not target.exists():
        return
    if not target.is_dir():
        raise OutputError(f"--out '{target}' is a file, not a folder: choose another --out")
    for path in [Path.cwd(), *map(Path, protect)]:
        if path.exists() and _contains(target, path):
            inside = "the working directory" if path == Path.cwd() else f"'{path}'"
            raise OutputError(f"--force would delete '{target}', which holds {inside}: choose another --out")
    names = {p.name for p in target.iterdir() if not p.name.startswith(".")}
    known = set(entries)
    if not names:
        return
    if marker is not None and marker in names and (not known or names <= known | {marker}):
        return
    if known and names <= known:
        return
    strangers = sorted(names - known - ({marker} if marker else set()))[:3]
    raise OutputError(f"--out '{target}' holds files this tool did not write there ({', '.join(strangers)}); "
                      f"--force replaces only a {what} folder: choose another --out")


def write_folder_atomically(target: Path, write: Callable[[Path], None], force: bool = False, *,
                            marker: str | None = None, entries: Iterable[str] = (), what: str = "output") -> Path:
    """Call write(tmp_folder), then move the finished folder to ``target``.

    An existing target is refused unless ``force``; with force it is replaced, only after the
    new folder is complete, and only when check_replaceable allows it.
    """
    target = Path(target)
    if target.exists():
        if not force:
            raise OutputError(f"output folder '{target}' already exists: choose another --out or pass --force")
        check_replaceable(target, marker=marker, entries=entries, what=what)
    _make_parent(target)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    except PermissionError:
        raise OutputError(f"cannot write '{target}': permission denied; choose a folder you can write") from None
    try:
        write(tmp)
        _share_like_a_normal_folder(tmp)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "x")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def check_writable_destination(target: Path, *, is_folder: bool) -> None:
    """Fail before minutes of work when ``target`` cannot be written: a file where a folder is
    meant (or the reverse), a path under a file, or a read-only parent."""
    target = Path(target)
    if target.exists() and target.is_dir() != is_folder:
        kind = "a folder" if target.is_dir() else "a file"
        raise OutputError(f"'{target}' is {kind}; choose another output path")
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot write '{target}': '{parent}' is a file, not a folder; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write '{target}': '{parent}' is not writable; choose a folder you can write")


def _share_like_a_normal_folder(folder: Path) -> None:
    """mkdtemp makes 0700 folders (and some writers 0600 files); give the result umask modes."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def symbolic_link_inside(folder: Path) -> Path | None:
    """The first symbolic link under ``folder`` (the folder itself may be one), if any; None
    for a missing folder.

    Folders this tool writes (profiles, runs, studies, exports) never hold links, so a link
    in one came from someone else; following it would read, overwrite or delete a file the
    folder does not hold.
    """
    folder = Path(folder)
    for root, dirs, files in os.walk(folder, followlinks=False):  # walks a linked top folder's contents too
        for name in sorted(dirs + files):
            if os.path.islink(os.path.join(root, name)):
                return Path(root, name)
    return None


def refuse_links(folder: Path, what: str, error: type[Exception]) -> None:
    """Raise ``error`` when a tool folder holds a symbolic link (see symbolic_link_inside)."""
    link = symbolic_link_inside(folder)
    if link is not None:
        raise error(f"'{link}' is a symbolic link; a {what} folder holds only the files ntk-advisor wrote there, "
                    "so it is not read: replace the link with the file it points to, or recompute the folder")


# ----------------------------------------------------------------------------- one writer per output
class OutputClaim:
    """Only one command writes an output at a time: ``with OutputClaim(out): ...``.

    The claim is an advisory lock (flock) on a file named by the output's absolute path, in
    a folder of the user's own in the machine's temp folder (0700, checked not to be a link),
    so nothing is created beside the output before the command writes it and no other user
    can plant the lock file. The kernel drops the lock when the process ends, even under kill -9, so a
    crashed command never leaves a stale claim. A second command on the same output stops at
    once with one line instead of mixing its files with the first one's.
    """

    def __init__(self, target: Path):
        self.target = Path(target)
        key = hashlib.sha256(str(self.target.resolve()).encode()).hexdigest()[:32]
        self.path = Path(tempfile.gettempdir()) / f"ntk-advisor-locks-{os.getuid()}" / f"{key}.lock"
        self.fd: int | None = None

    def __enter__(self) -> OutputClaim:
        try:
            import fcntl
        except ImportError:  # not POSIX: no claim, as before
            return self
        try:
            self.path.parent.mkdir(mode=0o700, exist_ok=True)
            info = os.lstat(self.path.parent)
        except OSError:  # no writable temp folder: run unclaimed rather than not at all
            return self
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            return self  # someone else's folder or a link in its place: never write through it
        while self.fd is None:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            except OSError:
                return self
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise OutputError(f"another ntk-advisor command (pid {holder}) is writing '{self.target}': wait for it "
                                  "to finish or choose another --out") from None
            except OSError:  # a file system without locks (some network temp folders): run unclaimed
                os.close(fd)
                return self
            try:  # the holder before us may have removed the file between our open and our lock
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # while still holding it: a waiter then sees a new file
            os.close(self.fd)
            self.fd = None


__all__ = ["OutputClaim", "cache_dir", "refuse_links", "symbolic_link_inside", "check_replaceable", "check_writable_destination", "json_restore",
           "json_safe", "read_json", "write_atomically", "write_folder_atomically", "write_json",
           "write_text_atomically"]
