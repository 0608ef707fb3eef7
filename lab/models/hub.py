"""The one probe of the Hugging Face hub, for the model load and the preflight."""

from __future__ import annotations

import os

HUB_TIMEOUT_S = 5.0  # seconds one probe of the Hugging Face hub waits for its answer
HUB_OK, HUB_GATED, HUB_MISSING, HUB_OFFLINE = "ok", "gated", "missing", "offline"


def probe_hub(repo_id: str, timeout: float = HUB_TIMEOUT_S) -> tuple[str, str]:
    """What the Hugging Face hub says of the model ``repo_id``: ``(state, reason)``.

    ``state`` is ``ok``, ``gated`` or ``missing`` when the hub answered, ``offline`` when it
    did not (``HF_HUB_OFFLINE=1``, no network, an HTTP error); ``reason`` is the first line of
    the error ("" when ok). One request, never a retry: a quick check before long downloads."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return HUB_OFFLINE, "HF_HUB_OFFLINE=1"
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        HTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    try:
        HfApi().model_info(repo_id, timeout=timeout)
    except GatedRepoError as e:  # a RepositoryNotFoundError: caught first
        return HUB_GATED, _first_line(e)
    except RepositoryNotFoundError as e:
        return HUB_MISSING, _first_line(e)
    except (HTTPError, OfflineModeIsEnabled, OSError) as e:
        return HUB_OFFLINE, _first_line(e)
    return HUB_OK, ""


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:120]
