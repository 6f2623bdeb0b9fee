"""Per-analysis checkpoints of the long studies (reasonlens.resume); the studies' resumes are tested beside them."""

import torch

from reasonlens.model import model_fingerprint
from reasonlens.resume import StudyCheckpoints, remove_checkpoints, resume_folder


class Calls:
    def __init__(self):
        self.n = 0

    def __call__(self):
        self.n += 1
        return {"scores": torch.arange(3.0), "n": self.n}


def test_an_analysis_is_computed_once_and_then_loaded(tmp_path):
    compute = Calls()
    first = StudyCheckpoints(tmp_path / "c", study="s", config={"n": 1}, log=None).run("a", compute)
    again = StudyCheckpoints(tmp_path / "c", study="s", config={"n": 1}, log=None).run("a", compute)
    assert compute.n == 1 and again["n"] == first["n"] == 1 and torch.equal(again["scores"], first["scores"])
    assert not list((tmp_path / "c").glob("*.tmp"))  # written atomically, nothing left behind


def test_another_config_study_or_model_discards_the_checkpoints(tmp_path):
    lines = []
    model = torch.nn.Linear(3, 2)
    StudyCheckpoints(tmp_path, study="s", config={"n": 1}, models=(model,), log=lines.append).run("a", Calls())
    for change in ({"config": {"n": 2}}, {"study": "t"}):
        compute = Calls()
        kwargs = {"study": "s", "config": {"n": 1}, "models": (model,), **change}
        StudyCheckpoints(tmp_path, log=lines.append, **kwargs).run("a", compute)
        assert compute.n == 1 and "discarding 1 (a)" in lines[-1]
    StudyCheckpoints(tmp_path, study="s", config={"n": 1}, models=(model,), log=None).run("a", Calls())
    with torch.no_grad():
        model.weight[0, 0] += 1e-3
    compute = Calls()
    StudyCheckpoints(tmp_path, study="s", config={"n": 1}, models=(model,), log=lines.append).run("a", compute)
    assert compute.n == 1 and "another configuration, model or version" in lines[-1]


def test_resuming_says_what_is_done_and_an_unreadable_file_is_recomputed(tmp_path):
    lines = []
    StudyCheckpoints(tmp_path, study="s", config={}, log=None).run("first step", Calls())
    (tmp_path / "second.pt").write_bytes(b"truncated")
    saved = StudyCheckpoints(tmp_path, study="s", config={}, log=lines.append)
    assert lines == [f"resuming from {tmp_path}: 2 analyses already done (first_step, second)"]
    compute = Calls()
    assert saved.run("second", compute)["n"] == 1 and compute.n == 1 and "cannot be read" in lines[-1]
    assert saved.run("first step", compute)["n"] == 1 and compute.n == 1 and saved.resumed == ["first step"]


def test_without_a_folder_nothing_is_saved(tmp_path):
    compute = Calls()
    saved = StudyCheckpoints(None, study="s", config={}, log=None)
    saved.run("a", compute), saved.run("a", compute)
    assert compute.n == 2


def test_fingerprint_and_folder_names():
    a, b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    assert model_fingerprint(a) == model_fingerprint(a) != model_fingerprint(b)
    assert resume_folder("/tmp/out/run").name == ".run.resume" and resume_folder("/tmp/out/run").parent.name == "out"
    remove_checkpoints("/nonexistent/folder")  # nothing to remove is fine
