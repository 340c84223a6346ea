"""Writes schemas/: the JSON Schema of every Kafka message and the AsyncAPI document (`make schemas`).

    python scripts/export_schemas.py [--check]

--check writes nothing and exits 1 when schemas/ differs from what the code generates.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reelay_dev.schemas import render_all

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--check", action="store_true", help="compare only; exit 1 when out of date")
    args = p.parse_args()
    files = render_all()
    stale = sorted(
        name
        for name, text in files.items()
        if not (SCHEMAS / name).exists() or (SCHEMAS / name).read_text() != text
    )
    extra = sorted(
        p.name for p in SCHEMAS.glob("*") if p.is_file() and p.name not in files and p.name != "README.md"
    )
    if args.check:
        for name in stale:
            print(f"out of date: schemas/{name}", file=sys.stderr)
        for name in extra:
            print(f"not generated (remove it): schemas/{name}", file=sys.stderr)
        return 1 if stale or extra else 0
    SCHEMAS.mkdir(exist_ok=True)
    for name in stale:
        (SCHEMAS / name).write_text(files[name])
        print(f"wrote schemas/{name}")
    for name in extra:
        (SCHEMAS / name).unlink()
        print(f"removed schemas/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
