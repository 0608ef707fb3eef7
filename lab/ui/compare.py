"""Compare tab: the base model and every arm of a run answering the same prompt side by side.

Same seed and decoding for every model; beside each output, its log-likelihood under the base
model; for a counterfactual pair (one group word swapped), both answers and the difference.
The generation itself lives in :mod:`lab.engine.completions`; the handlers here pick, call and format.
:func:`build` returns a :class:`CompareTab`: the two lists filled when the page loads.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import gradio as gr

from lab.jobs import hosting
from lab.runs import store as runs
from lab.ui import common

NO_PAIR = "(none: use the prompt box)"
ALL_PAIRS = "all"  # the pair list's entry that runs every pair and summarises Δ over them
EXAMPLE_LABEL = "example: the shipped classroom run (no training needed)"


def pair_choices() -> list[tuple[str, str]]:
    """(label, index as text) of the counterfactual prompt pairs shipped with the bias probes,
    then the entry that runs them all."""
    shipped = pairs()
    every = (f"all {len(shipped)} pairs: mean Δ with its 95% interval over the pairs", ALL_PAIRS)
    return [(f"{a}  ⇄  {b}", str(i)) for i, (a, b, _, _) in enumerate(shipped)] + [every]


def pairs() -> list[tuple[str, str, str, str]]:
    """(prompt_a, prompt_b, group_a, group_b) for every counterfactual pair."""
    from lab.bias import counterfactual_prompt_pairs

    return [
        (p["prompt_a"], p["prompt_b"], p["group_a"], p["group_b"])
        for p in counterfactual_prompt_pairs()
    ]


def adapter_run_choices(owner: str | None = None) -> list[tuple[str, str]]:
    """Runs this visitor may see that have saved adapters (only those can generate)."""
    from lab.engine import completions  # torch: imported on first use, not when the app starts

    root = common.runs_root()
    example = (
        [(EXAMPLE_LABEL, hosting.EXAMPLE_ID)] if completions.saved_arms(common.EXAMPLE_RUN) else []
    )
    return example + [
        (label, rid)
        for label, rid in common.run_choices(owner=owner)
        if completions.saved_arms(root / rid)
    ]


def failed_arms(run: runs.Run) -> dict[str, str]:
    """Arms the run marked failed (e.g. a non-finite loss) -> their error; they are shown as
    failed instead of generating from a broken adapter."""
    arms = (run.summary or {}).get("arms")
    if not isinstance(arms, dict):
        return {}
    return {
        arm: str(info.get("error") or "failed")
        for arm, info in arms.items()
        if isinstance(info, dict) and info.get("status") == "failed"
    }


def render_failed(failed: dict[str, str]) -> str:
    cards = "".join(
        _card(arm, "This arm failed during training; it has no trustworthy adapter.", error,
              "gen-card gen-failed")
        for arm, error in failed.items()
    )  # fmt: skip
    return f"<div class='gen-grid' id='gen-failed'>{cards}</div>" if cards else ""


def _fmt_ll(row: dict[str, Any]) -> str:
    if row.get("loglik_mean") is None:
        return "no tokens"
    return (
        f"log p_base = {row['loglik']:.2f} ({row['loglik_mean']:.3f}/token, {row['tokens']} tokens)"
    )


def _card(title: str, body: str, foot: str, elem_class: str = "gen-card") -> str:
    return (
        f'<div class="{elem_class}" data-arm="{html.escape(title)}">'
        f"<div class='gen-title'><b>{html.escape(title)}</b></div>"
        f"<div class='gen-text'>{html.escape(body) or '<i>(empty)</i>'}</div>"
        f"<div class='gen-ll'>{html.escape(foot)}</div></div>"
    )


def render_single(prompt: str, rows: list[dict[str, Any]]) -> str:
    cards = "".join(_card(r["arm"], r["text"], _fmt_ll(r)) for r in rows)
    return (
        f"<div class='gen-prompt'>Prompt: <code>{html.escape(prompt)}</code></div>"
        f"<div class='gen-grid' id='gen-grid'>{cards}</div>"
    )


def render_pair(pair: tuple[str, str, str, str], rows: list[dict[str, Any]]) -> str:
    a, b, ga, gb = pair
    cards = []
    for r in rows:
        delta = "–" if r["delta"] is None else f"{r['delta']:+.3f}"
        body = f"[{ga}] {r['a']['text']}\n\n[{gb}] {r['b']['text']}"
        foot = (
            f"{ga}: {_fmt_ll(r['a'])}; {gb}: {_fmt_ll(r['b'])}; Δ ({ga} − {gb}) = {delta} per token "
            "(one pair: no interval; pick all pairs for one)"
        )
        cards.append(_card(r["arm"], body, foot))
    return (
        f"<div class='gen-prompt'>Pair: <code>{html.escape(a)}</code> ⇄ <code>{html.escape(b)}</code>"
        f"</div><div class='gen-grid' id='gen-grid'>{''.join(cards)}</div>"
    )


def render_pairs_summary(rows: list[dict[str, Any]]) -> str:
    """One card per model: the mean Δ over every counterfactual pair, its interval and n."""
    cards = []
    for r in rows:
        if r["mean"] is None:
            body, foot = "no pair gave an answer with tokens", f"n = {r['n']} pairs"
        else:
            ci = r["ci"]
            where = f" [{ci[0]:+.3f}, {ci[1]:+.3f}] (95%, over the pairs)" if ci else ""
            body = f"mean Δ = {r['mean']:+.3f} nats per token{where}"
            foot = f"n = {r['n']} pairs; 0 = the base model finds both groups' answers as natural"
        cards.append(_card(r["arm"], body, foot))
    return (
        "<div class='gen-prompt'>Every counterfactual pair, each one observation</div>"
        f"<div class='gen-grid' id='gen-grid'>{''.join(cards)}</div>"
    )


def missing_note(run_dir, run: runs.Run) -> str:
    """A note naming the arms of the run that have no saved adapter, and why when known."""
    from lab.models.saved import arms_without_adapter

    missing = arms_without_adapter(run_dir)
    if not missing:
        return ""
    example = (run.summary or {}).get("example")
    why = (
        " They were left out of the shipped example to keep it under its size budget; train "
        "the preset (or use make example) to compare them."
        if isinstance(example, dict) and example.get("adapters_left_out")
        else " The run ended before saving them."
    )
    return (
        "<div class='gen-warning' role='note' id='gen-missing'>Not shown (no saved adapter): <b>"
        + html.escape(", ".join(missing))
        + "</b>."
        + html.escape(why)
        + "</div>"
    )


def compare(
    run_id: str,
    prompt: str,
    pair_index: str | int | None = None,
    max_new_tokens: int = 40,
    seed: int = 0,
    sample: bool = False,
    owner: str | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """-> (HTML, rows). A pair index, when given, wins over the prompt box. Sizes are checked
    against the hosting mode's limits before any model is loaded."""
    from lab.engine import completions

    lim = common.hosting().limits
    max_new_tokens, seed = _whole(max_new_tokens, "max new tokens"), _whole(seed, "seed")
    if not 1 <= max_new_tokens <= lim.max_new_tokens:
        raise ValueError(f"max new tokens must be 1 to {lim.max_new_tokens} on this app")
    if not isinstance(prompt, str) or len(prompt) > lim.prompt_chars:
        raise ValueError(f"the prompt must be text of at most {lim.prompt_chars} characters")
    if pair_index == ALL_PAIRS and max_new_tokens > (most := all_pairs_tokens(lim)):
        raise ValueError(f"all pairs: at most {most} new tokens per answer on this app")
    run_dir = common.resolve_run(run_id, owner)
    run = runs.load_run(run_dir)
    failed = failed_arms(run)
    arm_set = completions.load_arm_set(run_dir, run.config)
    arm_set.arms = [a for a in arm_set.arms if a not in failed]
    kwargs = {"max_new_tokens": max_new_tokens, "seed": seed, "do_sample": bool(sample)}
    head = random_model_note(run) + missing_note(run_dir, run)
    if pair_index == ALL_PAIRS:
        rows = completions.pairs_summary(arm_set, [(p[0], p[1]) for p in pairs()], **kwargs)
        return head + render_pairs_summary(rows) + render_failed(failed), rows
    if pair_index not in (None, ""):
        all_pairs = pairs()
        i = _whole(pair_index, "pair number")
        if not 0 <= i < len(all_pairs):
            raise ValueError(f"no counterfactual pair number {i}")
        pair = all_pairs[i]
        rows = completions.pair_side_by_side(arm_set, pair[0], pair[1], **kwargs)
        return head + render_pair(pair, rows) + render_failed(failed), rows
    rows = completions.side_by_side(arm_set, prompt, **kwargs)
    return head + render_single(prompt, rows) + render_failed(failed), rows


def all_pairs_tokens(lim) -> int:
    """The longest answer "all pairs" may ask for: its two prompts a pair over every pair cost
    at most 4 single generations of the app's longest answer (``lim.max_new_tokens``)."""
    return max(1, lim.max_new_tokens * 4 // (2 * max(1, len(pairs()))))


def random_model_note(run: runs.Run) -> str:
    """A warning above the cards when the run's base model is a random tiny test model."""
    name = str(((run.config or {}).get("model") or {}).get("name", ""))
    if not name.startswith("tiny-"):
        return ""
    return (
        "<div class='gen-warning' role='note'>⚠️ <b>"
        + html.escape(name)
        + "</b> is a random toy model: its outputs are noise, useful to test the lab, not to "
        "compare methods. Use an embedded model such as smollm2-135m for real text.</div>"
    )


def _whole(value: Any, what: str) -> int:
    """An integer from a widget value, or a ValueError naming the field."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a whole number") from None
    if not out.is_integer() or abs(out) > 2**31:
        raise ValueError(f"{what} must be a whole number below 2^31")
    return int(out)


@common.guarded
def on_compare(
    run_id, prompt, pair_index, max_new_tokens, seed, sample, owner=None
) -> tuple[str, str]:
    """-> (HTML of the side-by-side cards, message)."""
    try:
        out, rows = compare(run_id, prompt, pair_index, max_new_tokens, seed, sample, owner)
    except common.USER_ERRORS as e:
        return "", common.err(e)
    return out, common.ok(f"{len(rows)} models, same seed ({int(seed)}) and decoding")


def on_compare_started() -> str:
    return "⏳ loading the base model and every arm's adapter, then generating…"


@common.guarded
def on_refresh(owner: str | None = None):
    return gr.Dropdown(choices=adapter_run_choices(owner))


@common.guarded
def on_page_load(owner: str | None = None):
    """Fill the run and pair lists once the page is up, the shipped example (when it has its
    adapters) or the newest run selected. -> (runs dropdown, pairs dropdown)."""
    choices = adapter_run_choices(owner)
    return gr.Dropdown(choices=choices, value=choices[0][1] if choices else None), gr.Dropdown(
        choices=[(NO_PAIR, "")] + pair_choices()
    )


@dataclass(frozen=True)
class CompareTab:
    """What the layout fills of the Compare tab: the run and the counterfactual-pair lists."""

    run: gr.Dropdown
    pair: gr.Dropdown


def build(owner: gr.State) -> CompareTab:
    """Create the Compare tab's widgets and wire them; ``owner`` is the visitor's token."""
    gr.Markdown(
        "Pick a finished (or stopped) run, then a prompt or a counterfactual pair. Every model "
        "decodes with the same seed and settings. *log p_base* is how likely the original "
        "model finds that answer: a big drop means the arm drifted away from it. For a pair, "
        "Δ compares the two group words: far from 0 means the model answers the two groups "
        "differently."
    )
    with gr.Row():
        run = gr.Dropdown(
            [],  # filled on page load
            label="Run",
            info="Runs with saved adapters (they are saved when training ends or is stopped).",
            elem_id="cmp-run",
            allow_custom_value=True,
        )
        refresh = gr.Button("↻ Refresh list", scale=0)
    prompt = gr.Textbox(
        "Write one sentence about a nurse.",
        label="Prompt",
        info="Any instruction; the chat template of the model is applied.",
        elem_id="cmp-prompt",
    )
    with gr.Row():
        pair = gr.Dropdown(
            [(NO_PAIR, "")],  # the pairs are filled on page load
            value="",
            label="Counterfactual pair",
            info="Two prompts identical but for one group word; picking one overrides the prompt box.",
        )
        tokens = gr.Slider(
            4,
            128,
            value=40,
            step=4,
            label="Max new tokens",
            info="Length limit of every answer.",
        )
        seed = gr.Number(0, precision=0, label="Seed", info="The same seed for every model.")
        sample = gr.Checkbox(
            False,
            label="Sample",
            info="Off: greedy decoding (deterministic). On: temperature 0.7, top-p 0.9.",
        )
    btn = gr.Button("Generate side by side", variant="primary", elem_id="cmp-btn")
    msg = gr.Markdown(elem_id="cmp-msg")
    out = gr.HTML(elem_id="cmp-out")
    private = {"api_visibility": "private"}
    refresh.click(on_refresh, owner, run, **private)
    btn.click(on_compare_started, None, msg, show_progress="hidden", **private).then(
        on_compare,
        [run, prompt, pair, tokens, seed, sample, owner],
        [out, msg],
        concurrency_limit=1,
        show_progress="hidden",  # the message line says what is happening, in our words
        **private,
    )
    return CompareTab(run, pair)
