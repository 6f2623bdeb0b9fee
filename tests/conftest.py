"""Shared test fixtures."""

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and the test machine's two cores are shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def offline(monkeypatch):
    """Fail hub look-ups at once instead of retrying a network that is not there."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def tiny_model(request, tmp_path_factory):
    """A randomly initialised tiny Llama, then GPT-2, bridge with the reference tokenizer (context 256)."""
    from model_util import write_checkpoint

    from reasonlens.model import load_model

    return load_model(str(write_checkpoint(tmp_path_factory.mktemp(request.param), request.param, n_ctx=256)))


@pytest.fixture(scope="session")
def browser_check():
    """``browser_check(report, name)``: open a written report in headless Chromium and check that it works
    (tests/browser.py). Chromium is looked for, and installed when missing, on first use; where it cannot be, the
    test is skipped there, after its other checks, with the reason."""
    from browser import check_report, find_chromium

    found: list[tuple[str | None, str]] = []

    def check(report, name):
        if not found:
            found.append(find_chromium())
        chromium, why = found[0]
        if chromium is None:
            pytest.skip(f"no browser check of {name}: {why}")
        return check_report(chromium, report, name)

    return check
