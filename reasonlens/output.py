"""Safe outputs for the command line: the location is checked before any work, nothing is overwritten without
``overwrite=True`` (``--overwrite``), and results appear atomically.

:func:`atomic_output` checks the location, yields a temporary sibling to write into, and moves it into place
only when the block ends without an error (an interrupted or failed run leaves nothing at the location):

- a new folder is staged as a hidden sibling (``.NAME.partial-XXXX``) and renamed into place in one step;
- an existing folder (empty, or with ``overwrite``) is staged inside it (``.reasonlens-partial-XXXX``); then each
  entry the run wrote replaces its namesake by rename, entries an earlier reasonlens run wrote there (listed in its
  :data:`MANIFEST`) that this run did not write are removed, and anything else in the folder is kept;
- a file is written to a hidden sibling (``.NAME.XXXX.tmp``) and renamed over the target (``os.replace``).

Every output folder gets a :data:`MANIFEST` (the command, the entries written, the time).

>>> import tempfile
>>> out = Path(tempfile.mkdtemp()) / "run"
>>> with atomic_output(out) as tmp:
...     _ = (tmp / "results.json").write_text("{}")
...     out.exists()
False
>>> sorted(p.name for p in out.iterdir())
['.reasonlens-output.json', 'results.json']
>>> with atomic_output(out) as tmp:  # doctest: +ELLIPSIS
...     pass
Traceback (most recent call last):
reasonlens.errors.ReasonlensError: --out ... already holds results.json; pass --overwrite to replace ...
"""

from __future__ import annotations

import errno
import json
import mimetypes
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from reasonlens.errors import ReasonlensError

MANIFEST = ".reasonlens-output.json"
STAGING_PREFIX = ".reasonlens-partial-"
# Suffixes of file names that mimetypes may not know: an output folder is not named like these.
_FILE_SUFFIXES = frozenset({".jsonl", ".json", ".txt", ".csv", ".tsv", ".html", ".htm", ".md", ".pt", ".pth",
                            ".bin", ".safetensors", ".npy", ".npz", ".pkl", ".pickle", ".parquet", ".arrow", ".log",
                            ".yaml", ".yml", ".toml", ".zip", ".gz", ".tar", ".png", ".pdf", ".svg", ".ipynb",
                            ".py", ".out", ".dat"})
_SHOWN = 5  # entries named in an error about a non-empty folder


def looks_like_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path``'s name ends like a file's (``data.txt``, ``results.json``), not a folder's.

    >>> looks_like_file("out/data.txt"), looks_like_file("out/run-1.2"), looks_like_file("out/eval")
    (True, False, False)
    """
    suffix = Path(path).suffix.lower()
    return bool(suffix) and (suffix in _FILE_SUFFIXES or mimetypes.guess_type(f"x{suffix}")[0] is not None)


def _entries(folder: Path) -> list[str]:
    """The names in ``folder``, leftovers of interrupted runs aside."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(STAGING_PREFIX))


def _listing(names: list[str]) -> str:
    """A few of ``names`` for a message (the manifest only when nothing else is there)."""
    shown = [n for n in names if n != MANIFEST] or names
    return ", ".join(shown[:_SHOWN]) + (f" and {len(shown) - _SHOWN} more" if len(shown) > _SHOWN else "")


def _os_problem(err: OSError, path: Path) -> str:
    """What an operating-system error means for an output location, in words."""
    where = Path(err.filename) if err.filename else path
    if where.name.startswith((STAGING_PREFIX, f".{path.name}.")):
        where = where.parent  # a temporary file or folder of ours: the folder it was to go in is what matters
    if isinstance(err, PermissionError) or err.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied on {where}"
    if isinstance(err, NotADirectoryError) or err.errno == errno.ENOTDIR:
        return f"{_file_above(path) or where} is a file, not a folder"
    if err.errno == errno.EROFS:
        return f"{where} is on a read-only file system"
    if err.errno == errno.ENOSPC:
        return "no space left on the device"
    return f"{err.strerror or err} ({where})"


def _file_above(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` if it is a file (so ``path`` cannot be created), else None."""
    for parent in path.parents:
        if parent.exists():
            return parent if not parent.is_dir() else None
    return None


def check_output(path: str | os.PathLike[str], *, kind: Literal["dir", "file"] = "dir", overwrite: bool = False,
                 flag: str = "--out", writes: str = "a folder of results") -> Path:
    """``path`` as an absolute path if a command may write its output there, else a :class:`ReasonlensError`
    saying why and what to do; writes nothing. ``kind`` is what the command writes there; ``writes`` says it in
    words for the messages."""
    p = Path(path).expanduser()
    if str(path) == "":
        raise ReasonlensError(f"{flag} is empty; pass where to write {writes}")
    p = p.absolute()
    above = _file_above(p)
    if above is not None:
        raise ReasonlensError(f"cannot write {flag} {path}: {above} is a file, not a folder; choose an {flag} "
                              "outside it")
    if kind == "file":
        if p.is_dir():
            raise ReasonlensError(f"{flag} {path} is a folder, but this command writes {writes} there; pass a file "
                                  "name")
        if p.exists() and not overwrite:
            raise ReasonlensError(f"{flag} {path} already exists ({p.stat().st_size} bytes); pass --overwrite to "
                                  f"replace it, or choose another {flag}")
        return p
    if p.exists() and not p.is_dir():
        raise ReasonlensError(f"{flag} {path} is a file, but this command writes {writes} there; choose a folder "
                              f"name for {flag} (the file is left as it is)")
    if not p.exists() and looks_like_file(p):
        raise ReasonlensError(f"{flag} {path} looks like a file name ({p.suffix}), but this command writes {writes} "
                              f"there; pass a folder name (e.g. {p.with_suffix('')}), or create the folder first if "
                              "you mean it")
    if p.is_dir() and not overwrite:
        names = _entries(p)
        if names:
            raise ReasonlensError(f"{flag} {path} already holds {_listing(names)}; pass --overwrite to replace the "
                                  f"results there (other files are kept), or choose another {flag}")
    return p


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; the ones created, outermost first."""
    missing = [d for d in [folder, *folder.parents] if not d.exists()][::-1]
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_created(created: list[Path]) -> None:
    for d in reversed(created):
        try:
            d.rmdir()  # only while still empty
        except OSError:
            break


def _write_manifest(folder: Path, names: list[str], command: str | None) -> None:
    (folder / MANIFEST).write_text(json.dumps({"command": command, "entries": names,
                                               "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=1))


def _old_entries(folder: Path) -> list[str]:
    """The entries an earlier reasonlens run listed in ``folder``'s manifest (none if it has no readable one)."""
    try:
        entries = json.loads((folder / MANIFEST).read_text()).get("entries", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [e for e in entries if isinstance(e, str) and e and "/" not in e and e not in (".", "..")]


def _commit_into(staging: Path, target: Path, command: str | None) -> None:
    """Move what ``staging`` (inside ``target``) holds into ``target``: each entry replaces its namesake (the old
    one is moved aside first, then deleted with ``staging``); stale entries of the previous manifest go too."""
    trash = staging / f"{STAGING_PREFIX}old"
    trash.mkdir()
    new = sorted(p.name for p in staging.iterdir() if p != trash)
    moved: list[str] = []
    try:
        for name in [*(n for n in _old_entries(target) if n not in new and n != MANIFEST), *new]:
            old = target / name
            if old.exists() or old.is_symlink():
                old.rename(trash / name)
                moved.append(name)
            if name in new:
                (staging / name).rename(old)
    except BaseException:  # put back what was moved aside and not yet replaced: nothing is lost
        for name in moved:
            if not (target / name).exists():
                (trash / name).rename(target / name)
        raise
    _write_manifest(target, [n for n in new if n != MANIFEST], command)


@contextmanager
def atomic_output(path: str | os.PathLike[str], *, kind: Literal["dir", "file"] = "dir", overwrite: bool = False,
                  flag: str = "--out", writes: str = "a folder of results",
                  command: str | None = None) -> Iterator[Path]:
    """Check ``path`` (:func:`check_output`), create what it needs, and yield where to write instead: a temporary
    folder (``kind="dir"``) or file path (``kind="file"``) next to it, moved into place when the block ends without
    an error and removed when it raises (folders this created are removed too, if still empty). Errors of the
    file system (permission denied, a read-only or full disk) are :class:`ReasonlensError`. A folder's
    :data:`MANIFEST` records ``command`` (the command line that wrote it)."""
    target = check_output(path, kind=kind, overwrite=overwrite, flag=flag, writes=writes)
    created: list[Path] = []
    staging: Path | None = None
    try:
        if kind == "dir" and target.is_dir():
            staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=target))
        else:
            created = _make_parents(target.parent)
            if kind == "dir":
                staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
            else:
                fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
                os.close(fd)
                staging = Path(name)
        staging.chmod((0o777 if kind == "dir" else 0o666) & ~_umask())  # mkdtemp / mkstemp make them private
    except OSError as err:
        _remove_created(created)
        raise ReasonlensError(f"cannot write {flag} {path}: {_os_problem(err, target)}; choose an {flag} you can "
                              "write to") from err
    done = False
    try:
        yield staging
        try:
            if kind == "file":
                os.replace(staging, target)
            elif staging.parent == target:
                _commit_into(staging, target, command)
            else:
                _write_manifest(staging, sorted(p.name for p in staging.iterdir()), command)
                staging.rename(target)
        except OSError as err:
            raise ReasonlensError(f"cannot move the results into {flag} {path}: {_os_problem(err, target)}; what "
                                  "was there before is kept") from err
        done = True
    finally:
        if staging.is_dir():
            shutil.rmtree(staging, ignore_errors=True)
        elif staging.exists():
            staging.unlink(missing_ok=True)
        if not done:
            _remove_created(created)


def check_run_folder(path: str | os.PathLike[str], *, resumable: list[str], overwrite: bool = False,
                     flag: str = "--out") -> Path:
    """Check a folder a long job writes into as it goes (training): not a file, not under one, writable (probed
    by creating it), and either empty, a previous run of the job (it holds one of ``resumable``, so the job
    resumes) or, with ``overwrite``, anything."""
    p = Path(path).expanduser().absolute()
    above = _file_above(p)
    if above is not None:
        raise ReasonlensError(f"cannot write {flag} {path}: {above} is a file, not a folder; choose an {flag} "
                              "outside it")
    if p.exists() and not p.is_dir():
        raise ReasonlensError(f"{flag} {path} is a file, but training writes a folder of checkpoints there; choose "
                              f"a folder name for {flag}")
    if p.is_dir() and not overwrite:
        names = _entries(p)
        if names and not any(n in names for n in resumable):
            raise ReasonlensError(f"{flag} {path} already holds {_listing(names)}, and no earlier run to resume "
                                  f"({', '.join(resumable)}); choose an empty or new folder, or pass --overwrite to "
                                  "train into it anyway (its files are kept)")
    created: list[Path] = []
    try:
        created = _make_parents(p)
        fd, probe = tempfile.mkstemp(prefix=STAGING_PREFIX, dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        _remove_created(created)
        raise ReasonlensError(f"cannot write {flag} {path}: {_os_problem(err, p)}; choose an {flag} you can write "
                              "to") from err
    return p
