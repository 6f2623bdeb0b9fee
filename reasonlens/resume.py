"""Per-analysis checkpoints of a long study, so that a rerun after an interruption resumes where it stopped.

A study runs each of its analyses through :meth:`StudyCheckpoints.run`: the first run computes the analysis and
saves its result in the folder (atomically: a file appears whole or not at all); a rerun of the same study with the
same configuration on the same model weights loads it instead of computing it again. Every analysis seeds its own
randomness, so a resumed study gives the results of an uninterrupted one. A folder written for another study,
configuration, model or reasonlens version is not reused: its checkpoints are discarded, with a log line.

The command line keeps a study's checkpoints in a hidden sibling of its ``--out`` (:func:`resume_folder`) and
removes them once the results are in place.

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp()) / "checkpoints"
>>> first = StudyCheckpoints(folder, study="demo", config={"n": 3}, log=None)
>>> first.run("squares", lambda: [i * i for i in range(3)])
[0, 1, 4]
>>> StudyCheckpoints(folder, study="demo", config={"n": 3}, log=None).run("squares", lambda: 1 / 0)  # loaded
[0, 1, 4]
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from reasonlens.errors import ReasonlensError
from reasonlens.model import model_fingerprint
from reasonlens.results import jsonable

T = TypeVar("T")
FINGERPRINT = "fingerprint.json"


def resume_folder(out: str | os.PathLike[str]) -> Path:
    """Where the command line keeps the checkpoints of a study writing to ``out``: ``.NAME.resume`` beside it."""
    target = Path(out).expanduser().absolute()
    return target.parent / f".{target.name}.resume"


def remove_checkpoints(folder: str | os.PathLike[str]) -> None:
    """Remove a study's checkpoint folder (its results are in place)."""
    shutil.rmtree(folder, ignore_errors=True)


class StudyCheckpoints:
    """Saved analyses of one study run in ``folder`` (``None``: nothing is saved, every analysis is computed).

    ``study`` names the study, ``config`` is its configuration (a dataclass or anything JSON can hold after
    ``repr`` of the rest) and ``models`` the models it runs on; together with the reasonlens version they decide
    whether saved analyses belong to this run. ``log`` receives one line about what is resumed or discarded
    (``None``: silent)."""

    def __init__(self, folder: str | os.PathLike[str] | None, *, study: str, config: Any, models: tuple = (),
                 log: Callable[[str], None] | None = print) -> None:
        from importlib.metadata import version

        self.folder = None if folder is None else Path(folder)
        self.log = log
        self.resumed: list[str] = []
        if self.folder is not None:  # the fingerprint reads every weight: only when there is something to match
            self.fingerprint = {"study": study, "reasonlens": version("reasonlens"), "config": jsonable(config),
                                "models": [model_fingerprint(m) for m in models if m is not None]}
            self._open()

    def _open(self) -> None:
        assert self.folder is not None
        stamp = self.folder / FINGERPRINT
        if stamp.exists():
            try:
                same = json.loads(stamp.read_text()) == json.loads(json.dumps(self.fingerprint))
            except (OSError, ValueError):
                same = False
            if not same:
                done = sorted(p.stem for p in self.folder.glob("*.pt"))
                self._say(f"checkpoints in {self.folder} are of another configuration, model or version; "
                          f"discarding {len(done)} ({', '.join(done) or 'none'})")
                shutil.rmtree(self.folder, ignore_errors=True)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if not stamp.exists():
                stamp.write_text(json.dumps(self.fingerprint, indent=1))
        except OSError as err:
            raise ReasonlensError(f"cannot keep study checkpoints in {self.folder}: {err.strerror or err}") from err
        done = sorted(p.stem for p in self.folder.glob("*.pt"))
        if done:
            self._say(f"resuming from {self.folder}: {len(done)} analyses already done ({', '.join(done)})")

    def _say(self, line: str) -> None:
        if self.log is not None:
            self.log(line)

    def _path(self, name: str) -> Path:
        assert self.folder is not None
        return self.folder / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ".pt")

    def run(self, name: str, compute: Callable[[], T]) -> T:
        """The result of the analysis ``name``: loaded when this folder holds it, else computed and saved."""
        import torch

        if self.folder is None:
            return compute()
        path = self._path(name)
        if path.exists():
            try:  # written by this class in a folder the user owns, so a full (not weights-only) load
                result = torch.load(path, weights_only=False)
                self.resumed.append(name)
                return result
            except Exception as err:  # a truncated or foreign file: compute it again
                self._say(f"checkpoint {path.name} cannot be read ({type(err).__name__}); computing it again")
        result = compute()
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=self.folder)
        os.close(fd)
        try:
            torch.save(result, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return result
