"""The app in public mode against hostile visitors: a table of crafted inputs and faults.

One app runs in public mode on a runs folder that already holds another visitor's finished run
(the victim), a run with a truncated summary and a garbage event line, and a folder outside
every root with canary files. Each case calls the app as a stranger would, through
``gradio_client`` or raw HTTP (handlers by their function index, with crafted session data),
and checks its expected outcome. After every case: the app still serves, the victim run is
byte-for-byte intact, nothing was written outside the runs root, and no response carries a
canary, a server path (the project's own folder, as in a traceback) or more than a short
piece of the input; echoing the visitor's own input back in an error is allowed.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, launched_app

pytestmark = pytest.mark.slow

CANARY = "SECRET-CANARY-7731"
ADMIN = "admin-" + secrets.token_hex(8)
VICTIM = "20260101-000000-victim-aaaa"
CORRUPT = "20260101-000001-corrupt-bbbb"  # a truncated summary.json
GARBAGE = "20260101-000002-garbage-cccc"  # a garbage line in events.jsonl
MAX_REPLY = 6000  # no reply to a hostile request is longer than this (no echo of big inputs)


# ---- fixtures ---------------------------------------------------------------------------------


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _victim_run(runs_dir: Path, token: str) -> Path:
    from lab.config import dump_yaml, load_preset
    from lab.jobs import hosting

    run = runs_dir / VICTIM
    (run / "adapters" / "lora").mkdir(parents=True)
    (run / "config.yaml").write_text(dump_yaml(load_preset("tiny-test")))
    events = [
        {"arm": a, "step": s, "kind": "train", "loss": 1.0 / s, "task_loss": 1.0 / s}
        for s in (1, 2)
        for a in ("lora", "pissa", "balora")
    ]
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    summary = {"status": "done", "name": "victim", "arms": {"lora": {"status": "done"}}}
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "adapters" / "lora" / "adapter_config.json").write_text("{}")
    hosting.record_owner(runs_dir, VICTIM, token)
    return run


def _corrupt_runs(runs_dir: Path) -> None:
    from lab.config import dump_yaml, load_preset

    good = json.dumps({"arm": "lora", "step": 1, "kind": "train", "loss": 1.0})
    for run_id, summary in ((CORRUPT, '{"status": "done", "arms": {"lo'), (GARBAGE, None)):
        run = runs_dir / run_id
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(dump_yaml(load_preset("tiny-test")))
        (run / "summary.json").write_text(summary or json.dumps({"status": "done", "arms": {}}))
        (run / "events.jsonl").write_text(good + "\n\x00garbage{{{\n" + good + "\n")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    runs_dir, outside = base / "runs", base / "outside"
    runs_dir.mkdir()
    outside.mkdir()
    (outside / "secret.yaml").write_text(f"name: {CANARY}\ntrain:\n  steps: 1\n")
    (outside / "secret.csv").write_text(f"text,label\n{CANARY},a\n{CANARY},b\n")
    (outside / "secret.jsonl").write_text(json.dumps({"prompt": CANARY, "response": "x"}) + "\n")
    victim_token = secrets.token_urlsafe(24)
    _victim_run(runs_dir, victim_token)
    _corrupt_runs(runs_dir)
    env = {"BALORA_ADMIN_TOKEN": ADMIN, "BALORA_STOP_GRACE_S": "5"}
    with launched_app(runs_dir, args=["--public"], env=env) as (url, _):
        w = {
            "url": url,
            "base": base,
            "runs": runs_dir,
            "outside": outside,
            "victim_digest": _tree_digest(runs_dir / VICTIM),
            "outside_digest": _tree_digest(outside),
            "me": secrets.token_urlsafe(24),
            "config": httpx.get(url + "config", timeout=30).json(),
        }
        yield w


@pytest.fixture(scope="module")
def client(world):
    from gradio_client import Client

    return Client(world["url"], verbose=False, analytics_enabled=False, download_files=False)


# ---- ways in ----------------------------------------------------------------------------------


def fn_index(world, name: str) -> int:
    """The index of a handler in the page's config: ``name`` as Gradio names it, or
    ``#elem-id`` for the handler of that element's click."""
    cfg = world["config"]
    if name.startswith("#"):
        ids = {c["id"] for c in cfg["components"] if c.get("props", {}).get("elem_id") == name[1:]}
        for dep in cfg["dependencies"]:
            if any(t[0] in ids and t[1] == "click" for t in dep.get("targets", [])):
                return dep["id"]
    for dep in cfg["dependencies"]:
        if dep.get("api_name") == name:
            return dep["id"]
    raise KeyError(name)


def raw_call(world, name: str, data: list, session_hash: str | None = None) -> dict:
    """Call a handler by its function index with crafted data, as a raw HTTP client would.
    -> {"ok": bool, "text": everything the app sent back}."""
    url = world["url"]
    sh = session_hash or secrets.token_hex(8)
    body = {"data": data, "fn_index": fn_index(world, name), "session_hash": sh}
    r = httpx.post(url + "gradio_api/queue/join", json=body, timeout=30)
    if r.status_code != 200:
        return {"ok": False, "text": r.text}
    with httpx.stream(
        "GET", url + f"gradio_api/queue/data?session_hash={sh}", timeout=120
    ) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data:"):
                continue
            msg = json.loads(line[5:])
            if msg.get("msg") == "process_completed":
                out = msg.get("output") or {}
                ok = bool(msg.get("success")) and not _error_text(out)
                return {"ok": ok, "text": json.dumps(out)}
    raise AssertionError(f"{name}: no reply")


def _error_text(out: dict) -> bool:
    return bool(out.get("error")) or "❌" in json.dumps(out.get("data"), ensure_ascii=False)


def api(client, endpoint: str, *args) -> dict:
    """A named API endpoint through gradio_client. -> {"ok": bool, "text": reply or error}."""
    from gradio_client.exceptions import AppError

    try:
        out = client.predict(*args, api_name=endpoint)
    except AppError as e:
        return {"ok": False, "text": str(e)}
    return {"ok": True, "text": json.dumps(out), "value": out}


def upload(world, name: str, content: bytes) -> dict:
    """Upload a file through Gradio's upload route; -> the FileData payload for a handler."""
    r = httpx.post(world["url"] + "gradio_api/upload", files={"files": (name, content)}, timeout=30)
    if r.status_code != 200:
        return {"status": r.status_code, "text": r.text}
    path = r.json()[0]
    return {"path": path, "orig_name": name, "meta": {"_type": "gradio.FileData"}}


def form(world, **changes) -> list:
    """The Setup form's values as the page sends them (tiny-test defaults), with changes."""
    from lab.ui import form as form_logic

    vals = form_logic.preset_values("tiny-test")
    vals.update({k.replace("__", "."): v for k, v in changes.items()})
    return [vals[f] for f in form_logic.FIELDS]


# ---- the table --------------------------------------------------------------------------------
# (case id, how to send it, what must be in the reply: None for "anything refused")


def _cases():
    return [
        ("preset-path", lambda w, c: api(c, "/start", f"{w['outside']}/secret.yaml", []), "unknown preset"),
        ("preset-traversal", lambda w, c: api(c, "/start", "../outside/secret", []), "preset"),
        ("data-outside-file", lambda w, c: api(c, "/start", "tiny-test", [f"data.name={w['outside']}/secret.csv"]), "not allowed on this public app"),
        ("data-outside-dir", lambda w, c: api(c, "/start", "tiny-test", [f"data.name={w['outside']}"]), "not allowed"),
        ("data-etc-passwd", lambda w, c: api(c, "/start", "tiny-test", ["data.name=/etc/passwd"]), "not allowed"),
        ("model-local-dir", lambda w, c: api(c, "/start", "tiny-test", [f"model.name={w['outside']}"]), "model.name"),
        ("model-hub-not-allowed", lambda w, c: api(c, "/start", "tiny-test", ["model.name=evil/model"]), "model.name"),
        ("billion-steps", lambda w, c: api(c, "/start", "tiny-test", ["train.steps=1000000000"]), "train.steps"),
        ("huge-batch", lambda w, c: api(c, "/start", "tiny-test", ["train.batch_size=100000"]), "train.batch_size"),
        ("yaml-alias-bomb", lambda w, c: api(c, "/start", "tiny-test", ["train.lr=[&a [1,1,1,1,1,1,1,1,1],&b [*a,*a,*a,*a,*a,*a,*a,*a,*a],&c [*b,*b,*b,*b,*b,*b,*b,*b,*b],&d [*c,*c,*c,*c,*c,*c,*c,*c,*c]]"]), "aliases"),
        ("long-override", lambda w, c: api(c, "/start", "tiny-test", ["name=" + "x" * 5000]), "over the limit"),
        ("huge-integer", lambda w, c: api(c, "/start", "tiny-test", ["train.steps=" + "9" * 1500]), "train.steps"),
        ("many-overrides", lambda w, c: api(c, "/start", "tiny-test", [f"train.seed={i}" for i in range(100)]), "over the limit"),
        ("unknown-device", lambda w, c: api(c, "/start", "tiny-test", ["model.device=quantum"]), "model.device"),
        ("unknown-key", lambda w, c: api(c, "/start", "tiny-test", ["train.nope" + "z" * 300 + "=1"]), "unknown key"),
        ("status-other", lambda w, c: api(c, "/status", VICTIM, w["me"]), "another visitor"),
        ("stop-other", lambda w, c: api(c, "/stop", VICTIM, w["me"]), "another visitor"),
        ("generate-other", lambda w, c: api(c, "/generate", VICTIM, "hi", 8, 0, w["me"]), "another visitor"),
        ("status-traversal", lambda w, c: api(c, "/status", "../outside", w["me"]), "not a run id"),
        ("generate-token-flood", lambda w, c: api(c, "/generate", "example", "hi", 100000, 0, ""), "max new tokens"),
        ("generate-huge-prompt", lambda w, c: api(c, "/generate", "example", "p" * 100_000, 8, 0, ""), "prompt"),
        ("zip-other-by-index", lambda w, c: raw_call(w, "on_zip", [VICTIM, w["me"]]), "another visitor"),
        ("report-other-by-index", lambda w, c: raw_call(w, "on_report", [VICTIM, w["me"]]), "another visitor"),
        ("open-other-by-index", lambda w, c: raw_call(w, "on_open", [VICTIM, w["me"]]), "another visitor"),
        ("diff-other-by-index", lambda w, c: raw_call(w, "on_diff", [VICTIM, "example", w["me"]]), "another visitor"),
        # the followed run is a gr.State: Gradio keeps it on the server, a crafted value is ignored
        ("stop-other-by-index", lambda w, c: raw_call(w, "on_stop", [VICTIM, w["me"]]), "no run to stop"),
        ("follow-other-by-index", lambda w, c: raw_call(w, "on_tick_1", [VICTIM, {}, False, w["me"]]), "!" + VICTIM),
        ("bias-other-by-index", lambda w, c: raw_call(w, "on_show", [VICTIM, w["me"]]), "another visitor"),
        ("compare-other-by-index", lambda w, c: raw_call(w, "on_compare", [VICTIM, "hi", "", 8, 0, False, w["me"]]), "another visitor"),
        ("crafted-session-no-token", lambda w, c: raw_call(w, "on_zip", [VICTIM, None], session_hash="../../x"), "another visitor"),
        ("sweep-name-traversal", lambda w, c: raw_call(w, "on_tick_2", ["../../etc", None, w["me"]]), "not a sweep name"),
        ("check-data-outside", lambda w, c: raw_call(w, "on_check", [w["me"], "tiny-test", *form(w, data__name=f"{w['outside']}/secret.csv")]), "not allowed"),
        ("check-model-outside", lambda w, c: raw_call(w, "on_check", [w["me"], "tiny-test", *form(w, model__custom=str(w["outside"]))]), "model.name"),
        ("preset-path-by-index", lambda w, c: raw_call(w, "on_preset", [f"{w['outside']}/secret.yaml"]), None),
        ("upload-server-path", lambda w, c: raw_call(w, "on_upload", [{"path": f"{w['outside']}/secret.csv", "meta": {"_type": "gradio.FileData"}}, "nlu", w["me"]]), None),
        ("upload-deep-json", lambda w, c: raw_call(w, "on_upload", [upload(w, "deep.jsonl", b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"), "nlg", w["me"]]), "nested too deeply"),
        ("upload-huge-number", lambda w, c: raw_call(w, "on_upload", [upload(w, "num.jsonl", b'{"text": "a", "label": ' + b"9" * 6000 + b"}\n"), "nlu", w["me"]]), "too many digits"),
        ("upload-utf16", lambda w, c: raw_call(w, "on_upload", [upload(w, "wide.csv", "text,label\nhi,a\n".encode("utf-16")), "nlu", w["me"]]), "UTF-16"),
        ("upload-huge-label", lambda w, c: raw_call(w, "on_upload", [upload(w, "lab.csv", b"text,label\nhi,0\nho,99999999\n"), "nlu", w["me"]]), "too large"),
        ("upload-too-big", lambda w, c: upload(w, "big.csv", b"text,label\n" + b"a,b\n" * 2_000_000), None),
        ("upload-traversal-name", lambda w, c: raw_call(w, "on_upload", [upload(w, "../../evil.csv", b"text,label\nhi,a\nho,b\n"), "nlu", w["me"]]), "usable rows"),
        ("file-route-outside", lambda w, c: {"ok": False, "text": httpx.get(w["url"] + f"gradio_api/file={w['outside']}/secret.csv", timeout=10).text}, None),
        ("listing-hides-others", lambda w, c: raw_call(w, "#runs-refresh", [w["me"]]), "!" + VICTIM),
        ("bias-score-other-run", lambda w, c: raw_call(w, "on_score", [f"run:{VICTIM}", {}, w["me"]]), "not in the list of choices"),
        ("bias-upload-server-path", lambda w, c: raw_call(w, "on_upload_crows_pairs", [{"path": f"{w['outside']}/secret.csv", "meta": {"_type": "gradio.FileData"}}, {}]), None),
        ("too-many-grid-points", lambda w, c: raw_call(w, "on_sweep", [w["me"], "tiny-test", "0 1 2 3 4", "0 1 2", "0 1", 2, True, *form(w)]), "keep it to 12"),
    ]  # fmt: skip


CASES = _cases()


def test_at_least_thirty_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize(("case", "send", "expect"), CASES, ids=[c[0] for c in CASES])
def test_hostile_case(world, client, case, send, expect):
    reply = send(world, client)
    text = reply.get("text", "")
    _record(case, reply)
    if expect is not None and expect.startswith("!"):  # served, and must not name this
        assert reply["ok"], text[:500]
        assert expect[1:] not in text
    elif case == "upload-traversal-name":  # accepted, but stored under a server-chosen name
        assert reply["ok"], text[:500]
        assert not (world["base"] / "evil.csv").exists()
        assert not (world["runs"] / "evil.csv").exists()
    elif case == "upload-too-big":
        assert reply.get("status") == 413 or "path" not in reply, reply
    else:
        assert not reply["ok"], f"{case} was accepted: {text[:500]}"
        if expect is not None:
            assert expect in text, f"{case}: {text[:500]}"
    _invariants(world, text)


def _record(case: str, reply: dict) -> None:
    """One line per case in ``artifacts/hostile-cases.jsonl``: what the app answered."""
    out = ROOT / "artifacts" / "hostile-cases.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    line = {"case": case, "accepted": bool(reply.get("ok")), "reply": reply.get("text", "")[:240]}
    with open(out, "a", encoding="utf-8") as f:
        f.write(json.dumps(line, ensure_ascii=False) + "\n")


def _invariants(world, text: str) -> None:
    assert httpx.get(world["url"], timeout=30).status_code == 200, "the app stopped serving"
    assert _tree_digest(world["runs"] / VICTIM) == world["victim_digest"], "victim run changed"
    assert _tree_digest(world["outside"]) == world["outside_digest"], "outside folder changed"
    outside_now = {p.name for p in world["base"].iterdir()}
    assert outside_now <= {"runs", "outside"} | {p for p in outside_now if p.startswith("app-")}
    assert CANARY not in text, "a canary leaked"
    assert str(ROOT) not in text, "a server path (a traceback?) leaked"
    assert "root:x:" not in text, "/etc/passwd leaked"
    assert len(text) < MAX_REPLY, f"reply of {len(text)} characters"


# ---- tests beyond the table --------------------------------------------------------------------


def test_corrupt_run_is_listed_unreadable_and_others_work(world):
    reply = raw_call(world, "#runs-refresh", [ADMIN])  # the admin sees every run
    assert reply["ok"]
    assert CORRUPT in reply["text"] and "unreadable" in reply["text"]
    assert VICTIM in reply["text"]
    from gradio_client import Client

    c = Client(world["url"], verbose=False, analytics_enabled=False, download_files=False)
    corrupt = api(c, "/status", CORRUPT, ADMIN)
    assert not corrupt["ok"] and "summary.json" in corrupt["text"] and "corrupt" in corrupt["text"]
    garbage = api(c, "/status", GARBAGE, ADMIN)
    assert garbage["ok"] and garbage["value"]["events"] == 2  # the garbage line is skipped


def test_queue_limits_per_visitor_and_admin_stop(world, client):
    quick = ["train.steps=200", "train.bias_eval=false", "train.analysis=false"]
    me = secrets.token_urlsafe(24)
    first = api(client, "/start", "tiny-test", quick, me)
    second = api(client, "/start", "tiny-test", quick, me)
    assert first["ok"] and second["ok"], (first, second)
    third = api(client, "/start", "tiny-test", quick, me)
    assert not third["ok"] and "jobs queued or running" in third["text"]
    stranger = secrets.token_urlsafe(24)
    for run in (first, second):
        run_id = run["value"]["run_id"]
        assert "another visitor" in api(client, "/stop", run_id, stranger)["text"]
        assert api(client, "/stop", run_id, ADMIN)["ok"]  # the admin token stops anything
    deadline = time.time() + 120
    for run in (first, second):
        run_id = run["value"]["run_id"]
        while api(client, "/status", run_id, me)["value"]["state"] not in (
            "stopped",
            "cancelled",
            "done",
        ):
            assert time.time() < deadline
            time.sleep(0.5)
    status = api(client, "/status", first["value"]["run_id"], me)["value"]
    assert status["log_tail"] == ""  # public mode: the worker's log stays on the server
    _invariants(world, json.dumps(status))
