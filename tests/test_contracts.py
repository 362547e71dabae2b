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


def test_an_extra_column_is_counted_and_named_only_when_some_contract_knows_it():
    with pytest.raises(ContractError, match=f"1 unknown column\\(s\\) <column {len(SESSION) + 1}:"):
        match_header([*SESSION, "Mood"], "lync")
    # A column of another export kind is a name cdranon knows: it may be named.
    with pytest.raises(ContractError, match=r"unknown column\(s\) .*RegisterTime"):
        match_header([*SESSION, "RegisterTime"], "lync")


def test_a_header_that_is_really_a_data_row_is_never_echoed():
    # An export without its header: the first row's words (people's names) take its place.
    row = ["Jane Doe", "Accounting", "London Office", "Manager", "Sales Team", "Support"]
    with pytest.raises(ContractError) as exc:
        match_header(row, "lync")
    for word in row:
        assert word not in str(exc.value)
    # 20,000 columns give one short line, never the whole header.
    with pytest.raises(ContractError) as exc:
        match_header([*SESSION, *(f"Extra{i}" for i in range(20_000))], "lync")
    assert len(str(exc.value)) < 600
    assert "20000 unknown column(s)" in str(exc.value)


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
