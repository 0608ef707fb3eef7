"""Public mode, visitor by visitor, without a launched app: the owner token the page keeps,
server paths in replies, run ids that point out of the runs root, and the run listing's cost.

(The same rules through a launched app are cases of ``tests/ui/test_hostile.py``.)
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from lab.jobs import hosting, visitors
from lab.runs import store as runs
from lab.ui import common


@pytest.fixture
def public(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("BALORA_MODE", "public")
    monkeypatch.delenv("BALORA_STATE_SECRET", raising=False)
    return root


def make_run(root: Path, run_id: str, token: str | None, status: str = "done") -> Path:
    run = root / run_id
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("name: x\n")
    (run / "summary.json").write_text(json.dumps({"status": status, "arms": {}}))
    hosting.record_owner(root, run_id, token)
    return run


# ---- the owner token the page keeps ----------------------------------------------------------


def test_browser_key_is_not_the_server_key_and_tokens_are_signed(public):
    key = common.server_key().decode()
    assert key and key not in common.browser_key() and common.browser_key() == common.browser_key()
    sealed = common.page_owner("")
    assert common.page_owner(sealed) == sealed  # kept across reloads
    token, sig = sealed.split(".")
    assert len(token) >= 16 and key not in sealed
    forged = token + "." + "0" * len(sig)
    assert common.page_owner(forged) != forged  # a made-up signature gets a new token
    assert common.page_owner("x" * 40) != "x" * 40  # so does any unsigned value


def test_a_token_signed_under_another_key_is_replaced(public, monkeypatch):
    monkeypatch.setenv("BALORA_STATE_SECRET", "one-key")
    sealed = common.page_owner(None)
    monkeypatch.setenv("BALORA_STATE_SECRET", "another-key")
    assert common.page_owner(sealed) != sealed


# ---- no server paths in replies --------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "No space left on device: '/data/runs/20260101-x/summary.json'",
        "cannot write /srv/lab/runs/x/adapters/lora/adapter_model.safetensors",
        "read-only file system: /mnt/volume/.visitors.json",
    ],
)
def test_public_message_cuts_every_absolute_path(public, text):
    out = common.public_message(text)
    assert "/data/" not in out and "/srv/" not in out and "/mnt/" not in out, out
    assert "…/" in out


def test_public_message_keeps_urls_ratios_and_hub_ids(public):
    text = "see https://huggingface.co/x/y; 3/4 done; HuggingFaceTB/SmolLM2-135M-Instruct"
    assert common.public_message(text) == text


def test_status_reply_names_the_run_not_its_folder(public):
    st = {"run_id": "r1", "run_dir": str(public / "r1"), "state": "done"}
    out = common.public_status(st)
    assert out["run_dir"] == "r1" and str(public) not in json.dumps(out)


# ---- run ids out of the root -----------------------------------------------------------------


@pytest.mark.parametrize("run_id", ["..", "../outside", "/etc", "a/../../b", "x\x00y", ""])
def test_run_path_refuses_names_out_of_the_root(public, run_id):
    with pytest.raises(ValueError):
        runs.run_path(public, run_id)


def test_run_path_refuses_a_link_out_of_the_root(public, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config.yaml").write_text("name: stolen\n")
    (public / "linked").symlink_to(outside)
    with pytest.raises(runs.OutsideRootError, match="link out of the runs folder"):
        runs.run_path(public, "linked")
    assert runs.run_path(public, "plain") == public / "plain"


def test_resolve_run_refuses_a_linked_run_even_for_the_admin(public, tmp_path, monkeypatch):
    monkeypatch.setenv("BALORA_ADMIN_TOKEN", "admin-" + "a" * 20)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config.yaml").write_text("name: stolen\n")
    (public / "linked").symlink_to(outside)
    with pytest.raises(ValueError, match="link out of the runs folder"):
        common.resolve_run("linked", "admin-" + "a" * 20)


def test_archive_leaves_out_links(public, tmp_path):
    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "key.txt").write_text("SECRET")
    src = public / "r" / "adapters"
    (src / "lora").mkdir(parents=True)
    (src / "lora" / "adapter_config.json").write_text("{}")
    (src / "pissa").symlink_to(secret)  # a folder linked out of the run
    (src / "lora" / "stolen.txt").symlink_to(secret / "key.txt")  # a file linked out
    out = runs.archive_dir(src, tmp_path / "a.zip")
    with zipfile.ZipFile(out) as zf:
        assert zf.namelist() == ["lora/adapter_config.json"]
        assert all(b"SECRET" not in zf.read(n) for n in zf.namelist())


def test_adapters_zip_of_a_run_whose_adapters_link_out(public, tmp_path):
    from lab.ui import runs as runs_tab

    token = hosting.new_token()
    run = make_run(public, "20260101-000000-mine-aaaa", token)
    secret = tmp_path / "outside"
    (secret / "lora").mkdir(parents=True)
    (secret / "lora" / "adapter_model.safetensors").write_text("SECRET")
    (run / "adapters").symlink_to(secret)
    with pytest.raises(ValueError, match="is a link"):
        runs_tab.adapters_zip(run.name, token)


# ---- the listing reads only the visitor's runs ------------------------------------------------


def test_listing_reads_only_the_visitors_own_runs(public, monkeypatch):
    mine = hosting.new_token()
    for i in range(40):
        make_run(public, f"20260101-{i:06d}-other-aaaa", hosting.new_token())
    own = {make_run(public, f"20260102-{i:06d}-mine-bbbb", mine).name for i in range(2)}
    read = []
    real = runs.read_summary
    monkeypatch.setattr(runs, "read_summary", lambda p: read.append(Path(p).name) or real(p))
    rows = common.visible_runs(mine)
    assert {r["run_id"] for r in rows} == own
    assert set(read) == own, f"read {len(read)} summaries for {len(own)} own runs"


def test_owner_index_sees_a_new_run_at_once(public):
    mine = hosting.new_token()
    make_run(public, "20260101-000000-a-aaaa", mine)
    assert hosting.owned_ids(public, mine) == ["20260101-000000-a-aaaa"]
    make_run(public, "20260101-000001-b-aaaa", mine)  # within the same clock tick, maybe
    assert sorted(hosting.owned_ids(public, mine)) == [
        "20260101-000000-a-aaaa",
        "20260101-000001-b-aaaa",
    ]
    assert hosting.owned_ids(public, hosting.new_token()) == []


# ---- the client address ----------------------------------------------------------------------


def test_client_address_trusts_forwarded_for_only_as_far_as_the_host_says():
    xff = "6.6.6.6, 1.2.3.4"  # the client wrote 6.6.6.6; the host's proxy saw 1.2.3.4
    assert visitors.client_address("10.0.0.1", xff, 0) == "10.0.0.1"
    assert visitors.client_address("10.0.0.1", xff, 1) == "1.2.3.4"
    assert visitors.client_address("10.0.0.1", xff, 2) == "6.6.6.6"
    assert visitors.client_address("10.0.0.1", None, 1) == "10.0.0.1"


def test_trusted_proxies_setting(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("BALORA_TRUSTED_PROXIES", raising=False)
    assert visitors.trusted_proxies() == 0
    monkeypatch.setenv("SPACE_ID", "me/lab")
    assert visitors.trusted_proxies() == 1
    monkeypatch.setenv("BALORA_TRUSTED_PROXIES", "lots")
    with pytest.raises(ValueError, match="BALORA_TRUSTED_PROXIES: a whole number"):
        visitors.trusted_proxies()


def test_guarded_handlers_run_on_behalf_of_the_requests_address(monkeypatch):
    import gradio as gr

    monkeypatch.delenv("BALORA_TRUSTED_PROXIES", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)

    @common.guarded
    def handler(x):
        return x, visitors.current_address()

    @common.guarded
    def streaming(x):
        yield visitors.current_address()
        yield visitors.current_address()

    class Client:
        host = "203.0.113.9"

    request = gr.Request(headers={"x-forwarded-for": "1.1.1.1"})
    request.client = Client()  # what Starlette gives Gradio
    assert handler(request, 5) == (5, "203.0.113.9")
    assert handler(5) == (5, None)  # a direct call (a test, another handler) names none
    assert list(streaming(request, 1)) == ["203.0.113.9"] * 2
    params = list(__import__("inspect").signature(handler).parameters)
    assert params == ["_request", "x"]  # Gradio sees the request parameter first


# ---- what one request may cost -----------------------------------------------------------------


def test_compare_all_pairs_is_bounded_before_any_model_loads(public, monkeypatch):
    from lab.ui import compare

    lim = common.hosting().limits
    most = compare.all_pairs_tokens(lim)
    assert most * 2 * len(compare.pairs()) <= 4 * lim.max_new_tokens
    monkeypatch.setattr(common, "resolve_run", lambda *a: pytest.fail("no run may be read"))
    with pytest.raises(ValueError, match=f"all pairs: at most {most} new tokens"):
        compare.compare("any", "", compare.ALL_PAIRS, most + 1, 0, False, owner="x" * 32)
