"""Header recognition: kinds from headers, refusals that name columns but never values."""

from __future__ import annotations

import pytest

from anonymize.contracts import load_contract, load_output_schema, match_header
from anonymize.errors import ContractError

SESSION = [c.name for c in load_contract("lync_session_details_view").columns]
VOIP = [c.name for c in load_contract("lync_voip_details_view").columns]


def test_views_are_recognised_from_their_headers():
    assert match_header(SESSION, "lync").name == "lync_session_details_view"
    assert match_header(VOIP, "lync").name == "lync_voip_details_view"
    assert match_header(list(reversed(VOIP)), "lync").name == "lync_voip_details_view"


def test_optional_columns_may_be_absent_and_aliases_accepted():
    header = [c for c in SESSION if c not in ("LastModifiedTime", "MediaTypes")]
    header[header.index("OnBehalfOfUriType")] = "OnnnBehalfOfUriType"
    assert match_header(header, "lync").name == "lync_session_details_view"


def test_extra_column_is_named():
    with pytest.raises(ContractError, match="unknown column\\(s\\) Mood"):
        match_header([*SESSION, "Mood"], "lync")


def test_missing_column_is_named():
    header = [c for c in SESSION if c != "ToUri"]
    with pytest.raises(ContractError, match="missing column\\(s\\) ToUri"):
        match_header(header, "lync")


def test_a_data_row_as_header_is_never_quoted():
    row = ["2026-11-23 09:00:00.000", "1", "alice.smith@contoso.com", "+14255550100", "x"] * 4
    with pytest.raises(ContractError) as exc:
        match_header(row, "lync")
    assert "alice" not in str(exc.value)
    assert "4255550100" not in str(exc.value)
    assert "looks like data" in str(exc.value)


def test_odd_extra_column_name_is_replaced_in_the_message():
    with pytest.raises(ContractError) as exc:
        match_header([*SESSION, "bob@contoso.com"], "lync")
    assert "bob" not in str(exc.value)
    assert f"column {len(SESSION) + 1}" in str(exc.value)


def test_every_contract_column_has_a_class_and_the_output_schema_loads():
    for name in ("lync_session_details_view", "lync_voip_details_view"):
        for col in load_contract(name).columns:
            assert col.privacy in ("PD", "QI", "SAFE")
    assert load_output_schema("lync_sessions").partitioning == ("date", "region")
