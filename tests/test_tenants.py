"""Account-holder reports: each tenant's folder holds its own users only, under pseudonyms
keyed for it; nothing of one tenant reaches another; a tenant handed its key maps its users
back to its directory; the gate scans tenant folders like every shareable output."""

from __future__ import annotations

import csv
import itertools
import shutil
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from anonymize.cli import app
from anonymize.errors import PolicyError
from anonymize.gate import scan
from anonymize.keys import KeyRing
from anonymize.policy import DEFAULT_POLICY, load_policy
from anonymize.releases import restricted_scanner, stage_release
from anonymize.run import run_local
from anonymize.tenants import tenant_people, tenant_view
from tests.conftest import SAMPLE

TENANTS = ("contoso", "fabrikam", "litwareinc", "tailspintoys", "wingtiptoys")


@pytest.fixture
def sample_out(published_sample) -> Path:
    return published_sample


def _folder(out: Path, tenant: str) -> Path:
    return out / "shareable" / "tenant" / tenant


def _tables(folder: Path) -> dict[str, pl.DataFrame]:
    return {
        d.name: pl.read_parquet(d / "**" / "*.parquet", hive_partitioning=True)
        for d in sorted(folder.iterdir())
        if d.is_dir()
    }


def test_every_tenant_has_its_folder_with_its_users_and_statistics(sample_out, policy):
    for tenant in TENANTS:
        tables = _tables(_folder(sample_out, tenant))
        assert {"user_activity", "connect_rooms", *policy.releases["tenant"].statistics} <= set(
            tables
        )
        users = tables["user_activity"]
        assert users.height > 0
        assert users["user"].str.contains(r"^[a-z]{1,2}-[a-p]{32}$").all()
        sheet = (_folder(sample_out, tenant) / "DATASHEET.md").read_text()
        assert f"release `tenant` for {tenant}" in sheet
        assert "### `user_activity`" in sheet
        assert "### `connect_rooms`" in sheet


def test_two_tenants_folders_share_no_row_and_no_pseudonym(sample_out):
    """No row of one tenant's users (each names a user or a room by the tenant's own
    pseudonym) is in another tenant's folder. Aggregate rows are not compared: two tenants'
    small cells can hold the same numbers by chance (the sample has such a pair)."""
    folders = {t: _tables(_folder(sample_out, t)) for t in TENANTS}
    for a, b in itertools.combinations(TENANTS, 2):
        ua, ub = folders[a]["user_activity"], folders[b]["user_activity"]
        assert not set(ua["user"]) & set(ub["user"]), (a, b)
        ra, rb = folders[a]["connect_rooms"], folders[b]["connect_rooms"]
        assert not set(ra["room"]) & set(rb["room"]), (a, b)
        for name in ("user_activity", "connect_rooms"):
            rows_a = set(folders[a][name].rows())
            assert not rows_a & set(folders[b][name].rows()), (a, b, name)


def test_no_tenant_folder_holds_the_providers_pseudonyms(sample_out, policy):
    restricted = sample_out / "restricted"
    providers = set()
    for name, ds in policy.datasets.items():
        files = list((restricted / name).rglob("*.parquet"))
        cols = ds.pseudonym_columns
        if files and cols:
            frame = pl.read_parquet(files, columns=cols)
            for c in cols:
                providers |= set(frame[c].drop_nulls().to_list())
    mine = {t: set(_tables(_folder(sample_out, t))["user_activity"]["user"]) for t in TENANTS}
    # Every tenant pseudonym is its own (per_account), never a restricted master pseudonym.
    for tenant in TENANTS:
        text = b"".join(f.read_bytes() for f in _folder(sample_out, tenant).rglob("*.parquet"))
        assert not any(p.encode() in text for p in providers - mine[tenant]), tenant


def _tenant_rows_only(restricted: Path, policy, tenant: str, dest: Path) -> None:
    """The restricted data of one tenant's input: the rows that name one of its people (and the
    Connect meeting sessions its attendances name), written again under ``dest``."""
    scan = restricted_scanner(restricted)
    people = set()
    for name, ds in policy.datasets.items():
        for person, account, _ in ds.account_columns:
            frame = scan(name).filter(pl.col(account) == tenant).select(person).collect()
            people |= set(frame[person].drop_nulls().to_list())
    kept: dict[str, pl.DataFrame] = {}
    for name, ds in policy.datasets.items():
        frame = scan(name).collect()
        cols = [c for c in ds.person_columns if c in frame.columns]
        if cols:
            frame = frame.filter(pl.any_horizontal(pl.col(c).is_in(list(people)) for c in cols))
        kept[name] = frame
    sessions = kept["connect_attendance"]["meeting_session"].drop_nulls().unique()
    kept["connect_meeting_sessions"] = kept["connect_meeting_sessions"].filter(
        pl.col("meeting_session").is_in(sessions.implode())
    )
    for name, frame in kept.items():
        for (day, region), part in frame.partition_by(["date", "region"], as_dict=True).items():
            where = Path(name) / f"date={day}" / f"region={region}"
            source = next((restricted / where).glob("*.parquet"))
            meta = {k.decode(): v.decode() for k, v in pq.read_metadata(source).metadata.items()
                    if not k.startswith(b"ARROW")}  # fmt: skip
            (dest / "restricted" / where).mkdir(parents=True, exist_ok=True)
            part.drop("date", "region").write_parquet(
                dest / "restricted" / where / "part-0.parquet", metadata=meta
            )


def test_each_tenants_numbers_equal_a_release_over_that_tenants_rows_only(
    sample_out, policy, dev_keyring, tmp_path
):
    spec = policy.releases["tenant"]
    for tenant in ("contoso", "wingtiptoys"):
        only = tmp_path / tenant
        _tenant_rows_only(sample_out / "restricted", policy, tenant, only)
        stage_release("tenant", spec, policy, dev_keyring, only, {})
        full = _tables(_folder(sample_out, tenant))
        alone = _tables(only / "shareable" / "tenant" / tenant)
        assert full.keys() == alone.keys()
        for name in full:
            order = [c for c in full[name].columns if c != "last_activity"]
            a = full[name].sort(order)
            b = alone[name].select(full[name].columns).sort(order)
            assert a.equals(b), (tenant, name)


def test_a_call_between_two_tenants_is_on_both_sides_without_the_other_identity(sample_out, policy):
    restricted = sample_out / "restricted"
    scan = restricted_scanner(restricted)
    calls = (
        scan("lync_sessions")
        .filter(pl.col("from_account").is_not_null() & pl.col("to_account").is_not_null())
        .filter(pl.col("from_account") != pl.col("to_account"))
        .collect()
    )
    assert calls.height > 0
    a, b = calls["from_account"][0], calls["to_account"][0]
    for me, other in ((a, "to"), (b, "from")):
        view = tenant_view(scan, policy, tenant_people(scan, policy, me))
        seen = view("lync_sessions").collect()
        theirs = seen.filter(pl.col(f"{other}_domain_class") == "other_tenant")
        assert theirs.height > 0
        assert theirs[f"{other}_user"].null_count() == theirs.height  # never their identity
        assert theirs[f"{other}_account_user"].null_count() == theirs.height
        users = _tables(_folder(sample_out, me))["user_activity"]
        assert users["other_tenant_sessions"].sum() > 0
        minutes = _tables(_folder(sample_out, me))["call_minutes"]
        assert "other_tenant" in set(minutes["route"])


def _contoso_addresses() -> list[str]:
    found = set()
    for f in sorted((SAMPLE / "lync").glob("*/*.csv")):
        with f.open(newline="", encoding="utf-8-sig") as fh:
            for row in csv.DictReader(fh):
                for col in ("FromUri", "ToUri", "UserUri", "OrganizerUri"):
                    v = (row.get(col) or "").strip()
                    if v.lower().endswith("@contoso.com"):
                        found.add(v)
    return sorted(found)


def test_a_tenant_handed_its_key_maps_its_users_back_with_its_directory(sample_out, tmp_path):
    runner = CliRunner()
    got = runner.invoke(app, ["account-key", "contoso", "--dev-key"])
    assert got.exit_code == 0, got.output
    key = tmp_path / "contoso.key"
    key.write_text(got.stdout)
    directory = "\n".join(_contoso_addresses()) + "\n"
    assert directory.strip()
    mapped = runner.invoke(app, ["account-pseudonyms", "--key-file", str(key)], input=directory)
    assert mapped.exit_code == 0, mapped.output
    pseudonyms = {line.rsplit(",", 1)[1] for line in mapped.stdout.splitlines()}
    users = set(_tables(_folder(sample_out, "contoso"))["user_activity"]["user"])
    assert len(users & pseudonyms) >= 0.8 * len(users)  # the directory names most of them
    # Another tenant's key maps none of them; nor does the key of a tenant not handed its key.
    other = tmp_path / "other.key"
    other.write_text(KeyRing.development().for_account("fabrikam").export())
    wrong = runner.invoke(app, ["account-pseudonyms", "--key-file", str(other)], input=directory)
    assert not {line.rsplit(",", 1)[1] for line in wrong.stdout.splitlines()} & users
    refused = runner.invoke(app, ["account-key", "fabrikam", "--dev-key"])
    assert refused.exit_code == 2
    assert "hand_key" in refused.stderr
    assert runner.invoke(app, ["account-key", "nobody", "--dev-key"]).exit_code == 2


def test_the_gate_scans_tenant_folders(sample_out, tmp_path, policy):
    staging = tmp_path / "staging"
    shutil.copytree(sample_out / "shareable" / "tenant", staging / "shareable" / "tenant")
    assert scan(staging, None, {}, areas=("shareable",)) == []
    target = next((staging / "shareable/tenant/fabrikam/user_activity").rglob("*.parquet"))
    frame = pl.read_parquet(target)
    frame = frame.with_columns(pl.lit("jane.doe@fabrikam.com").alias("user"))
    frame.write_parquet(target)
    findings = scan(staging, None, {}, areas=("shareable",))
    assert [(f.area, f.dataset, f.column, f.detector) for f in findings] == [
        ("shareable", "tenant/fabrikam/user_activity", "user", "email")
    ]


def test_the_gate_refuses_a_tenant_cell_below_k(sample_out, tmp_path, policy, dev_keyring):
    from anonymize.gate import run_gate

    staging = tmp_path / "staging"
    shutil.copytree(sample_out / "shareable" / "tenant", staging / "shareable" / "tenant")
    target = next((staging / "shareable/tenant/litwareinc/active_users").rglob("*.parquet"))
    frame = pl.read_parquet(target)
    frame.with_columns(pl.lit(1, dtype=pl.Int64).alias("people")).write_parquet(target)
    gate = run_gate(staging, policy, None, withheld={})
    below = [f for f in gate["findings"] if f["detector"] == "below_k"]
    assert [f["dataset"] for f in below] == ["tenant/litwareinc/active_users"]
    assert gate["verdict"] != "pass"


def test_tenant_policy_problems(tmp_path):
    doc = yaml.safe_load(DEFAULT_POLICY.read_text())
    doc["tenants"]["fabrikam"]["domains"].append("contoso.com")
    doc["releases"]["tenant"]["dp"] = {"enabled": True, "epsilon": 1.0, "budget": 10.0}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    text = str(err.value)
    assert "'contoso.com' is also a domain of 'contoso'" in text
    assert "releases.tenant.dp" in text
    doc = yaml.safe_load(DEFAULT_POLICY.read_text())
    del doc["tenants"]
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(PolicyError, match="a tenant release needs tenants"):
        load_policy(path)


# The exports a tenant's rows can be cut from by their addresses (the others name people by
# integer keys, or not at all): the view exports of the CDR and the QoE reports.
_BY_ADDRESS = {
    "SessionDetailsView.csv": ("FromUri", "ToUri"),
    "ConferenceSessionDetailsView.csv": ("UserUri",),
    "ConferencesView.csv": ("OrganizerUri",),
    "RegistrationView.csv": ("UserUri",),
    "QoESessionView.csv": ("CallerURI", "CalleeURI"),
}


def _landing(dest: Path, domain: str | None) -> None:
    """The sample's exports cut by address (``_BY_ADDRESS``), with the QoE lines and streams of
    the sessions kept: every row, or those naming an address of ``domain`` only."""
    for src in sorted(SAMPLE.glob("lync/*/**/*.csv")):
        if src.name not in (*_BY_ADDRESS, "QoEMediaLineView.csv", "QoEAudioStream.csv"):
            continue
        target = dest / src.relative_to(SAMPLE)
        target.parent.mkdir(parents=True, exist_ok=True)
        frame = pl.read_csv(src, infer_schema=False)
        if domain is not None and src.name in _BY_ADDRESS:
            ours = pl.any_horizontal(
                pl.col(c).str.to_lowercase().str.ends_with(f"@{domain}").fill_null(False)
                for c in _BY_ADDRESS[src.name]
            )
            frame = frame.filter(ours)
        frame.write_csv(target)
    if domain is not None:  # the QoE lines and streams of the sessions kept
        for sessions in sorted(dest.glob("lync/*/*/QoESessionView.csv")):
            keys = pl.read_csv(sessions, infer_schema=False).select(
                "ConferenceDateTime", "SessionSeq"
            )
            for name in ("QoEMediaLineView.csv", "QoEAudioStream.csv"):
                path = sessions.parent / name
                part = pl.read_csv(path, infer_schema=False)
                part.join(keys, on=["ConferenceDateTime", "SessionSeq"], how="semi").write_csv(path)


def test_a_tenants_report_equals_a_run_over_that_tenants_input_only(tmp_path, policy, dev_keyring):
    """Two runs: one over every row of the exports, one over the rows that name a contoso
    address only. Contoso's folder is the same in both: nothing of another tenant's rows moves
    one of its numbers (calls with other tenants included, from contoso's side)."""
    folders = {}
    for name, domain in (("all", None), ("contoso", "contoso.com")):
        _landing(tmp_path / name / "landing", domain)
        run_local(tmp_path / name / "landing", tmp_path / name / "out", policy=policy,
                  keyring=dev_keyring, run_id="r1")  # fmt: skip
        folders[name] = _tables(tmp_path / name / "out/current/shareable/tenant/contoso")
    full, alone = folders["all"], folders["contoso"]
    assert full.keys() == alone.keys()
    assert full["user_activity"].height > 0
    assert full["call_minutes"].filter(pl.col("route") == "other_tenant").height > 0
    for name in full:
        order = list(full[name].columns)
        assert full[name].sort(order).equals(alone[name].select(order).sort(order)), name


def test_connect_rooms_count_the_tenants_attendances_only(sample_out):
    scan = restricted_scanner(sample_out / "restricted")
    attendance = scan("connect_attendance").collect()
    for tenant in TENANTS:
        rooms = _tables(_folder(sample_out, tenant))["connect_rooms"]
        mine = attendance.filter(pl.col("user_account") == tenant)
        assert rooms["attendances"].sum() == mine.height > 0
        assert rooms["people"].max() <= mine["user"].n_unique()
        assert rooms["room"].n_unique() <= mine["meeting"].n_unique()
