"""Write the shipped datasets in assets/datasets/ from their generators (fixed seeds).

The generators live in ``scripts/dataset_generators/``; running this script again recreates the
committed files byte for byte. ``--check`` compares without writing and exits 1 when a file
differs.

Usage: python scripts/make_datasets.py [--check] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.dataset_generators import BUILDERS, build, render  # noqa: E402

OUT = ROOT / "assets" / "datasets"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the files, write nothing")
    ap.add_argument("--only", nargs="*", choices=sorted(BUILDERS), help="datasets to build")
    args = ap.parse_args(argv)
    stale = []
    for name in args.only or sorted(BUILDERS):
        folder = OUT / name
        for fname, text in render(build(name)).items():
            path = folder / fname
            if args.check:
                if not path.exists() or path.read_text(encoding="utf-8") != text:
                    stale.append(str(path))
                continue
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path} ({text.count(chr(10))} lines)")
    if stale:
        print("out of date: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
