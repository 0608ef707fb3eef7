"""Who is asking: the client address of the request being handled, and the counters that
follow a visitor across owner tokens and restarts (see SECURITY.md, "Limits per address").

A visitor may rotate owner tokens at will (a new one per request), so every per-visitor limit
is also counted per client address. The address is the peer of the connection
(``request.client.host``); ``X-Forwarded-For`` is read only when the host says how many
proxies in front of the app it trusts (``BALORA_TRUSTED_PROXIES``, default 1 on a Space, else
0), and then the entry that the nearest trusted proxy saw is taken, never one the client wrote.

The page's handlers set the address of their request (:func:`asking`); the job manager and the
upload code read it (:func:`current_address`). Counters that must outlive the app (the GPU
seconds a visitor spent) are kept in a small JSON file under the runs root, written atomically.

Nothing here imports gradio or torch.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import os
import threading
from pathlib import Path

from lab.runs.store import write_json

LEDGER = ".visitors.json"  # under the runs root
_ADDRESS: contextvars.ContextVar[str | None] = contextvars.ContextVar("client", default=None)
_LOCK = threading.Lock()


def trusted_proxies() -> int:
    """How many proxies in front of the app the host trusts to append ``X-Forwarded-For``."""
    raw = os.environ.get("BALORA_TRUSTED_PROXIES")
    if raw is None or not raw.strip():
        return 1 if os.environ.get("SPACE_ID") else 0
    try:
        hops = int(raw)
    except ValueError:
        raise ValueError(f"BALORA_TRUSTED_PROXIES: a whole number, not {raw[:40]!r}") from None
    if hops < 0:
        raise ValueError(f"BALORA_TRUSTED_PROXIES: 0 or more, not {hops}")
    return hops


def client_address(peer: str | None, forwarded_for: str | None, hops: int) -> str | None:
    """The client's address: with ``hops`` trusted proxies, the ``hops``-th entry of
    ``X-Forwarded-For`` from the right (the one the nearest trusted proxy wrote down), else the
    connection's peer. Entries further left are the client's own words and are ignored."""
    if hops > 0 and forwarded_for:
        entries = [e.strip() for e in forwarded_for.split(",") if e.strip()]
        if entries:
            return entries[-min(hops, len(entries))]
    return peer or None


@contextlib.contextmanager
def asking(address: str | None):
    """Handle one request on behalf of ``address``; None (a direct call, or a handler called by
    another) keeps the address already set."""
    if address is None:
        yield
        return
    token = _ADDRESS.set(address)
    try:
        yield
    finally:
        _ADDRESS.reset(token)


def current_address() -> str | None:
    """The client address of the request being handled in this thread, or None."""
    return _ADDRESS.get()


def address_key(address: str | None) -> str | None:
    """The key under which an address is counted (a digest: the ledger holds no addresses)."""
    if not address:
        return None
    return "addr:" + hashlib.sha256(address.encode("utf-8")).hexdigest()[:24]


def owner_key(owner_digest: str | None) -> str | None:
    return "owner:" + owner_digest[:24] if owner_digest else None


# ---- the ledger ---------------------------------------------------------------------------------


def _read(root: Path) -> dict:
    path = Path(root) / LEDGER
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        # a damaged ledger must not stop the app; it is rebuilt from zero, and the log says so
        logging.getLogger("lab.jobs").warning("%s is unreadable: counters start again", LEDGER)
        return {}
    return data if isinstance(data, dict) else {}


def spent(root: Path, kind: str, keys: list[str | None]) -> float:
    """The largest amount of ``kind`` (e.g. ``gpu_s``) spent under any of ``keys``: a visitor
    is held to the most any of their tokens or their address has used."""
    table = _read(root).get(kind) or {}
    return max([float(table.get(k, 0.0)) for k in keys if k] or [0.0])


def spend(root: Path, kind: str, keys: list[str | None], amount: float) -> None:
    """Add ``amount`` of ``kind`` under every key (written atomically under the runs root)."""
    with _LOCK:
        data = _read(root)
        table = data.setdefault(kind, {})
        for k in keys:
            if k:
                table[k] = round(float(table.get(k, 0.0)) + float(amount), 3)
        write_json(Path(root) / LEDGER, data)
