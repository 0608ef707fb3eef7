"""Arithmetic answers: the final-number parser, equation checking and answer corruption.

- ``parse_final_number``: the number after the last "The answer is:" (else the last number in
  the text), with thousands separators and a leading "$" allowed; None when there is none.
- ``safe_eval``: evaluates + - * / and parentheses on numbers only (no names, no calls).
- ``equations``: every "a op b ... = c" written in a worked solution, to check each step.
- ``corrupt_responses``: the label-noise knob for generation sets (wrong final answers, or
  another row's response when a row has no numeric answer).
"""

from __future__ import annotations

import ast
import operator
import re

import numpy as np

from lab.datasets.encoding import DataError

ANSWER_PREFIX = "The answer is:"
_NUM = r"-?\$?\d[\d,]*(?:\.\d+)?"
_ANSWER_RE = re.compile(re.escape(ANSWER_PREFIX) + r"\s*(" + _NUM + ")", re.IGNORECASE)
_ANY_NUM_RE = re.compile(_NUM)
_EQ_RE = re.compile(
    r"((?:\(?\s*\d+(?:\.\d+)?\s*\)?\s*[-+*/]\s*)+\(?\s*\d+(?:\.\d+)?\s*\)?)\s*=\s*(\d+(?:\.\d+)?)"
)
_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_NOISE_TAG = 303


def answer_line(answer: int | float) -> str:
    return f"{ANSWER_PREFIX} {answer}"


def _to_number(s: str) -> float | None:
    s = s.replace("$", "").replace(",", "")
    try:
        return float(s)
    except ValueError:
        return None


def parse_final_number(text: str) -> float | None:
    """The final answer of a worked solution, or None when the text has no number."""
    found = _ANSWER_RE.findall(text)
    if found:
        return _to_number(found[-1])
    nums = [n for n in _ANY_NUM_RE.findall(text) if _to_number(n) is not None]
    return _to_number(nums[-1]) if nums else None


def safe_eval(expr: str) -> float:
    """Value of an arithmetic expression of numbers, + - * / and parentheses."""

    def walk(node):
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        raise ValueError(f"not a plain arithmetic expression: {expr!r}")

    return walk(ast.parse(expr, mode="eval"))


def equations(text: str) -> list[tuple[str, float]]:
    """Every "expression = result" in ``text``, as (expression, stated result)."""
    return [(lhs.strip(), float(rhs)) for lhs, rhs in _EQ_RE.findall(text)]


def numbers_match(predicted: float | None, reference: float | None) -> bool:
    return predicted is not None and reference is not None and abs(predicted - reference) < 1e-6


def corrupt_responses(
    rows: list[dict], *, fraction: float, seed: int = 0
) -> tuple[list[dict], list[int]]:
    """Exactly round(fraction * n) rows get a wrong response; returns (rows, changed indices).

    A row with an ``answer`` keeps its worked solution but ends with a wrong final number
    (off by 1 to 10, never negative); other rows take the response of another row whose
    response differs.
    """
    n = len(rows)
    k = round(fraction * n)
    rng = np.random.default_rng([seed, _NOISE_TAG])
    idx = sorted(rng.choice(n, size=k, replace=False).tolist()) if k else []
    out = [dict(r) for r in rows]
    for i in idx:
        r = out[i]
        if "answer" in r:
            shift = int(rng.integers(1, 11)) * (1 if r["answer"] < 11 or rng.random() < 0.5 else -1)
            wrong = r["answer"] + shift
            head = r["response"].rsplit(ANSWER_PREFIX, 1)[0]
            r["response"] = head + answer_line(wrong)
            r["answer"] = wrong
            continue
        others = [j for j in range(n) if rows[j]["response"] != r["response"]]
        if not others:
            raise DataError("label noise needs at least two different responses")
        r["response"] = rows[int(rng.choice(others))]["response"]
    return out, idx
