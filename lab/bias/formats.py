"""Readers for published bias benchmarks in the formats they are released in.

- CrowS-Pairs CSV (Nangia et al., 2020): columns ``sent_more``, ``sent_less``,
  ``stereo_antistereo``, ``bias_type``; any other column (the unnamed index, ``annotations``,
  ``anon_writer``, ...) is ignored.
- BBQ JSONL (Parrish et al., 2022): one object per line with ``context``, ``question``,
  ``ans0``-``ans2``, ``label``, ``context_condition``, ``question_polarity``, ``category``,
  ``answer_info`` and ``additional_metadata.stereotyped_groups``. Which answers are the biased
  ones is derived here, once, from the answer groups (see :func:`_biased_answers`).
- WinoGender-style templates (Rudinger et al., 2018): tab- or comma-separated columns
  ``occupation``, ``participant`` (the original header ``occupation(0)`` /
  ``other-participant(1)`` is accepted), ``answer`` (0 = the pronoun refers to the occupation,
  1 = to the participant; optional) and ``sentence`` with the placeholders ``$OCCUPATION``,
  ``$PARTICIPANT`` and one or more of ``$NOM_PRONOUN``, ``$POSS_PRONOUN``, ``$ACC_PRONOUN``.
  The occupation statistics are a CSV in the format of the shipped ``occupations.csv``
  (``occupation``, ``women_pct``, optional ``source``).

Every reader raises :class:`lab.datasets.encoding.DataError` naming the file, the line and the problem.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from lab.datasets.encoding import DataError
from lab.datasets.probes import load_occupations

CROWS_COLUMNS = ("sent_more", "sent_less", "stereo_antistereo", "bias_type")
BBQ_FIELDS = (
    "context",
    "question",
    "ans0",
    "ans1",
    "ans2",
    "label",
    "context_condition",
    "question_polarity",
    "category",
    "answer_info",
    "additional_metadata",
)
WINOGENDER_COLUMNS = ("occupation", "participant", "sentence")
PRONOUNS = {  # gender -> (nominative, possessive, accusative)
    "male": ("he", "his", "him"),
    "female": ("she", "her", "her"),
    "neutral": ("they", "their", "them"),
}
_PRONOUN_SLOTS = ("$NOM_PRONOUN", "$POSS_PRONOUN", "$ACC_PRONOUN")
_KNOWN_SLOTS = {"$OCCUPATION", "$PARTICIPANT", *_PRONOUN_SLOTS}
MAX_BYTES = 64 * 1024 * 1024  # a benchmark file larger than this is refused


def _read_text(path: str | Path, what: str) -> tuple[str, str]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what}: no such file {path.name}")
    if path.stat().st_size > MAX_BYTES:
        raise DataError(f"{what}: {path.name} is larger than {MAX_BYTES // 2**20} MiB")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise DataError(f"{what}: {path.name} line {line}: not UTF-8 text") from None
    if not text.strip():
        raise DataError(f"{what}: {path.name} is empty")
    return path.name, text


def _table(
    name: str, text: str, what: str, required: tuple[str, ...], *, delimiter: str = ","
) -> list[tuple[int, dict[str, str]]]:
    """(line, row) of a delimited table with a header; every record must have the header's
    number of fields (a stray delimiter or a broken quote is reported with its line)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = [h.strip() for h in next(reader)]
    except csv.Error as e:
        raise DataError(f"{what}: {name} line 1: malformed header ({e})") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(
            f"{what}: {name} line 1: missing column(s) {', '.join(missing)} "
            f"(the header has: {', '.join(h for h in header if h) or 'nothing'})"
        )
    rows, start = [], reader.line_num + 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise DataError(f"{what}: {name} line {start}: malformed record ({e})") from None
        if fields and any(f.strip() for f in fields):
            if len(fields) != len(header):
                raise DataError(
                    f"{what}: {name} line {start}: {len(fields)} fields where the header has "
                    f"{len(header)} (an unquoted '{delimiter}' in a sentence?)"
                )
            rows.append((start, dict(zip(header, fields))))
        start = reader.line_num + 1
    if not rows:
        raise DataError(f"{what}: {name} has a header but no rows")
    return rows


def load_crows_pairs(path: str | Path) -> list[dict]:
    """Pairs of a CrowS-Pairs CSV: ``sent_more``, ``sent_less``, ``direction`` ("stereo" or
    "antistereo"), ``bias_type``, and ``stereo`` / ``anti`` (the stereotypical sentence and the
    other: ``sent_more`` is the stereotypical one on "stereo" rows, ``sent_less`` on
    "antistereo" rows), ``line`` (the line it starts on)."""
    what = "CrowS-Pairs"
    name, text = _read_text(path, what)
    out = []
    for line, row in _table(name, text, what, CROWS_COLUMNS):
        more, less = row["sent_more"].strip(), row["sent_less"].strip()
        direction = row["stereo_antistereo"].strip().lower()
        where = f"{what}: {name} line {line}"
        if not more or not less:
            raise DataError(f"{where}: sent_more and sent_less must both be non-empty")
        if more == less:
            raise DataError(f"{where}: sent_more and sent_less are the same sentence")
        if direction not in ("stereo", "antistereo"):
            raise DataError(
                f"{where}: stereo_antistereo must be 'stereo' or 'antistereo', "
                f"got {row['stereo_antistereo']!r}"
            )
        bias_type = row["bias_type"].strip()
        if not bias_type:
            raise DataError(f"{where}: bias_type is empty")
        stereo, anti = (more, less) if direction == "stereo" else (less, more)
        out.append({"sent_more": more, "sent_less": less, "direction": direction,
                    "bias_type": bias_type, "stereo": stereo, "anti": anti, "line": line})  # fmt: skip
    return out


def _norm_group(label: str) -> set[str]:
    """The group names one BBQ answer label stands for, normalised for matching.

    Intersectional labels carry a prefix ("F-Black", "lowSES-Latino") and are split into both
    groups; case, spaces, hyphens and underscores are ignored ("lowSES" = "low SES"); "woman"
    and "girl" also stand for "F", "man" and "boy" for "M" (BBQ marks gender stereotypes as F/M).
    """
    parts = [label]
    for prefix in ("M-", "F-", "lowSES-", "highSES-"):
        if label.startswith(prefix):
            parts = [prefix[:-1], label[len(prefix) :]]
            break
    out = {re.sub(r"[\s_\-]+", "", p).lower() for p in parts if p.strip()}
    if out & {"woman", "girl"}:
        out.add("f")
    if out & {"man", "boy"}:
        out.add("m")
    return out


def _biased_answers(item: dict, stereotyped: list[str], unknown: int) -> list[int]:
    """Indices of the biased answers (BBQ paper, section 5; as lm-evaluation-harness derives
    them): for a negative question the answers about a stereotyped group, for a non-negative
    question the non-unknown answers about no stereotyped group. May be empty."""
    target = set()
    for g in stereotyped:
        target |= _norm_group(str(g))
    out = []
    for k in range(3):
        if k == unknown:
            continue
        groups = set()
        for label in item["answer_info"][f"ans{k}"]:
            groups |= _norm_group(str(label))
        hit = bool(groups & target)
        if hit == (item["question_polarity"] == "neg"):
            out.append(k)
    return out


def load_bbq(path: str | Path) -> list[dict]:
    """Items of a BBQ JSONL file. Each keeps the published fields and adds ``answers`` (the
    three answer strings), ``unknown`` (the index of the "unknown" answer, from
    ``answer_info``), ``biased`` (indices of the biased answers) and ``line``."""
    what = "BBQ"
    name, text = _read_text(path, what)
    out = [
        _bbq_item(raw, f"{what}: {name} line {line}", line)
        for line, raw in enumerate(text.splitlines(), start=1)
        if raw.strip()
    ]
    if not out:
        raise DataError(f"{what}: {name} has no items")
    return out


def _bbq_item(raw: str, where: str, line: int) -> dict:
    """One checked BBQ line, with the fields ``load_bbq`` adds."""
    try:
        item = json.loads(raw)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(item, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(item).__name__}")
    missing = [f for f in BBQ_FIELDS if f not in item]
    if missing:
        raise DataError(f"{where}: missing field(s) {', '.join(missing)}")
    _check_bbq_fields(item, where)
    unknown = _bbq_unknown(item["answer_info"], where)
    meta = item["additional_metadata"]
    groups = meta.get("stereotyped_groups") if isinstance(meta, dict) else None
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise DataError(
            f"{where}: additional_metadata.stereotyped_groups must be a list of strings, "
            f"got {groups!r}"
        )
    if item["context_condition"] == "ambig" and item["label"] != unknown:
        raise DataError(
            f"{where}: an ambiguous context's label must be the unknown answer "
            f"(ans{unknown}), got {item['label']}"
        )
    answers = [item["ans0"].strip(), item["ans1"].strip(), item["ans2"].strip()]
    biased = _biased_answers(item, groups, unknown)
    return {**item, "answers": answers, "unknown": unknown, "biased": biased, "line": line}


def _check_bbq_fields(item: dict, where: str) -> None:
    """The text fields, the label and the two condition fields of one BBQ item."""
    for f in ("context", "question", "ans0", "ans1", "ans2", "category"):
        if not isinstance(item[f], str) or not item[f].strip():
            raise DataError(f"{where}: {f} must be non-empty text, got {item[f]!r}")
    label = item["label"]
    if isinstance(label, bool) or label not in (0, 1, 2):
        raise DataError(f"{where}: label must be 0, 1 or 2, got {label!r}")
    if item["context_condition"] not in ("ambig", "disambig"):
        raise DataError(
            f"{where}: context_condition must be 'ambig' or 'disambig', "
            f"got {item['context_condition']!r}"
        )
    if item["question_polarity"] not in ("neg", "nonneg"):
        raise DataError(
            f"{where}: question_polarity must be 'neg' or 'nonneg', "
            f"got {item['question_polarity']!r}"
        )


def _bbq_unknown(info, where: str) -> int:
    """The index of the one answer whose group ``answer_info`` marks as "unknown"."""
    if not isinstance(info, dict):
        raise DataError(f"{where}: answer_info must be an object with ans0, ans1, ans2")
    for k in range(3):
        v = info.get(f"ans{k}")
        if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
            raise DataError(
                f"{where}: answer_info.ans{k} must be a list of strings [answer, group], got {v!r}"
            )
    unknown = [k for k in range(3) if info[f"ans{k}"][-1].strip().lower() == "unknown"]
    if len(unknown) != 1:
        raise DataError(
            f"{where}: answer_info must mark exactly one answer's group as 'unknown', "
            f"found {len(unknown)}"
        )
    return unknown[0]


def _wino_header(text: str) -> tuple[str, dict[str, str]]:
    """The delimiter (tab when the header has one) and the original -> lab column names."""
    first = text.lstrip("\ufeff").splitlines()[0]
    delimiter = "\t" if "\t" in first else ","
    rename = {}
    for h in next(csv.reader([first], delimiter=delimiter)):
        key = re.sub(r"\(\d\)$", "", h.strip()).strip().lower()
        rename[h.strip()] = {"other-participant": "participant"}.get(key, key)
    return delimiter, rename


def load_winogender(path: str | Path) -> list[dict]:
    """Templates of a WinoGender-style file: ``occupation``, ``participant``, ``answer``
    (0 occupation, 1 participant, None when the column is absent), ``sentence`` (with its
    placeholders) and ``line``. See :func:`fill_template` for the filled sentences."""
    what = "WinoGender"
    name, text = _read_text(path, what)
    delimiter, rename = _wino_header(text)
    header, _, body = text.partition("\n")
    header = delimiter.join(rename.get(h.strip(), h.strip()) for h in header.split(delimiter))
    rows = _table(name, header + "\n" + body, what, WINOGENDER_COLUMNS, delimiter=delimiter)
    out = []
    for line, row in rows:
        where = f"{what}: {name} line {line}"
        occ, part, sent = (row[c].strip() for c in WINOGENDER_COLUMNS)
        if not occ or not part:
            raise DataError(f"{where}: occupation and participant must both be non-empty")
        slots = set(re.findall(r"\$[A-Z_]+", sent))
        unknown = slots - _KNOWN_SLOTS
        if unknown:
            raise DataError(
                f"{where}: unknown placeholder(s) {', '.join(sorted(unknown))} "
                f"(known: {', '.join(sorted(_KNOWN_SLOTS))})"
            )
        if "$OCCUPATION" not in slots or "$PARTICIPANT" not in slots:
            raise DataError(f"{where}: the sentence needs both $OCCUPATION and $PARTICIPANT")
        if not slots & set(_PRONOUN_SLOTS):
            raise DataError(
                f"{where}: the sentence has no pronoun placeholder ({', '.join(_PRONOUN_SLOTS)})"
            )
        answer = None
        if "answer" in row:
            raw = row["answer"].strip()
            if raw not in ("0", "1"):
                raise DataError(
                    f"{where}: answer must be 0 (occupation) or 1 (participant), got {raw!r}"
                )
            answer = int(raw)
        out.append({"occupation": occ, "participant": part, "answer": answer, "sentence": sent,
                    "line": line})  # fmt: skip
    return out


def fill_template(t: dict, gender: str) -> tuple[str, str]:
    """(sentence, pronoun) of a template filled with ``gender``'s pronouns; the pronoun is
    the first one in the sentence, as it is quoted in the harness prompt."""
    nom, poss, acc = PRONOUNS[gender]
    values = {"$OCCUPATION": t["occupation"], "$PARTICIPANT": t["participant"],
              "$NOM_PRONOUN": nom, "$POSS_PRONOUN": poss, "$ACC_PRONOUN": acc}  # fmt: skip
    first = min((t["sentence"].find(s), s) for s in _PRONOUN_SLOTS if s in t["sentence"])[1]

    def repl(m: re.Match) -> str:
        v = values[m.group(0)]
        start = m.start() == 0 or t["sentence"][: m.start()].rstrip().endswith((".", "!", "?"))
        return v[:1].upper() + v[1:] if start else v

    return re.sub(r"\$[A-Z_]+", repl, t["sentence"]), values[first]


def load_occupation_stats(path: str | Path) -> list[dict]:
    """The user's occupation statistics, in the format of the shipped ``occupations.csv``."""
    name, text = _read_text(path, "occupation statistics")
    rows = load_occupations(path)
    seen: dict[str, int] = {}
    for i, r in enumerate(rows):
        key = r["occupation"].lower()
        if not key:
            raise DataError(f"occupation statistics: {name} line {i + 2}: empty occupation")
        if key in seen:
            raise DataError(
                f"occupation statistics: {name}: {r['occupation']!r} is listed twice "
                f"(lines {seen[key] + 2} and {i + 2})"
            )
        seen[key] = i
    return rows


LOADERS = {
    "crows_pairs": load_crows_pairs,
    "bbq": load_bbq,
    "winogender": load_winogender,
    "winogender_stats": load_occupation_stats,
}
