"""Shared by the tabs: where runs live, the app's job manager, messages and small HTML.

The only process-wide mutable object is the job manager (``lab.jobs.get_manager``); everything
else a tab shows is read from the run directories on each request.

Every handler is wrapped in :func:`guarded`: whatever it raises reaches the page as one clear
message without server paths, and every run it touches goes through :func:`resolve_run`, which
applies the hosting mode's ownership rule (``lab.jobs.hosting``).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import inspect
import logging
import os
import re
import secrets
import tempfile
from pathlib import Path

import gradio as gr

from lab import jobs
from lab.jobs import chunks, visitors
from lab.jobs import hosting as hosting_mod
from lab.runs import store as runs

log = logging.getLogger("lab.ui")
MESSAGE_CHARS = 300  # an error shown on the page is cut to this length

PROJECT_ROOT = jobs.PROJECT_ROOT
# The finished run the Classroom tab shows first; a teacher can point it at another run.
EXAMPLE_RUN = Path(os.environ.get("BALORA_EXAMPLE_RUN") or PROJECT_ROOT / "assets" / "example_run")
CSS = PROJECT_ROOT / "assets" / "app.css"


def theme() -> gr.themes.Base:
    """Gradio's default look with text and buttons at WCAG AA contrast (4.5:1 or more)."""
    return gr.themes.Default().set(
        color_accent="#c2410c",  # the selected tab's text, among others
        body_text_color_subdued="#4b5563",
        block_info_text_color="#4b5563",
        button_primary_background_fill="#c2410c",
        button_primary_background_fill_hover="#9a3412",
        button_primary_text_color="#ffffff",
        button_cancel_background_fill="#b91c1c",
        button_cancel_background_fill_hover="#991b1b",
        button_cancel_text_color="#ffffff",
    )


def runs_root() -> Path:
    """``BALORA_RUNS_DIR`` or ``runs/`` (relative to the working directory)."""
    return runs.runs_root().resolve()


def hosting() -> hosting_mod.Hosting:
    return hosting_mod.current()


def manager() -> jobs.JobManager:
    """The app's job manager; on ZeroGPU (or its simulation) it runs jobs in chunks."""
    grace = float(os.environ.get("BALORA_STOP_GRACE_S", "120"))
    idle = float(os.environ.get("BALORA_ZEROGPU_IDLE_S", "60"))
    return jobs.get_manager(
        runs_root(), grace_s=grace, hosting=hosting(), chunked=chunks.settings(), idle_s=idle
    )


def server_key() -> bytes:
    """The key that signs the owner token the page keeps in the browser. It never leaves the
    server: it is kept in the runs folder, so a restarted app still accepts the tokens of
    earlier visitors (``BALORA_STATE_SECRET`` wins)."""
    if os.environ.get("BALORA_STATE_SECRET"):
        return os.environ["BALORA_STATE_SECRET"].encode("utf-8")
    path = runs_root() / ".state_secret"
    if not path.is_file():
        runs.atomic_write_text(path, secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip().encode("utf-8")


def browser_key() -> str:
    """The key of ``gr.BrowserState``'s own encryption. Gradio sends it to every visitor in the
    page config, so it protects nothing and must not be a secret: a one-way digest of the
    server key, stable across restarts, that tells nothing about the key itself."""
    return hmac.new(server_key(), b"browser-state", hashlib.sha256).hexdigest()[:32]


def seal(token: str) -> str:
    """``token.signature``: the owner token as the page keeps it, signed with the server key."""
    sig = hmac.new(server_key(), token.encode("utf-8"), hashlib.sha256).hexdigest()[:32]
    return f"{token}.{sig}"


def page_owner(value: object) -> str:
    """The page's owner token: the sealed token the browser holds when this server signed it,
    else a new one (a value made up by the client, or signed by another key, is replaced)."""
    if isinstance(value, str) and value.count(".") == 1:
        token, _ = value.split(".")
        if len(token) >= 16 and hmac.compare_digest(seal(token), value):
            return value
    return seal(hosting_mod.new_token())


def upload_root() -> Path:
    """Where Gradio stores uploaded files (``GRADIO_TEMP_DIR``, else ``<tmp>/gradio``)."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")


def is_upload(path: object) -> bool:
    """True for a file Gradio received as an upload (a path in its upload folder); a handler
    called with any other path is refused, whatever the request says."""
    return isinstance(path, str) and hosting_mod.inside(Path(path), upload_root())


def ensure_owner(token: str | None) -> str:
    """The visitor's owner token (kept in the browser), created on the first visit."""
    return token if isinstance(token, str) and len(token) >= 16 else hosting_mod.new_token()


# An absolute path in a message (``/data/runs/x/summary.json``, ``/usr/lib/...``): a slash
# that starts a word (not inside a URL or a ratio) followed by path characters.
_ABS_PATH = re.compile(r"(?<![\w.:/\\~…])/[\w.@+~-][\w.@+~/-]*")


def public_message(error: BaseException | str) -> str:
    """One line for the page: no server paths, at most ``MESSAGE_CHARS`` characters. Every
    absolute path is cut to its last part (``…/summary.json``), not only the known roots."""
    text = " ".join(str(error).split()) or type(error).__name__
    for path in sorted(
        {str(runs_root()), str(PROJECT_ROOT), tempfile.gettempdir(), str(Path.home())},
        key=len,
        reverse=True,
    ):
        text = text.replace(path, "…")
    text = _ABS_PATH.sub(lambda m: "…/" + m.group(0).rstrip("/").rsplit("/", 1)[-1], text)
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS] + "…"


USER_ERRORS = (ValueError, PermissionError, FileNotFoundError)  # the library's own messages


def request_address(request: gr.Request | None) -> str | None:
    """The client address of a Gradio request (see :mod:`lab.jobs.visitors` for the rule)."""
    if request is None:
        return None
    client = getattr(request, "client", None)
    peer = getattr(client, "host", None)
    headers = getattr(request, "headers", None) or {}
    forwarded = headers.get("x-forwarded-for") if hasattr(headers, "get") else None
    return visitors.client_address(peer, forwarded, visitors.trusted_proxies())


def _with_request(fn, wrapper):
    """Make Gradio pass the ``gr.Request`` to ``wrapper`` as its first argument: the wrapper
    advertises a first parameter annotated ``gr.Request`` (Gradio inserts the request there),
    and strips it again before calling ``fn``, so direct callers call ``fn``'s own signature."""
    sig = inspect.signature(fn)
    first = inspect.Parameter("_request", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    wrapper.__signature__ = sig.replace(parameters=[first, *sig.parameters.values()])
    wrapper.__annotations__ = {"_request": gr.Request, **getattr(fn, "__annotations__", {})}
    return wrapper


def _split_request(args: tuple) -> tuple[str | None, tuple]:
    if args and isinstance(args[0], gr.Request):
        return request_address(args[0]), args[1:]
    return None, args


def guarded(fn):
    """Turn anything a handler raises into a ``gr.Error`` naming the cause (logged in full on
    the server), so no request, however crafted, gets a traceback or a dead app. A generator
    handler (one that streams its status) stays a generator. The handler runs on behalf of its
    request's client address (``lab.jobs.visitors.current_address``), which every
    per-visitor limit counts too."""

    def fail(e: Exception):
        log.exception("handler %s failed", fn.__name__)
        kind = "" if isinstance(e, USER_ERRORS) else f"{type(e).__name__}: "
        return gr.Error(kind + public_message(e))

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def streaming(*args, **kwargs):
            address, args = _split_request(args)
            try:
                gen = fn(*args, **kwargs)
                while True:  # each step runs on behalf of the request (a thread of its own)
                    with visitors.asking(address):
                        item = next(gen, _END)
                    if item is _END:
                        return
                    yield item
            except gr.Error:
                raise
            except Exception as e:
                raise fail(e) from None

        return _with_request(fn, streaming)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        address, args = _split_request(args)
        try:
            with visitors.asking(address):
                return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as e:
            raise fail(e) from None

    return _with_request(fn, wrapper)


_END = object()


def zerogpu() -> bool:
    """True on a Hugging Face ZeroGPU Space (the platform sets ``SPACES_ZERO_GPU``) or when
    ``BALORA_ZEROGPU=sim`` forces its chunked training on this machine (see ``lab.jobs.chunks``)."""
    return chunks.settings().on


def escape_markdown(text: str) -> str:
    """Plain text for a Markdown widget: markup characters and HTML shown as typed."""
    return re.sub(r"([\\`*_{}\[\]<>#|~])", r"\\\1", text)


def ok(text: str) -> str:
    return f"✅ {text}"


def err(error: BaseException | str) -> str:
    """A one-paragraph error message for the page (the library's own wording, no paths)."""
    return f"❌ **Error:** {public_message(error)}"


def visible_runs(owner: str | None, rows: list[dict] | None = None) -> list[dict]:
    """``list_runs`` rows this visitor may see (all of them in local mode), newest first."""
    if rows is None:  # public mode: only the visitor's own folders are read
        h = hosting()
        only = None
        if h.public and not h.is_admin(owner):
            only = set(hosting_mod.owned_ids(runs_root(), owner))
        rows = runs.list_runs(runs_root(), only=only)
    ids = set(hosting_mod.visible(hosting(), runs_root(), [r["run_id"] for r in rows], owner))
    return [r for r in rows if r["run_id"] in ids]


def run_choices(rows: list[dict] | None = None, owner: str | None = None) -> list[tuple[str, str]]:
    """(label, run_id) pairs for a dropdown, newest first (``rows``: ``list_runs`` already read)."""
    return [(f"{r['run_id']}  [{r['status']}]", r["run_id"]) for r in visible_runs(owner, rows)]


def resolve_run(run_id: str | None, owner: str | None = None, action: str = "read") -> Path:
    """The directory of ``run_id`` under the runs root (or the shipped example run), once the
    hosting mode allows this visitor to ``action`` it."""
    if not run_id:
        raise ValueError("no run selected: pick one in the list first")
    hosting_mod.check_access(hosting(), runs_root(), run_id, owner, action)
    if run_id == hosting_mod.EXAMPLE_ID:
        return EXAMPLE_RUN
    path = runs.run_path(runs_root(), run_id)  # refuses a link or a name out of the root
    if not (path / "config.yaml").is_file():
        raise ValueError(f"unknown run {hosting_mod.snippet(run_id)}")
    return path


def public_status(status: dict) -> dict:
    """A job status as the API returns it: ``run_dir`` is the run's name under the runs root
    (its id), never the server path."""
    return {**status, "run_dir": status.get("run_id")}


def rounded(row: list) -> list:
    """A table row with its floats rounded to 4 digits for display."""
    return [round(v, 4) if isinstance(v, float) else v for v in row]
