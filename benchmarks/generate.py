"""Write one large SessionDetailsView export for the benchmarks, in chunks of one million rows.

The people come from one seeded world; each chunk is drawn with its own seed, so memory stays
bounded whatever the size. Usage: ``python -m benchmarks.generate OUT ROWS``.
"""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

import numpy as np

from anonymize.contracts import load_contract
from anonymize.synth import _as_ssms, _sessions, make_world

CHUNK = 1_000_000


def generate(out: Path, rows: int, seed: int = 42, people: int = 20_000) -> Path:
    """Write ``out/lync/SessionDetailsView.csv`` with ``rows`` sessions; return its path."""
    path = Path(out) / "lync" / "SessionDetailsView.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    world = make_world(seed, people=people)
    cols = [c.name for c in load_contract("lync_session_details_view").columns]
    with path.open("wb") as fh:
        for i, start in enumerate(range(0, rows, CHUNK)):
            n = min(CHUNK, rows - start)
            frame = _sessions(world, np.random.default_rng(seed + 1 + i), n, 7, date(2026, 11, 16))
            _as_ssms(frame.select(cols)).write_csv(fh, include_header=i == 0, null_value="NULL")
    return path


if __name__ == "__main__":
    generate(Path(sys.argv[1]), int(sys.argv[2]))
