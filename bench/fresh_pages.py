"""Benchmark of the machine, not of Reelay: what a write into the page cache costs, by how long the
memory it lands on had been free.

On a VM whose balloon device reports free pages to the host (virtio-balloon free page reporting,
as on Firecracker), memory left free for about two seconds is handed back to the host, and the
next touch of it faults it in again. A write into the page cache then costs ten times what it
costs on memory just freed. Every benchmark whose receiver writes what it gets to disk (the
sandbox does) runs at one speed or the other depending on what the kernel hands it, which is why
bench/upload_speed.py frees the sandbox's last upload right before each timed side.

    python bench/fresh_pages.py               # 1000 MB, gaps of 0, 1, 3 and 6 s
    python bench/fresh_pages.py --mb 500 --gaps 0 4

For each gap: write `--mb` MB to a scratch file and delete it (the memory is now free and warm),
wait `gap` seconds, then write the same amount again and print the milliseconds each 10 MB write
took, in ten groups from the first to the last tenth of the file.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

PIECE = 10 * 1024 * 1024


def write(path: Path, pieces: int, data: bytes) -> list[float]:
    """Seconds of each piece's write into a new file at `path` (then deleted)."""
    took = []
    with path.open("wb") as f:
        for _ in range(pieces):
            started = time.perf_counter()
            f.write(data)
            took.append(time.perf_counter() - started)
    path.unlink()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=int, default=1000, help="MB (of 2^20 bytes) written each time")
    parser.add_argument("--gaps", type=float, nargs="+", default=[0, 1, 3, 6], help="seconds free")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    pieces = max(10, args.mb * 1024 * 1024 // PIECE)
    data = os.urandom(PIECE)
    path = args.dir / f"reelay-fresh-pages-{os.getpid()}"
    print(f"ms per 10 MB write, by tenth of a {pieces * PIECE // 2**20} MB file")
    for gap in args.gaps:
        write(path, pieces, data)  # memory the second write can reuse, if it is still ours
        time.sleep(gap)
        took = write(path, pieces, data)
        tenth = len(took) // 10
        groups = [sum(took[i : i + tenth]) / tenth * 1000 for i in range(0, tenth * 10, tenth)]
        print(f"free {gap:>4.1f} s before: " + " ".join(f"{g:5.1f}" for g in groups))


if __name__ == "__main__":
    main()
