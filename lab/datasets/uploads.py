"""Reading a user's dataset file (JSONL or CSV) and checking it row by row.

An NLG file has ``prompt`` and ``response`` columns; a classification file has ``text`` and
``label`` (class names or ids 0..C-1) and works for both tasks. ``columns`` maps these names
to the file's own, e.g. ``{"prompt": "question", "response": "answer"}``. Every problem raises
:class:`lab.datasets.encoding.DataError` naming it: the line of a malformed row, the missing column, an
empty, binary, non-UTF-8 or oversized file, a label outside the classes. Too many rows keep
the first ``max_rows`` with a warning; rows with an empty field are skipped with a warning.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from lab.config import short_repr as snippet
from lab.datasets.encoding import DataError

SUFFIXES = (".jsonl", ".csv")
_WIDE_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)
CANONICAL = ("prompt", "response", "text", "label")
FORMS = {"nlg": (("prompt", "response"), ("text", "label")), "nlu": (("text", "label"),)}


def _check_columns(columns: dict | None) -> dict[str, str]:
    columns = dict(columns or {})
    for key, value in columns.items():
        if key not in CANONICAL:
            raise DataError(
                f"columns: unknown key '{key}' (map one of {', '.join(CANONICAL)} to a column)"
            )
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"columns: '{key}' must map to a column name, got {value!r}")
    return columns


def _human(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.1f} MB"
    return f"{n / 1e3:.1f} kB" if n >= 1000 else f"{n} bytes"


def _decode(path: Path, max_bytes: int) -> str:
    if not path.exists():
        raise DataError(f"no such file: {path}")
    if not path.is_file():
        raise DataError(f"{path} is not a file")
    if path.suffix.lower() not in SUFFIXES:
        raise DataError(f"{path.name}: unsupported file type '{path.suffix}'; use .jsonl or .csv")
    size = path.stat().st_size
    if size > max_bytes:
        raise DataError(f"{path.name} is {_human(size)}, over the {_human(max_bytes)} upload limit")
    if size == 0:
        raise DataError(f"{path.name} is empty")
    data = path.read_bytes()
    for bom, enc in _WIDE_BOMS:
        if data.startswith(bom):
            raise DataError(f"{path.name} is {enc} text; save it as UTF-8")
    if b"\x00" in data[:8192]:
        raise DataError(f"{path.name} looks like a binary file (it has NUL bytes), not text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path.name} is not UTF-8 text: byte 0x{data[e.start]:02x} on line {line}; "
            "save it as UTF-8"
        ) from None
    if not text.strip():
        raise DataError(f"{path.name} is empty (only blank lines)")
    return text


def _jsonl_records(text: str, name: str, max_rows: int) -> tuple[list[tuple[int, dict]], int]:
    out: list[tuple[int, dict]] = []
    total = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        total += 1
        if total > max_rows:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{name} line {lineno}: not valid JSON ({e.msg} at column {e.colno})"
            ) from None
        except RecursionError:
            raise DataError(f"{name} line {lineno}: JSON nested too deeply") from None
        except ValueError:  # int() refuses literals of more than sys.get_int_max_str_digits()
            raise DataError(f"{name} line {lineno}: a number with too many digits") from None
        if not isinstance(obj, dict):
            raise DataError(
                f"{name} line {lineno}: expected a JSON object, got {type(obj).__name__}"
            )
        out.append((lineno, obj))
    return out, total


def _csv_records(text: str, name: str, max_rows: int) -> tuple[list[tuple[int, dict]], int]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except csv.Error as e:
        raise DataError(f"{name} line 1: malformed CSV header ({e})") from None
    header = [h.strip() for h in header]
    if not any(header):
        raise DataError(f"{name} line 1: the CSV header is empty")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DataError(f"{name} line 1: duplicate column(s) {', '.join(dupes)} in the CSV header")
    out: list[tuple[int, dict]] = []
    total = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise DataError(f"{name} line {reader.line_num}: malformed CSV ({e})") from None
        if not fields or not any(f.strip() for f in fields):
            continue
        total += 1
        if total > max_rows:
            continue
        if len(fields) != len(header):
            raise DataError(
                f"{name} line {reader.line_num}: expected {len(header)} fields, got {len(fields)}"
            )
        out.append((reader.line_num, dict(zip(header, fields))))
    if total == 0:
        raise DataError(f"{name} has a header but no rows")
    return out, total


def _label(value, where: str, from_csv: bool):
    """A class id (int >= 0) or a class name (str); anything else is an error."""
    if isinstance(value, bool):
        raise DataError(f"{where}: label must be a class name or id, got {snippet(value)}")
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and from_csv and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, int):
        if value < 0:
            raise DataError(f"{where}: label {value} is not a class (ids are 0, 1, 2, ...)")
        return value
    if isinstance(value, str):
        return value.strip()
    raise DataError(f"{where}: label must be a class name or id, got {snippet(value)}")


MAX_CLASSES = 1000  # a label id or a count of classes above this is a mistake, not a dataset


def check_labels(
    rows: list[dict], label_names: list[str] | None, where: str, max_classes: int = MAX_CLASSES
) -> None:
    """Labels must be all ids or all names, inside ``label_names`` when given, and at most
    ``max_classes`` distinct classes (a huge id would make a huge classifier head)."""
    kinds = {type(r["label"]) for r in rows}
    if len(kinds) > 1:
        first_int = next(r for r in rows if isinstance(r["label"], int))
        first_str = next(r for r in rows if isinstance(r["label"], str))
        raise DataError(
            f"{where}: labels mix class ids and names (line {first_int['_line']} has "
            f"{first_int['label']!r}, line {first_str['_line']} has {first_str['label']!r})"
        )
    for r in rows:
        if isinstance(r["label"], int) and r["label"] >= max_classes:
            raise DataError(
                f"{where} line {r['_line']}: label id {r['label']} is too large (class ids are "
                f"0 to {max_classes - 1} here)"
            )
    distinct = len({r["label"] for r in rows})
    if distinct > max_classes:
        raise DataError(f"{where}: {distinct} distinct labels, over the limit of {max_classes}")
    if label_names is None:
        return
    for r in rows:
        y = r["label"]
        if isinstance(y, int) and y >= len(label_names):
            raise DataError(
                f"{where} line {r['_line']}: label {y} is out of range for "
                f"{len(label_names)} classes ({', '.join(label_names)})"
            )
        if isinstance(y, str) and y not in label_names:
            raise DataError(
                f"{where} line {r['_line']}: label {y!r} is not one of {', '.join(label_names)}"
            )


def _row(rec: dict, lineno: int, form, mapped: dict, name: str, from_csv: bool) -> dict | None:
    """One record as a canonical row, or None when one of its fields is empty."""
    row: dict = {"_line": lineno}
    for key in form:
        col = mapped[key]
        if col not in rec:
            raise DataError(f"{name} line {lineno}: missing column '{col}'")
        value = rec[col]
        if key == "label":
            if value is None or (isinstance(value, str) and not value.strip()):
                return None
            row[key] = _label(value, f"{name} line {lineno}", from_csv)
            continue
        if isinstance(value, (dict, list)) or isinstance(value, bool):
            raise DataError(
                f"{name} line {lineno}: '{col}' must be text, got {type(value).__name__}"
            )
        if value is None or not str(value).strip():
            return None
        row[key] = str(value)
    return row


def records_to_rows(
    records: list[tuple[int, dict]], *, task: str, columns: dict, name: str, from_csv: bool
) -> tuple[list[dict], list[str]]:
    """Map file columns to canonical ones and check each row. Rows keep ``_line``."""
    if task not in FORMS:
        raise DataError(f"task must be 'nlg' or 'nlu', got {task!r}")
    present = set().union(*(r.keys() for _, r in records))
    for key, col in columns.items():
        if col not in present:
            raise DataError(
                f"{name}: columns maps {key} -> '{col}', but there is no column '{col}' "
                f"(columns: {', '.join(sorted(map(str, present)))})"
            )
    mapped = {k: columns.get(k, k) for k in CANONICAL}
    form = next((f for f in FORMS[task] if all(mapped[k] in present for k in f)), None)
    if form is None:
        want = " and ".join(f"'{k}'" for k in FORMS[task][0])
        missing = [k for k in FORMS[task][0] if mapped[k] not in present]
        also = " (or 'text' and 'label' for classification)" if task == "nlg" else ""
        raise DataError(
            f"{name}: missing column {', '.join(repr(m) for m in missing)}; task {task} needs "
            f"{want}{also}; the file has {', '.join(sorted(map(str, present)))}; "
            f"map yours with columns={{'{missing[0]}': 'your_column'}}"
        )
    rows: list[dict] = []
    skipped: list[int] = []
    for lineno, rec in records:
        row = _row(rec, lineno, form, mapped, name, from_csv)
        if row:
            rows.append(row)
        else:
            skipped.append(lineno)
    warnings = []
    if skipped:
        shown = ", ".join(map(str, skipped[:5])) + (" ..." if len(skipped) > 5 else "")
        warnings.append(
            f"{name}: skipped {len(skipped)} row(s) with an empty field (lines {shown})"
        )
    if not rows:
        raise DataError(f"{name} has no usable rows (each needs {' and '.join(form)})")
    if "label" in form:
        check_labels(rows, None, name)
    return rows, warnings


# What each task's mapping asks for (the first form of FORMS), and the column names that
# usually hold each role, for a first guess the user then confirms.
ROLES = {task: forms[0] for task, forms in FORMS.items()}
_USUAL_NAMES = {
    "prompt": ("prompt", "question", "instruction", "input", "query", "source", "context"),
    "response": ("response", "answer", "output", "completion", "target", "reply"),
    "text": ("text", "sentence", "review", "content", "document", "input", "comment"),
    "label": ("label", "labels", "class", "category", "sentiment", "target", "y"),
}


def file_columns(path, *, max_bytes: int = 50_000_000, max_rows: int = 20_000) -> list[str]:
    """The column names of a .jsonl or .csv file (CSV: the header; JSONL: every key, in the
    order first seen). Raises DataError for an empty, binary, malformed or oversized file."""
    path = Path(path)
    text = _decode(path, max_bytes)
    if path.suffix.lower() == ".csv":
        records, _ = _csv_records(text, path.name, max_rows)
    else:
        records, _ = _jsonl_records(text, path.name, max_rows)
    seen: dict[str, None] = {}
    for _, rec in records:
        seen.update(dict.fromkeys(map(str, rec)))
    if not seen:
        raise DataError(f"{path.name} has no columns (every row is an empty object)")
    return list(seen)


def needs_mapping(columns: list[str], task: str) -> bool:
    """True when no form the task accepts has all its columns in the file under their own
    names (then the user maps the file's columns to the roles)."""
    if task not in FORMS:
        raise DataError(f"task must be 'nlg' or 'nlu', got {task!r}")
    return not any(all(k in columns for k in form) for form in FORMS[task])


def guess_mapping(columns: list[str], task: str) -> dict[str, str | None]:
    """A first guess of the file column for each role of ``task`` (None where nothing fits);
    no column is guessed for two roles."""
    out: dict[str, str | None] = {}
    lower = {c.lower().strip(): c for c in columns}
    for role in ROLES[task]:
        pick = next(
            (lower[n] for n in _USUAL_NAMES[role] if n in lower and lower[n] not in out.values()),
            None,
        )
        out[role] = pick
    return out


def check_mapping(mapping: dict, columns: list[str], task: str) -> dict[str, str]:
    """The user's ``{role: file column}`` for ``task``, checked: every role chosen, each a
    column of the file, no column for two roles. Errors start with the role they are about."""
    if task not in ROLES:
        raise DataError(f"task must be 'nlg' or 'nlu', got {task!r}")
    out: dict[str, str] = {}
    for role in ROLES[task]:
        col = mapping.get(role)
        if not isinstance(col, str) or not col.strip():
            raise DataError(
                f"{role}: no column chosen; pick the file's column that holds the {role} "
                f"(columns: {', '.join(columns)})"
            )
        if col not in columns:
            raise DataError(
                f"{role}: the file has no column {snippet(col)} (columns: {', '.join(columns)})"
            )
        other = next((r for r, c in out.items() if c == col), None)
        if other is not None:
            raise DataError(
                f"{role}: column '{col}' is already chosen for the {other}; each role needs its "
                "own column"
            )
        out[role] = col
    return out


def validate_upload(
    path,
    *,
    task: str,
    columns: dict | None = None,
    max_bytes: int = 50_000_000,
    max_rows: int = 20_000,
    label_names: list[str] | None = None,
    max_classes: int = MAX_CLASSES,
) -> tuple[list[dict], list[str]]:
    """Read and check a .jsonl or .csv file; return (rows, warnings) or raise DataError.

    Rows are ``{"prompt", "response"}`` or ``{"text", "label"}`` (label: class name or id),
    each with ``_line``, the line it came from. ``label_names``, when given, are the only
    classes allowed.
    """
    path = Path(path)
    columns = _check_columns(columns)
    text = _decode(path, max_bytes)
    from_csv = path.suffix.lower() == ".csv"
    read = _csv_records if from_csv else _jsonl_records
    records, total = read(text, path.name, max_rows)
    rows, warnings = records_to_rows(
        records, task=task, columns=columns, name=path.name, from_csv=from_csv
    )
    if total > max_rows:
        warnings.insert(0, f"{path.name} has {total} rows; truncated to the first {max_rows}")
    if "label" in rows[0]:
        check_labels(rows, label_names, path.name, max_classes)
    return rows, warnings
