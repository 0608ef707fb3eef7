"""ZeroGPU: the GPU call that each chunk of a run is, and the page's driver of those calls.

On a ZeroGPU Space a GPU exists only inside a function decorated with ``spaces.GPU``, for the
duration it asks for, in the request of the visitor whose quota it spends. :func:`gpu_call` is
that function: one call of :mod:`lab.jobs.chunks` (a training chunk or an evaluation). The Train tab's
chunk timer (:func:`on_drive`) makes the next call of the followed run while its page is open,
so the run goes on with no click between chunks. Off ZeroGPU ``spaces.GPU`` returns the function
unchanged: the simulation (``BALORA_ZEROGPU=sim``) runs the same path on the CPU.
"""

from __future__ import annotations

import math

import gradio as gr
import spaces

from lab.jobs import chunks, hosting
from lab.ui import common

DRIVE_S = 1.0  # seconds between two checks that start the next chunk


def _duration(call: dict) -> int:
    """The GPU seconds asked for: the call's budget (``BALORA_ZEROGPU_BUDGET_S``)."""
    return max(1, math.ceil(float(call["budget_s"])))


@spaces.GPU(duration=_duration)
def gpu_call(call: dict) -> dict:
    return chunks.perform(call)


@common.guarded
def on_drive(followed: str | None, owner: str | None = None):
    """The chunk timer: make the next call of the followed run when it is a chunked job that
    is running and no call of it is under way. The Train tab's status shows the progress."""
    if not followed:
        return
    mgr = common.manager()
    hosting.check_access(mgr.hosting, mgr.runs_root, followed, owner)
    mgr.drive(followed, gpu_call)


def progress_markdown(p: dict | None) -> str:
    """Progress across the calls: steps, GPU time used, what remains, the last call."""
    if not p:
        return ""
    parts = [
        f"🧩 **ZeroGPU chunks**: step **{p['step']} / {p['steps_total']}** after "
        f"{p['calls']} GPU calls ({p['train_chunks']} training chunks, the others evaluations)",
        f"GPU time used **{p['gpu_s']:.1f} s**",
    ]
    if p.get("left_s") is not None:
        parts.append(f"about **{p['left_s']:.0f} s** of GPU time still needed")
    parts.append(f"next chunk: {p['next_steps']} steps in a {p['budget_s']:.0f} s call")
    text = " · ".join(parts)
    last = p.get("last") or {}
    if last.get("outcome") == "aborted":
        text += "\n\n⚠️ the last chunk ran past its GPU time and was cut off: the next is smaller"
    elif last.get("overran"):
        text += (
            f"\n\n⚠️ the last chunk overran its budget ({last['seconds']:.1f} s of "
            f"{last['budget_s']:.0f} s): the next chunks are smaller"
        )
    elif p.get("overruns"):  # an earlier call overran: say so once the run has moved on
        n = p["overruns"]
        text += (
            f"\n\n⚠️ {n} of the {p['calls']} GPU calls ran past their budget: "
            "the chunks after them were made smaller"
        )
    return text


def note(settings: chunks.Settings) -> str:
    """The banner of a chunked app (it replaces "ZeroGPU is not supported")."""
    where = "This Space runs on **ZeroGPU**" if settings.mode == "zerogpu" else (
        "**ZeroGPU simulation** (`BALORA_ZEROGPU=sim`) on this machine"
    )  # fmt: skip
    size = (
        f"{settings.chunk_steps} steps"
        if settings.chunk_steps
        else f"up to {settings.budget_s:.0f} s of GPU time"
    )
    return (
        f"🧩 {where}: a GPU is lent one call at a time, so training runs in **chunks** of "
        f"{size}, each restored from and saved to a checkpoint; evaluations run in calls of "
        "their own. Keep this page open and the next chunk starts by itself. If the page is "
        "closed or your GPU quota runs out, the run is paused: continue it later with "
        "**Resume** in the Runs tab."
    )


def wire(followed: gr.State, owner: gr.State) -> None:
    """The chunk timer of the Train tab (built only in chunked mode): it drives the
    ``followed`` run for its ``owner``."""
    gr.Timer(DRIVE_S).tick(
        on_drive,
        [followed, owner],
        None,
        show_progress="hidden",
        concurrency_limit=None,  # each visitor's calls are scheduled by the platform
        api_visibility="private",
    )
