"""Hosting modes, limits, allowed sources and run ownership (see SECURITY.md).

- ``local``  one trusted user on loopback (the default of ``python app.py``): paths are free,
             limits are generous, every run is everyone's.
- ``public`` a Space or a non-loopback address: a run belongs to the browser that started it
             (an owner token), datasets and models come only from allowed sources, presets
             only by name, and every size has a strict limit.

Nothing here imports gradio or torch; the app, the job manager and the CLI all ask this module.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lab.config import ConfigError, RunConfig, list_presets
from lab.config import short_repr as snippet

MODES = ("local", "public")
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$")
EXAMPLE_ID = "example"  # the shipped example run: readable by every visitor
OWNERS_DIR = ".owners"  # under the runs root: one file per run holding its owner's digest
UPLOADS_DIR = "_uploads"  # under the runs root: one folder per owner, named by the server
DEFAULT_HUB_ALLOWLIST = ("HuggingFaceTB/SmolLM2-135M-Instruct",)


class AccessError(PermissionError):
    """A visitor asked for a run (or a path) that is not theirs; the message says so."""


@dataclass(frozen=True)
class Limits:
    """Upper bounds on every size a request can set; each error names the limit."""

    steps: int
    batch_size: int
    grad_accum: int
    seq_len: int
    max_train: int
    max_eval: int
    probe_size: int
    bias_items: int
    rank: int
    arms: int
    eval_points: int
    max_new_tokens: int
    prompt_chars: int
    jobs_per_owner: int  # queued plus running jobs of one visitor
    jobs_total: int  # queued plus running jobs of the whole app
    override_chars: int  # all ``key=value`` overrides of one request together
    override_items: int
    upload_bytes: int
    upload_rows: int
    uploads_per_owner: int
    classes: int  # distinct labels of a classification dataset
    grid_points: int  # points of one Tune grid
    seeds: int  # train.seeds of one run (every arm is trained once per seed)
    lr_grid: int  # candidate rates of train.lr_grid (lr_mode tuned)
    pissa_niter: int  # power iterations of the PiSSA init (no step limit covers them)
    top_k: int  # reg.top_k
    svd_k: int  # reg.svd_k


LOCAL_LIMITS = Limits(
    steps=100_000,
    batch_size=512,
    grad_accum=256,
    seq_len=8192,
    max_train=1_000_000,
    max_eval=100_000,
    probe_size=10_000,
    bias_items=100_000,
    rank=1024,
    arms=16,
    eval_points=1000,
    max_new_tokens=1024,
    prompt_chars=20_000,
    jobs_per_owner=100,
    jobs_total=100,
    override_chars=20_000,
    override_items=200,
    upload_bytes=50_000_000,
    upload_rows=200_000,
    uploads_per_owner=1000,
    classes=1000,
    grid_points=12,
    seeds=16,
    lr_grid=12,
    pissa_niter=1000,
    top_k=1_000_000,
    svd_k=10_000,
)
PUBLIC_LIMITS = Limits(
    steps=200,
    batch_size=16,
    grad_accum=8,
    seq_len=512,
    max_train=5000,
    max_eval=256,
    probe_size=256,
    bias_items=2000,
    rank=64,
    arms=8,
    eval_points=20,
    max_new_tokens=128,
    prompt_chars=2000,
    jobs_per_owner=2,
    jobs_total=10,
    override_chars=2000,
    override_items=40,
    upload_bytes=5_000_000,
    upload_rows=20_000,
    uploads_per_owner=10,
    classes=50,
    grid_points=12,
    seeds=3,
    lr_grid=4,
    pissa_niter=16,
    top_k=1000,
    svd_k=64,
)


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def detect_mode(host: str = "127.0.0.1", flag: str | None = None, share: bool = False) -> str:
    """``flag`` (--public/--local) wins; then a Space, a share link or a non-loopback bind make
    the app public; ``BALORA_MODE`` sets it for a loopback bind; else local."""
    if flag:
        if flag not in MODES:
            raise ValueError(f"unknown hosting mode {flag!r} (known: {', '.join(MODES)})")
        return flag
    if os.environ.get("SPACE_ID") or share or not is_loopback(host):
        return "public"
    env = os.environ.get("BALORA_MODE", "")
    return env if env in MODES else "local"


@dataclass(frozen=True)
class Hosting:
    mode: str
    limits: Limits
    hub_allowlist: tuple[str, ...]
    admin_digest: str | None  # sha256 of BALORA_ADMIN_TOKEN, when one is set

    @property
    def public(self) -> bool:
        return self.mode == "public"

    def is_admin(self, token: str | None) -> bool:
        return (
            bool(token)
            and self.admin_digest is not None
            and hmac.compare_digest(digest(token), self.admin_digest)
        )


def make(mode: str) -> Hosting:
    if mode not in MODES:
        raise ValueError(f"unknown hosting mode {mode!r} (known: {', '.join(MODES)})")
    allow = os.environ.get("BALORA_HUB_ALLOWLIST")
    hub = tuple(a.strip() for a in allow.split(",") if a.strip()) if allow is not None else None
    admin = os.environ.get("BALORA_ADMIN_TOKEN") or None
    return Hosting(
        mode=mode,
        limits=PUBLIC_LIMITS if mode == "public" else LOCAL_LIMITS,
        hub_allowlist=DEFAULT_HUB_ALLOWLIST if hub is None else hub,
        admin_digest=digest(admin) if admin else None,
    )


def current() -> Hosting:
    """The mode of this process: ``BALORA_MODE`` (set by ``app.py`` at start), else local."""
    mode = os.environ.get("BALORA_MODE", "local")
    return make(mode if mode in MODES else "public")  # an unknown value fails safe


# ---- ownership ----------------------------------------------------------------------------------


def new_token() -> str:
    return secrets.token_urlsafe(24)


def digest(token: str) -> str:
    return hashlib.sha256(str(token).encode("utf-8")).hexdigest()


def is_run_id(run_id: object) -> bool:
    """Whether ``run_id`` is one folder name of safe characters (never "." or "..")."""
    return isinstance(run_id, str) and bool(RUN_ID.match(run_id)) and run_id not in (".", "..")


def check_run_id(run_id: object) -> str:
    """A run id is one folder name of safe characters; anything else is refused."""
    if not is_run_id(run_id):
        raise ValueError(f"not a run id: {snippet(run_id)}")
    return run_id


def record_owner(root: Path, run_id: str, token: str | None) -> None:
    if not token:
        return
    from lab.runs.store import atomic_write_text

    atomic_write_text(Path(root) / OWNERS_DIR / check_run_id(run_id), digest(token) + "\n")


def owner_digest(root: Path, run_id: str) -> str | None:
    path = Path(root) / OWNERS_DIR / check_run_id(run_id)
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


def owns(root: Path, run_id: str, token: str | None) -> bool:
    mine = owner_digest(root, run_id)
    return bool(token) and mine is not None and hmac.compare_digest(mine, digest(token))


def check_access(
    hosting: Hosting, root: Path, run_id: str, token: str | None, action: str = "read"
) -> None:
    """Raise :class:`AccessError` unless this visitor may ``action`` run ``run_id``.

    Local mode: everything. Public mode: the owner of the run, or the admin token; the shipped
    example may be read (not stopped) by anyone."""
    run_id = check_run_id(run_id)
    if not hosting.public or hosting.is_admin(token):
        return
    if run_id == EXAMPLE_ID and action != "stop":
        return
    if not owns(root, run_id, token):
        raise AccessError(
            f"run {run_id} was started by another visitor: you can only {action} runs started "
            "from this browser"
        )


def visible(hosting: Hosting, root: Path, run_ids: list[str], token: str | None) -> list[str]:
    """The run ids this visitor may see (all of them in local mode)."""
    if not hosting.public or hosting.is_admin(token):
        return list(run_ids)
    mine = set(owned_ids(root, token))
    return [r for r in run_ids if r in mine]


_OWNERS_INDEX: dict[Path, tuple[tuple[int, int], dict[str, list[str]]]] = {}
_INDEX_LOCK = threading.Lock()


def owner_index(root: Path) -> dict[str, list[str]]:
    """Owner digest -> the run ids it owns, read from ``.owners/`` once and again only when
    that folder changes (every owner file is written by a rename into it, which changes the
    folder's modification time), so a listing never reads thousands of owner files. The
    stamp is (modification time, number of files); a folder changed in the last 100 ms is not
    cached, since two renames within one clock tick can leave its time unchanged."""
    folder = Path(root) / OWNERS_DIR
    try:
        names = os.listdir(folder)
        mtime = folder.stat().st_mtime_ns
    except FileNotFoundError:
        return {}
    stamp = (mtime, len(names))
    key = folder.resolve()
    with _INDEX_LOCK:
        cached = _OWNERS_INDEX.get(key)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        index: dict[str, list[str]] = {}
        for name in names:
            path = folder / name
            if is_run_id(name) and not name.startswith(".") and path.is_file():
                index.setdefault(path.read_text(encoding="utf-8").strip(), []).append(name)
        if time.time_ns() - mtime > 100_000_000:
            _OWNERS_INDEX[key] = (stamp, index)
        return index


def owned_ids(root: Path, token: str | None) -> list[str]:
    """The run ids started with ``token`` (none without one)."""
    return list(owner_index(root).get(digest(token), [])) if token else []


# ---- uploads ------------------------------------------------------------------------------------


def upload_dir(root: Path, token: str | None) -> Path:
    """The visitor's own upload folder, named by the server from the owner token's digest."""
    name = digest(token)[:32] if token else "local"
    return Path(root).resolve() / UPLOADS_DIR / name


UPLOAD_REF = "upload:"  # how the page names a visitor's upload: ``upload:<file name>``


def upload_ref(path: Path) -> str:
    """The name the page shows and sends back for a kept upload (never its server path)."""
    return UPLOAD_REF + Path(path).name


def resolve_upload_refs(overrides: list[str], root: Path, token: str | None) -> list[str]:
    """``key=upload:<name>`` overrides turned into the path of that file in the visitor's own
    upload folder; a name with a folder in it, or one the visitor did not upload, is refused."""
    import json

    out = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        value = raw.strip()
        if value.startswith('"'):
            try:
                value = json.loads(value)
            except ValueError:
                value = raw
        if not sep or not isinstance(value, str) or not value.startswith(UPLOAD_REF):
            out.append(item)
            continue
        name = value[len(UPLOAD_REF) :]
        folder = upload_dir(root, token)
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise ConfigError(f"{key.strip()}: {snippet(value)} is not an upload's name")
        if not (folder / name).is_file():
            raise ConfigError(f"{key.strip()}: you have no upload named {snippet(name)}")
        out.append(f"{key}={json.dumps(str(folder / name))}")
    return out


def inside(path: Path, root: Path) -> bool:
    """True when ``path`` resolves to ``root`` or below it (links followed)."""
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
    except ValueError:
        return False
    return True


# ---- requests -----------------------------------------------------------------------------------


def check_preset(hosting: Hosting, preset: object) -> str:
    """Public mode takes presets by name only; local mode also takes a path to a YAML file."""
    if not isinstance(preset, str) or not preset.strip():
        raise ConfigError("preset: pick a preset first")
    if hosting.public and preset not in list_presets():
        raise ConfigError(
            f"preset: unknown preset {snippet(preset)}; on this public app pick one of "
            f"{', '.join(list_presets())}"
        )
    return preset


def check_overrides(hosting: Hosting, overrides: object) -> list[str]:
    """A list of ``key=value`` strings within the count and length limits."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        overrides = [o for o in overrides.splitlines() if o.strip()]
    if not isinstance(overrides, (list, tuple)) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError("overrides: expected a list of key=value texts")
    lim = hosting.limits
    if len(overrides) > lim.override_items:
        raise ConfigError(
            f"overrides: {len(overrides)} items, over the limit of {lim.override_items}"
        )
    total = sum(len(o) for o in overrides)
    if total > lim.override_chars:
        raise ConfigError(f"overrides: {total} characters, over the limit of {lim.override_chars}")
    return list(overrides)


# config path -> the ``Limits`` entry that caps it (an upper bound declared in lab.config holds too)
FIELD_LIMITS = {
    "train.steps": "steps",
    "train.tune_steps": "steps",
    "train.eval_every": "steps",
    "train.batch_size": "batch_size",
    "train.grad_accum": "grad_accum",
    "train.seq_len": "seq_len",
    "data.max_train": "max_train",
    "data.max_eval": "max_eval",
    "train.probe_size": "probe_size",
    "train.bias_items": "bias_items",
    "lora.rank": "rank",
    "lora.pissa_niter": "pissa_niter",
    "reg.top_k": "top_k",
    "reg.svd_k": "svd_k",
}


def upper_bound(path: str, limits: Limits) -> float | None:
    """The largest value config field ``path`` may take under ``limits`` (for a list or a
    mapping: each element); None when nothing bounds it."""
    from lab.config import rules

    r = rules(path)
    r = r.get("items", r)
    caps = [r[k] for k in ("le", "lt") if k in r]
    if path in FIELD_LIMITS:
        caps.append(getattr(limits, FIELD_LIMITS[path]))
    return min(caps) if caps else None


def _value(cfg: RunConfig, path: str):
    node = cfg
    for part in path.split("."):
        node = getattr(node, part)
    return node


def check_limits(cfg: RunConfig, limits: Limits) -> None:
    """Raise ``ConfigError`` naming the first field over its limit."""
    t = cfg.train
    eval_points = 2 + (t.steps // t.eval_every if t.eval_every else 0)
    checks = [
        (path, _value(cfg, path), getattr(limits, name)) for path, name in FIELD_LIMITS.items()
    ]
    checks += [
        ("arms", len(cfg.arms), limits.arms),
        ("train.seeds", len(t.seeds), limits.seeds),
        ("train.lr_grid", len(t.lr_grid) if t.lr_mode == "tuned" else 0, limits.lr_grid),
        ("train.eval_every (eval points)", eval_points, limits.eval_points),
    ]
    for where, value, cap in checks:
        if value > cap:
            raise ConfigError(f"{where}: {value} is over the limit of {cap} on this app")


def _source_error(field: str, value: str, allowed: str) -> ConfigError:
    return ConfigError(f"{field}: {snippet(value)} is not allowed on this public app ({allowed})")


def check_sources(hosting: Hosting, cfg: RunConfig, root: Path, token: str | None) -> None:
    """Public mode: models from the embedded set, the tiny models or the hub allowlist;
    datasets from the shipped sets, the visitor's own uploads or the hub allowlist."""
    if not hosting.public:
        return
    from lab.datasets import list_datasets
    from lab.models import EMBEDDED, TINY

    model = cfg.model.name
    if model not in EMBEDDED and model not in TINY and model not in hosting.hub_allowlist:
        raise _source_error(
            "model.name", model, "an embedded model, a tiny-* model or an allowed hub id"
        )
    for field, value in path_fields(cfg):
        if field == "data.name" and (
            value in {d["name"] for d in list_datasets()} or value in hosting.hub_allowlist
        ):
            continue
        if not value:
            continue
        if not inside(Path(value), upload_dir(root, token)):
            raise _source_error(field, value, "a shipped dataset or a file you uploaded")


def path_fields(cfg: RunConfig) -> list[tuple[str, str]]:
    """Every config field that may name a file on the server."""
    out = [("data.name", cfg.data.name)]
    bias = getattr(cfg, "bias", None)
    if bias is not None and dataclasses.is_dataclass(bias):
        out += [(f"bias.{f.name}", getattr(bias, f.name)) for f in dataclasses.fields(bias)
                if isinstance(getattr(bias, f.name), str)]  # fmt: skip
    return out
