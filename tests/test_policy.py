"""Policy validation: default-deny, every problem listed at once, checked at load time."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from anonymize.errors import PolicyError
from anonymize.policy import DEFAULT_POLICY, load_policy


def _default() -> dict:
    return yaml.safe_load(DEFAULT_POLICY.read_text())


def _load(tmp_path: Path, doc: dict):
    p = tmp_path / "policy.yaml"
    p.write_text(yaml.safe_dump(doc))
    return load_policy(p)


def _problems(tmp_path: Path, doc: dict) -> list[str]:
    with pytest.raises(PolicyError) as exc:
        _load(tmp_path, doc)
    return exc.value.problems


def test_default_policy_covers_every_contract_column(policy):
    from anonymize.contracts import all_contracts

    for ds in policy.datasets.values():
        columns = set()
        for c in ds.contracts:
            columns |= set(c.column_map)
        ruled = {r.column for r in ds.rules if r.column} | set(ds.dropped)
        assert ruled == columns, ds.name
    # Every shipped contract feeds a dataset of the default policy, or is a join source.
    used = {c.name for ds in policy.datasets.values() for c in ds.contracts}
    for contract in all_contracts():
        assert (contract.name in used) != (contract.lookup is not None), contract.name
    assert len(policy.hash) == 64


def test_missing_rule_is_refused(tmp_path):
    doc = _default()
    del doc["datasets"]["lync_sessions"]["columns"]["FromUri"]
    assert any("FromUri: no rule" in p for p in _problems(tmp_path, doc))


def test_rule_for_unknown_column_is_refused(tmp_path):
    doc = _default()
    doc["datasets"]["lync_sessions"]["columns"]["FavouriteColour"] = "keep"
    assert any("FavouriteColour: no contract" in p for p in _problems(tmp_path, doc))


@pytest.mark.parametrize("column", ["FromUri", "ToPhone", "DialogId", "FromEndpointId", "Location"])
def test_keep_on_pd_is_refused(tmp_path, column):
    doc = _default()
    doc["datasets"]["lync_sessions"]["columns"][column] = {"op": "keep", "as": "from_user"}
    assert any(f"keep is not allowed on {column}" in p for p in _problems(tmp_path, doc))


def test_unknown_operator_and_option_are_refused(tmp_path):
    doc = _default()
    cols = doc["datasets"]["lync_sessions"]["columns"]
    cols["FromUri"] = {"op": "encrypt", "as": "from_user"}
    cols["SessionIdTime"] = {"op": "coarsen_time", "to": "hour", "as": "session_hour", "zone": "x"}
    problems = _problems(tmp_path, doc)
    assert any("unknown operator 'encrypt'" in p for p in problems)
    assert any("SessionIdTime (coarsen_time).zone" in p for p in problems)


def test_bad_option_value_is_refused(tmp_path):
    doc = _default()
    doc["datasets"]["lync_sessions"]["columns"]["SessionIdTime"] = {
        "op": "coarsen_time",
        "to": "minute",
        "as": "session_hour",
    }
    assert any("SessionIdTime (coarsen_time).to" in p for p in _problems(tmp_path, doc))


def test_type_mismatch_and_unknown_output_are_refused(tmp_path):
    doc = _default()
    cols = doc["datasets"]["lync_sessions"]["columns"]
    cols["ResponseCode"] = {"op": "coarsen_time", "as": "response_code"}
    cols["CallFlag"] = {"op": "keep", "as": "call_flag_raw"}
    problems = _problems(tmp_path, doc)
    assert any("coarsen_time does not accept a int column" in p for p in problems)
    assert any("'call_flag_raw' is not in the output schema" in p for p in problems)


def test_every_problem_is_listed_at_once(tmp_path):
    doc = _default()
    cols = doc["datasets"]["lync_sessions"]["columns"]
    del cols["ToUri"]
    cols["FromPhone"] = "keep"
    cols["Nonsense"] = "drop"
    doc["regions"]["mars-1"] = ["*.mars.*"]
    problems = _problems(tmp_path, doc)
    assert len(problems) >= 4
    text = "\n".join(problems)
    for needle in ("ToUri: no rule", "keep is not allowed on FromPhone", "Nonsense", "mars-1"):
        assert needle in text


def test_derive_needs_known_datetime_columns(tmp_path):
    doc = _default()
    doc["datasets"]["lync_sessions"]["derive"]["duration_s"] = {
        "op": "duration",
        "start": "Nope",
        "end": "EndTime",
    }
    assert any("unknown column 'Nope'" in p for p in _problems(tmp_path, doc))


def test_unknown_top_level_key_and_bad_yaml(tmp_path):
    doc = _default()
    doc["colour"] = "blue"
    assert any("colour" in p for p in _problems(tmp_path, doc))
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: [unclosed\n")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(bad)


def test_partition_key_cannot_be_an_output(tmp_path):
    doc = _default()
    doc["datasets"]["lync_sessions"]["columns"]["Pool"] = {"op": "pool_region", "as": "region"}
    assert any("region" in p for p in _problems(tmp_path, doc))


def test_schema_and_rule_problems_are_listed_in_one_pass(tmp_path):
    """A shape problem elsewhere (a bad k, an unknown key) does not hide the rule problems of the
    datasets: the operator fixes everything after one check, not one layer per try."""
    doc = _default()
    doc["colour"] = "blue"
    doc["releases"]["partner"]["k"] = 1
    doc["datasets"]["lync_sessions"]["columns"]["FromPhone"] = "keep"
    del doc["datasets"]["lync_sessions"]["columns"]["ToUri"]
    text = "\n".join(_problems(tmp_path, doc))
    for needle in ("colour", "releases.partner.k", "keep is not allowed on FromPhone",
                   "ToUri: no rule"):  # fmt: skip
        assert needle in text
