"""Bias probe sets on disk (``assets/probes/``) and the text operations they need.

- stereotype pairs in the CrowS-Pairs column format (``sent_more``, ``sent_less``,
  ``stereo_antistereo``, ``bias_type``); a user's CrowS-Pairs CSV loads the same way.
- occupations with the share of women in each (public workforce figures, source per row) and
  the pronoun templates filled with them.
- group words for counterfactual swaps ("he" <-> "she", "husband" <-> "wife", ...).
- prompt pairs that differ in one group word, for the side-by-side comparison.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from lab.datasets.encoding import DataError

PROBES_DIR = Path(__file__).resolve().parents[2] / "assets" / "probes"
PAIR_COLUMNS = ("sent_more", "sent_less", "stereo_antistereo", "bias_type")
# words after which "her" is an object ("saw her and"), not a possessive ("her keys")
_NOT_A_NOUN = set(
    "a an the and or but to of in on at for with from by as than that this these those "
    "because when while if so is was were be been are has had have will would can could "
    "should may might must not too very again also".split()
)


def _read_csv(path: Path, required: tuple[str, ...], what: str) -> list[tuple[int, dict]]:
    if not path.exists():
        raise DataError(f"{what}: no such file {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{what}: {path.name} is not UTF-8 text") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(
            f"{what}: {path.name} is missing column(s) {', '.join(missing)} "
            f"(it has: {', '.join(h for h in header if h) or 'no header'})"
        )
    reader.fieldnames = header
    rows = []
    try:
        for row in reader:
            rows.append((reader.line_num, row))
    except csv.Error as e:
        raise DataError(
            f"{what}: {path.name} line {reader.line_num}: malformed CSV ({e})"
        ) from None
    if not rows:
        raise DataError(f"{what}: {path.name} has no rows")
    return rows


def load_pairs(path: str | Path | None = None) -> list[dict]:
    """Stereotype pairs from a CrowS-Pairs-format CSV (the shipped set when ``path`` is None).

    CrowS-Pairs semantics: ``sent_more`` is the sentence about the more disadvantaged group.
    For ``stereo`` rows it is the stereotypical sentence; for ``antistereo`` rows it violates
    a stereotype, so the stereotypical sentence is ``sent_less``. Each returned pair has
    ``stereo`` (the stereotypical sentence), ``anti`` (the other), ``direction``, ``bias_type``.
    Extra columns (the original file's index, annotations) are ignored.
    """
    path = Path(path) if path is not None else PROBES_DIR / "stereo_pairs.csv"
    out = []
    for line, row in _read_csv(path, PAIR_COLUMNS, "stereotype pairs"):
        more, less = (row["sent_more"] or "").strip(), (row["sent_less"] or "").strip()
        direction = (row["stereo_antistereo"] or "").strip().lower()
        if not more or not less:
            raise DataError(f"stereotype pairs: {path.name} line {line}: an empty sentence")
        if direction not in ("stereo", "antistereo"):
            raise DataError(
                f"stereotype pairs: {path.name} line {line}: stereo_antistereo must be 'stereo' "
                f"or 'antistereo', got {row['stereo_antistereo']!r}"
            )
        stereo, anti = (more, less) if direction == "stereo" else (less, more)
        bias_type = (row["bias_type"] or "").strip() or "unspecified"
        out.append({"sent_more": more, "sent_less": less, "direction": direction,
                    "bias_type": bias_type, "stereo": stereo, "anti": anti})  # fmt: skip
    return out


def load_occupations(path: str | Path | None = None) -> list[dict]:
    """``[{"occupation", "women_pct", "source"}]`` from ``occupations.csv``."""
    path = Path(path) if path is not None else PROBES_DIR / "occupations.csv"
    out = []
    for line, row in _read_csv(path, ("occupation", "women_pct"), "occupations"):
        try:
            pct = float(row["women_pct"])
        except (TypeError, ValueError):
            raise DataError(
                f"occupations: {path.name} line {line}: women_pct {row['women_pct']!r} is not a number"
            ) from None
        if not 0.0 <= pct <= 100.0:
            raise DataError(
                f"occupations: {path.name} line {line}: women_pct {pct} is outside 0-100"
            )
        out.append({"occupation": row["occupation"].strip(), "women_pct": pct,
                    "source": (row.get("source") or "").strip()})  # fmt: skip
    return out


def load_templates(path: str | Path | None = None) -> list[str]:
    """Pronoun templates with ``{occupation}`` and ``{pronoun}``; '#' lines are comments."""
    path = Path(path) if path is not None else PROBES_DIR / "pronoun_templates.txt"
    lines = [x.strip() for x in path.read_text(encoding="utf-8").splitlines()]
    out = [x for x in lines if x and not x.startswith("#")]
    for t in out:
        if "{occupation}" not in t or "{pronoun}" not in t:
            raise DataError(f"pronoun template without {{occupation}} and {{pronoun}}: {t!r}")
    return out


def load_group_words(path: str | Path | None = None) -> list[tuple[str, str, str]]:
    path = Path(path) if path is not None else PROBES_DIR / "group_words.csv"
    rows = _read_csv(path, ("word_a", "word_b", "bias_type"), "group words")
    return [
        (r["word_a"].strip().lower(), r["word_b"].strip().lower(), r["bias_type"].strip())
        for _, r in rows
    ]


def _match_case(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def swap_group_words(text: str, words: list[tuple[str, str, str]] | None = None) -> str:
    """Swap every group word for its counterpart ("she" -> "he", "wife" -> "husband").

    "her" is ambiguous: it becomes "his" before a word that can start a noun phrase
    ("her keys") and "him" otherwise ("told her that").
    """
    words = load_group_words() if words is None else words
    forward: dict[str, str] = {}
    for a, b, _ in words:
        forward.setdefault(a, b)
        forward.setdefault(b, a)

    def repl(m: re.Match) -> str:
        w = m.group(0)
        low = w.lower()
        if low == "her" and ("his" in forward or "him" in forward):
            nxt = re.match(r"\s+([A-Za-z]+)", text[m.end() :])
            new = "his" if nxt and nxt.group(1).lower() not in _NOT_A_NOUN else "him"
            return _match_case(new, w)
        return _match_case(forward[low], w) if low in forward else w

    return re.sub(r"[A-Za-z]+", repl, text)


def counterfactual_prompt_pairs(path: str | Path | None = None) -> list[dict]:
    """Prompts differing in one group word: ``{"group_a", "group_b", "prompt_a", "prompt_b",
    "bias_type"}``, for comparing generations side by side."""
    path = Path(path) if path is not None else PROBES_DIR / "prompt_pairs.csv"
    out = []
    for line, r in _read_csv(path, ("bias_type", "group_a", "group_b", "template"), "prompt pairs"):
        t = r["template"]
        if "{g}" not in t:
            raise DataError(f"prompt pairs: {path.name} line {line}: the template has no {{g}}")
        out.append({"group_a": r["group_a"], "group_b": r["group_b"], "bias_type": r["bias_type"],
                    "prompt_a": t.replace("{g}", r["group_a"]), "prompt_b": t.replace("{g}", r["group_b"])})  # fmt: skip
    return out


def list_probe_sets() -> list[dict]:
    """The shipped probe sets, for ``python -m lab datasets``."""
    pairs = load_pairs()
    types = sorted({p["bias_type"] for p in pairs})
    occ, templates = load_occupations(), load_templates()
    return [
        {"name": "stereo_pairs", "kind": "bias probe", "tasks": ["nlg"], "n_items": len(pairs),
         "description": f"{len(pairs)} stereotype sentence pairs (CrowS-Pairs format) over "
         f"{len(types)} bias types: {', '.join(types)}"},
        {"name": "occupation_pronouns", "kind": "bias probe", "tasks": ["nlg"],
         "n_items": len(occ) * len(templates),
         "description": f"{len(occ)} occupations x {len(templates)} he/she templates, with the "
         "share of women in each occupation (US BLS CPS 2023)"},
        {"name": "group_words", "kind": "bias probe", "tasks": ["nlg", "nlu"],
         "n_items": len(load_group_words()),
         "description": "group-word swaps for the counterfactual flip rate on test inputs"},
        {"name": "prompt_pairs", "kind": "bias probe", "tasks": ["nlg"],
         "n_items": len(counterfactual_prompt_pairs()),
         "description": "prompts differing in one group word, for side-by-side generations"},
    ]  # fmt: skip


PROBE_SET_NAMES = ("stereo_pairs", "occupation_pronouns", "group_words", "prompt_pairs")
