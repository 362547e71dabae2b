"""Private areas are owner-only, and no raw identifier is kept on disk for the gate."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import polars as pl

from anonymize.layout import QUARANTINE, discover
from anonymize.run import run_local
from anonymize.stage import process_file
from tests.conftest import SAMPLE


def _modes(root):
    return {p: stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


def test_private_areas_are_owner_only(sample_landing, tmp_path, policy, dev_keyring):
    out = tmp_path / "out"
    # What an earlier version left readable by everyone is locked down by the next run.
    (out / "restricted").mkdir(parents=True)
    (out / "restricted" / "old.txt").write_text("x")
    os.chmod(out / "restricted" / "old.txt", 0o644)
    old = os.umask(0o022)
    try:
        run_local(sample_landing, out, policy=policy, keyring=dev_keyring, run_id="r")
    finally:
        os.umask(old)
    checked = 0
    for area in ("restricted", "_versions", QUARANTINE, "_ledger.json"):
        for p, mode in _modes(out / area).items():
            assert mode & 0o077 == 0, (p.relative_to(out), oct(mode))
            checked += 1
    assert checked > 50
    # An output root the run creates is the owner's alone too (one made beforehand keeps its mode).
    old = os.umask(0o022)
    try:
        run_local(sample_landing, tmp_path / "new", policy=policy, keyring=dev_keyring, run_id="r")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) & 0o077 == 0


def test_canaries_on_disk_are_keyed_hashes(tmp_path, policy, dev_keyring):
    """A crash leaves the staging area behind: its canary files hold hashes, no value."""
    path, family = next((p, f) for p, f in discover(SAMPLE) if p.endswith(".log"))
    staging = tmp_path / "staging"
    result = process_file(path, family=family, policy=policy, keyring=dev_keyring,
                          staging=staging, quarantine=tmp_path / "q", landing=SAMPLE)  # fmt: skip
    assert result.status == "processed"
    (canaries,) = (staging / "_canaries").glob("*.parquet")
    frame = pl.read_parquet(canaries)
    assert frame.schema == pl.Schema({"h": pl.UInt64, "kind": pl.String})
    assert frame.height > 10
    assert set(frame["kind"]) <= {"ip", "tel", "email", "guid", "w", "x", "v"}
    raw = canaries.read_bytes()
    text = Path(path).read_bytes()
    # No line fragment of the raw log (an address, a path) is in the file's bytes.
    for token in {t for t in text.split() if len(t) >= 8}:
        assert token not in raw
