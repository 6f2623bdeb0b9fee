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
