"""lab.models: the one probe of the Hugging Face hub, for the model load and the preflight."""

from __future__ import annotations

import pytest

from lab import models


def _raising(exc: BaseException):
    def model_info(self, repo_id, timeout=None):
        raise exc

    return model_info


def _hub_error(cls, message: str) -> BaseException:
    err = cls.__new__(cls)  # the hub's HTTP errors want a response object; the message is enough
    Exception.__init__(err, message)
    return err


def test_probe_hub_tells_gated_missing_and_offline_apart(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError, HTTPError, RepositoryNotFoundError

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    seen = {}

    def ok(self, repo_id, timeout=None):
        seen["timeout"] = timeout

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", ok)
    assert models.probe_hub("org/model") == (models.HUB_OK, "")
    assert seen["timeout"] == models.HUB_TIMEOUT_S
    cases = [
        (_hub_error(GatedRepoError, "gated\nmore"), models.HUB_GATED, "gated"),
        (_hub_error(RepositoryNotFoundError, "not found"), models.HUB_MISSING, "not found"),
        (HTTPError("no route to host"), models.HUB_OFFLINE, "no route to host"),
        (OSError("network is unreachable"), models.HUB_OFFLINE, "network is unreachable"),
    ]
    for exc, state, reason in cases:
        monkeypatch.setattr(huggingface_hub.HfApi, "model_info", _raising(exc))
        assert models.probe_hub("org/model") == (state, reason)


def test_probe_hub_asks_nothing_when_the_hub_is_switched_off(monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", _raising(AssertionError("asked")))
    assert models.probe_hub("org/model") == (models.HUB_OFFLINE, "HF_HUB_OFFLINE=1")


@pytest.mark.parametrize(
    "state,local_only", [(models.HUB_OFFLINE, True), (models.HUB_MISSING, False)]
)
def test_a_hub_model_loads_from_the_cache_only_when_the_probe_finds_no_hub(
    monkeypatch, state, local_only
):
    import transformers

    asked = {}

    def tokenizer(location, local_files_only=False):
        asked["local_files_only"] = local_files_only
        raise OSError("not cached")

    monkeypatch.setattr(models.hub, "probe_hub", lambda repo_id: (state, "why"))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", tokenizer)
    with pytest.raises(models.ModelError, match="could not fetch 'org/model'"):
        models.load_model("org/model", device="cpu")
    assert asked["local_files_only"] is local_only
