"""Canary tests: no identifier from the input reaches any output byte, path, metadata or log."""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from anonymize.run import run_local


def _all_output_text(out: Path) -> str:
    """Every string an analyst could see: paths, Parquet metadata and every value, as text."""
    parts = []
    for f in sorted((out / "restricted").rglob("*")):
        parts.append(str(f.relative_to(out)))
        if f.suffix == ".parquet":
            pf = pq.ParquetFile(f)
            parts += [f"{k!r}={v!r}" for k, v in (pf.metadata.metadata or {}).items()]
            parts.append(str(pf.read().to_pylist()))
    return "\n".join(parts).lower()


def _run_library(landing: Path, out: Path, policy, keyring) -> list:
    results, _ = run_local(landing, out, policy=policy, keyring=keyring, run_id="r")
    return results


@pytest.fixture(scope="module")
def leak_run(synth_world, policy, dev_keyring, tmp_path_factory):
    landing, world = synth_world
    out = tmp_path_factory.mktemp("leak-out")
    logging.getLogger().setLevel(logging.DEBUG)
    results = _run_library(landing, out, policy, dev_keyring)
    return world, out, results


def test_no_identifier_of_any_kind_in_any_output(leak_run):
    world, out, results = leak_run
    assert all(r.status == "processed" for r in results)
    text = _all_output_text(out)
    ids = world.identifiers()
    assert sum(len(v) for v in ids.values()) > 500  # the canaries are real and many
    for kind, values in ids.items():
        found = sorted(v for v in values if v.lower() in text)
        # Compare counts, so a failure never prints the identifiers themselves.
        assert len(found) == 0, f"{len(found)} {kind} value(s) found in the outputs"


def test_phone_digits_and_local_parts_do_not_survive_in_any_form(leak_run):
    world, out, _ = leak_run
    text = _all_output_text(out)
    national = {p.lstrip("+")[-10:] for p in world.identifiers()["phone"]}
    assert sum(n in text for n in national) == 0


def test_results_and_manifest_material_hold_no_identifier(leak_run):
    world, _, results = leak_run
    blob = str([r.to_dict() for r in results]).lower()
    for kind, values in world.identifiers().items():
        assert sum(v.lower() in blob for v in values) == 0, kind


def test_log_records_hold_no_identifier(synth_world, policy, dev_keyring, tmp_path, caplog):
    landing, world = synth_world
    with caplog.at_level(logging.DEBUG):
        _run_library(landing, tmp_path, policy, dev_keyring)
    text = "\n".join(r.getMessage() for r in caplog.records).lower()
    for kind, values in world.identifiers().items():
        assert sum(v.lower() in text for v in values) == 0, kind


def test_injected_canaries_in_every_pd_column_never_surface(tmp_path, policy, dev_keyring):
    """A canary value in each PD column of a VoIP export: none reaches the output."""
    import numpy as np
    import polars as pl

    from anonymize.contracts import load_contract
    from anonymize.synth import _sessions, make_world, write_voip_details

    world = make_world(5, people=30)
    frame = _sessions(
        world, np.random.default_rng(5), 50, 1, __import__("datetime").date(2026, 11, 23)
    )
    contract = load_contract("lync_voip_details_view")
    canaries = {}
    for col in contract.columns:
        if col.privacy != "PD" or col.type != "string":
            continue
        value = f"canary.{col.name.lower()}@canary-domain.example"
        if "Phone" in col.name:
            value = "+1206555" + f"{len(canaries):04d}"
        canaries[col.name] = value
        frame = frame.with_columns(pl.lit(value).alias(col.name))
    landing = tmp_path / "landing"
    write_voip_details(frame, landing / "lync" / "VoIPDetailsView.csv")
    out = tmp_path / "out"
    results = _run_library(landing, out, policy, dev_keyring)
    assert results[0].rows_published == 50
    text = _all_output_text(out)
    leaked = [c for c, v in canaries.items() if v.lower() in text or v.split("@")[0] in text]
    assert leaked == []
    assert len(canaries) >= 10
