"""Web/IIS logs and Adobe Connect reports through the pipeline: real logs, synthetic data of
every kind, conservation, canaries, cross-source pseudonyms, and the readers' refusals."""

from __future__ import annotations

import gzip
import shutil
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from anonymize.errors import InputError
from anonymize.run import run_local
from anonymize.sources import open_source
from anonymize.sources.connect import ConnectXml
from anonymize.stage import FileResult
from anonymize.synth import World
from anonymize.synth_sources import generate_all
from tests.conftest import REAL_LOGS, SAMPLE

DATASETS = [
    "connect_attendance",
    "connect_meeting_sessions",
    "connect_session_users",
    "connect_transactions",
    "lync_conference_joins",
    "lync_conference_sessions",
    "lync_conferences",
    "lync_registrations",
    "lync_sessions",
    "qoe_audio_streams",
    "qoe_media_lines",
    "qoe_sessions",
    "web_requests",
]


def run_here(tmp_path: Path, policy, keyring) -> tuple[list[FileResult], list[str]]:
    """Run ``tmp_path/landing`` into ``tmp_path/out``."""
    return run_local(
        tmp_path / "landing", tmp_path / "out", policy=policy, keyring=keyring, run_id="r"
    )


def read(out: Path, dataset: str) -> pl.DataFrame:
    return pl.read_parquet(
        out / "restricted" / dataset / "**" / "*.parquet", hive_partitioning=True
    )


@pytest.fixture(scope="module")
def all_sources(tmp_path_factory, policy, dev_keyring) -> tuple[World, list[FileResult], Path]:
    """Every kind of source for one world, run once for the module."""
    root = tmp_path_factory.mktemp("all-sources")
    world = generate_all(root / "landing", seed=7, rows=800, days=2, people=90)
    results, _ = run_local(
        root / "landing", root / "out", policy=policy, keyring=dev_keyring, run_id="run-1"
    )
    return world, results, root / "out"


# --- real logs ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, policy, dev_keyring) -> tuple[list[FileResult], Path]:
    root = tmp_path_factory.mktemp("real")
    shutil.copytree(REAL_LOGS, root / "landing" / "weblogs" / "EMEA", ignore=_only_logs)
    results, _ = run_local(
        root / "landing", root / "out", policy=policy, keyring=dev_keyring, run_id="run-1"
    )
    return results, root / "out"


def _only_logs(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if not n.endswith(".log")]


def test_every_real_log_parses_and_every_line_is_counted(real_run):
    results, _ = real_run
    by_name = {Path(r.path).name: r for r in results}
    assert sorted(by_name) == sorted(p.name for p in REAL_LOGS.glob("*.log"))
    for r in results:
        assert r.status == "processed", (r.path, r.reason)
        assert r.balanced
    # Each data line of each file (not directives, not blank lines).
    for path in REAL_LOGS.glob("*.log"):
        lines = [x for x in path.read_text().splitlines() if x.strip() and not x.startswith("#")]
        assert by_name[path.name].rows_read == len(lines)
    corrupt = by_name["iis-7.5-ipv6-corrupt-line.log"]
    assert corrupt.rows_quarantined == {"bad_value:s-ip": 1}  # both addresses are broken
    assert corrupt.rows_published == 3


def test_real_logs_publish_no_address_user_or_query_value(real_run):
    _, out = real_run
    df = read(out, "web_requests")
    assert df.height == 22
    nets = pl.concat([df["client_network"], df["forwarded_networks"]]).drop_nulls()
    for value in nets.to_list():
        for part in value.split(", "):
            assert part == "-" or part.endswith(("/24", "/48")), part
    for raw in REAL_LOGS.glob("*.log"):
        text = raw.read_text()
        # Every full address of the inputs: none survives anywhere in the output.
        for ip in set(pl.Series(text.split()).str.extract(r"^(\d+\.\d+\.\d+\.\d+)").drop_nulls()):
            hits = df.select(pl.all().cast(pl.String).str.contains(ip, literal=True).any())
            assert not any(hits.row(0)), ip
    assert set(df["region"]) == {"EMEA"}
    # IIS "+" is a space for the user agent; three layouts in one file all land.
    iis = df.filter(pl.col("server_port").is_not_null())
    assert iis.height == 8
    assert "Chrome" in set(df["browser"].drop_nulls())


def test_iis_injection_query_keeps_no_value(real_run):
    _, out = real_run
    queries = read(out, "web_requests")["query"].drop_nulls().to_list()
    assert queries, "the three-layout file has query strings"
    assert all("=" not in q or q.split("=", 1)[0] in {"lang", "page", "format", "ver", "view"}
               for q in queries)  # fmt: skip


# --- synthetic data of every kind ------------------------------------------------------------


def test_every_kind_is_read_and_balanced(all_sources):
    _, results, out = all_sources
    assert all(r.status == "processed" for r in results), [
        (r.path, r.reason) for r in results if r.status != "processed"
    ]
    assert all(r.balanced for r in results)
    assert sorted(p.name for p in (out / "restricted").iterdir()) == DATASETS
    users = [r for r in results if r.contract == "connect_users"]
    assert len(users) == 3
    assert all(r.rows_filtered == {"join_source": r.rows_read} for r in users)
    assert all(r.rows_published == 0 for r in users)
    www = [r for r in results if "/www/" in r.path]
    assert all(r.rows_quarantined == {"unparseable_line": 1} for r in www)


def test_no_identifier_of_any_kind_reaches_an_output(all_sources):
    world, _, out = all_sources
    ids = world.identifiers()
    kinds = ("sip", "name", "phone", "guid", "ip", "email", "account", "card", "title", "mac")
    for kind in (*kinds, "cookie"):
        assert ids.get(kind), f"the generator wrote no {kind}"
    for dataset in DATASETS:
        df = read(out, dataset)
        strings = [c for c, t in df.schema.items() if t == pl.String]
        for kind, values in ids.items():
            needles = sorted({v.lower() for v in values if len(v) >= 5})
            for col in strings:
                found = df.select(
                    pl.col(col).str.to_lowercase().str.contains_any(needles).fill_null(False).sum()
                ).item()
                assert found == 0, f"{kind} in {dataset}.{col}"


def test_pseudonyms_link_a_person_across_lync_connect_and_the_web(all_sources):
    _, _, out = all_sources
    lync = read(out, "lync_sessions")
    lync_people = set(lync["from_user"]) | set(lync["to_user"])
    tx = read(out, "connect_transactions")
    session_users = read(out, "connect_session_users")
    web = read(out, "web_requests")
    linked = set(tx["user"]) & lync_people
    assert len(linked) >= 0.5 * tx["user"].n_unique()
    # session users carry only principal-id: resolved through the Users download.
    assert set(session_users["user"]) & set(tx["user"])
    resolved = session_users.filter(pl.col("user").str.starts_with("u-"))
    assert resolved.height == session_users.height
    assert set(web["user"].drop_nulls()) & lync_people  # portal logins are SIP addresses


def test_connect_in_progress_rows_are_kept_and_marked(all_sources):
    _, _, out = all_sources
    tx = read(out, "connect_transactions")
    open_rows = tx.filter(pl.col("in_progress"))
    assert open_rows.height > 0
    assert open_rows["duration_s"].null_count() == open_rows.height
    assert set(tx.filter(~pl.col("in_progress"))["status"]) == {"completed"}
    sessions = read(out, "connect_meeting_sessions")
    assert sessions["in_progress"].sum() == 3 * 2  # the last meeting of each region and day


def test_connect_golden_values(tmp_path, policy, dev_keyring):
    """One hand-written response: offsets become UTC hours, durations, in progress, meeting."""
    folder = tmp_path / "landing" / "connect" / "AMER"
    folder.mkdir(parents=True)
    (folder / "tx.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<results><status code="ok"/>'
        "<report-bulk-consolidated-transactions>"
        '<row transaction-id="1" sco-id="77" type="meeting" principal-id="5" score="0">'
        "<name>Budget with Ann Example</name><url>/annexample/</url>"
        "<login>ann.example@contoso.com</login><user-name>Ann Example</user-name>"
        "<status>completed</status><date-created>2026-11-23T23:30:00.000-08:00</date-created>"
        "<date-closed>2026-11-24T00:15:30.500-08:00</date-closed></row>"
        '<row transaction-id="2" sco-id="77" type="meeting" principal-id="6" score="0">'
        "<login>0c1bd958-105a-4b62-b1c8-36273ba4631c</login><status>in-progress</status>"
        "<date-created>2026-11-23T23:40:00.000-08:00</date-created></row>"
        "</report-bulk-consolidated-transactions></results>"
    )
    results, _ = run_here(tmp_path, policy, dev_keyring)
    assert results[0].rows_published == 2
    df = read(tmp_path / "out", "connect_transactions").sort("visit_hour")
    assert df["visit_hour"].to_list() == [datetime(2026, 11, 24, 7, tzinfo=UTC)] * 2
    assert [str(d) for d in df["date"]] == ["2026-11-24", "2026-11-24"]
    assert df["duration_s"].to_list() == [2730.5, None]
    assert df["in_progress"].to_list() == [False, True]
    assert df["meeting"].n_unique() == 1
    assert df["meeting"][0].startswith("m-")
    assert df["user"].n_unique() == 2


# --- refusals and quarantine -----------------------------------------------------------------


def _xml(tmp_path: Path, body: str, name: str = "r.xml") -> Path:
    p = tmp_path / name
    p.write_text(body)
    return p


def test_xml_with_a_dtd_or_entities_is_refused(tmp_path):
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;">]><results><status code="ok"/>'
        '<report-meeting-sessions><row sco-id="&b;"/></report-meeting-sessions></results>'
    )
    with pytest.raises(InputError, match="DTD or entities"):
        ConnectXml.open(_xml(tmp_path, bomb))


def test_a_response_that_is_not_ok_is_refused(tmp_path):
    body = '<results><status code="no-access" subcode="denied"/></results>'
    with pytest.raises(InputError, match="no-access, not ok"):
        ConnectXml.open(_xml(tmp_path, body))


def test_truncated_xml_is_refused_whole(tmp_path, policy, dev_keyring):
    folder = tmp_path / "landing" / "connect" / "EMEA"
    folder.mkdir(parents=True)
    rows = "".join(
        f'<row sco-id="{i}" asset-id="{i}" num-participants="2">'
        f"<date-created>2026-11-23T10:00:00.000+00:00</date-created></row>"
        for i in range(50)
    )
    text = f'<results><status code="ok"/><report-meeting-sessions>{rows}</report-meeting-sessions>'
    (folder / "sessions.xml.gz").write_bytes(gzip.compress(text[:-200].encode(), mtime=0))
    results, published = run_here(tmp_path, policy, dev_keyring)
    assert results[0].status == "refused"
    assert "not well-formed" in (results[0].reason or "")
    assert published == []


def test_unknown_connect_field_quarantines_the_row(tmp_path, policy, dev_keyring):
    folder = tmp_path / "landing" / "connect" / "APAC"
    folder.mkdir(parents=True)
    (folder / "s.xml").write_text(
        '<results><status code="ok"/><report-meeting-sessions>'
        '<row sco-id="1" asset-id="2" num-participants="3">'
        "<date-created>2026-11-23T10:00:00.000+08:00</date-created></row>"
        '<row sco-id="1" asset-id="3" num-participants="3" host-email="x@example.com">'
        "<date-created>2026-11-23T11:00:00.000+08:00</date-created></row>"
        "</report-meeting-sessions></results>"
    )
    results, _ = run_here(tmp_path, policy, dev_keyring)
    r = results[0]
    assert (r.rows_read, r.rows_published) == (2, 1)
    assert r.rows_quarantined == {"unknown_field:host-email": 1}
    q = pl.read_parquet(tmp_path / "out" / "_quarantine" / "r" / "**" / "*.parquet")
    assert q["_row"].to_list() == [2]


def test_iis_layout_with_an_unknown_field_is_quarantined_line_by_line(tmp_path):
    log = tmp_path / "u_ex.log"
    log.write_text(
        "#Fields: date time c-ip cs-uri-stem sc-status\n"
        "2026-11-23 10:00:00 192.0.2.1 / 200\n"
        "#Fields: date time c-ip cs-uri-stem sc-status cs(X-Secret)\n"
        "2026-11-23 10:00:01 192.0.2.1 / 200 token123\n"
        "2026-11-23 10:00:02 192.0.2.1 / 200 -\n"
    )
    source = open_source(log, "weblogs")
    batches = list(source.reader.batches(1000))
    frame = pl.concat([b.frame for b in batches], how="diagonal")
    rejected = pl.concat([b.rejected for b in batches if b.rejected is not None])
    assert frame.height == 2  # the line with "-" in the unknown field carries nothing
    assert "cs(X-Secret)" not in frame.columns
    assert rejected["_reason"].to_list() == ["unknown_field:cs(X-Secret)"]
    assert rejected["_row"].to_list() == [4]
    assert frame["datetime"].to_list() == ["2026-11-23 10:00:00", "2026-11-23 10:00:02"]


def test_a_log_outside_any_region_folder_is_refused(tmp_path, policy, dev_keyring):
    folder = tmp_path / "landing" / "weblogs"
    folder.mkdir(parents=True)
    shutil.copy(REAL_LOGS / "apache-edge-cases.log", folder / "access.log")
    results, published = run_here(tmp_path, policy, dev_keyring)
    assert results[0].status == "refused"
    assert "maps to no region" in (results[0].reason or "")
    assert published == []


def test_a_server_fqdn_folder_gives_the_region(tmp_path, policy, dev_keyring):
    folder = tmp_path / "landing" / "weblogs" / "web01.hk.uchost.net"
    folder.mkdir(parents=True)
    shutil.copy(REAL_LOGS / "nginx-xff-edge-cases.log", folder / "access.log")
    run_here(tmp_path, policy, dev_keyring)
    assert set(read(tmp_path / "out", "web_requests")["region"]) == {"APAC"}


def test_connect_csv_download_is_read_like_the_xml(tmp_path, policy, dev_keyring):
    folder = tmp_path / "landing" / "connect" / "EMEA"
    folder.mkdir(parents=True)
    (folder / "sessions.csv").write_text(
        "sco-id,asset-id,version,num-participants,date-created,date-end\n"
        "11,12,0,4,2026-11-23T10:00:00.000+01:00,2026-11-23T11:00:00.000+01:00\n"
    )
    results, _ = run_here(tmp_path, policy, dev_keyring)
    assert results[0].contract == "connect_meeting_sessions"
    df = read(tmp_path / "out", "connect_meeting_sessions")
    assert df["session_hour"].to_list() == [datetime(2026, 11, 23, 9, tzinfo=UTC)]
    assert df["duration_s"].to_list() == [3600.0]


def test_the_gate_refuses_a_policy_that_lets_identifiers_through(all_sources, tmp_path):
    """A policy that keeps the raw user agent (a quasi-identifier, so allowed) publishes a
    canary in most rows: the gate names the column, and nothing at all is published."""
    from anonymize.keys import KeyRing
    from anonymize.policy import DEFAULT_POLICY, load_policy

    world, _, out = all_sources
    text = DEFAULT_POLICY.read_text()
    rule = "- {op: user_agent, part: browser, plus_is_space: true, as: browser}"
    assert rule in text
    leaky = tmp_path / "leaky.yaml"
    leaky.write_text(text.replace(rule, "- {op: keep, as: browser}"))
    report: dict = {}
    _, published = run_local(out.parent / "landing", tmp_path / "out", policy=load_policy(leaky),
                             keyring=KeyRing.development(), run_id="r", report=report)  # fmt: skip
    assert published == []
    assert not (tmp_path / "out" / "restricted").exists()
    assert not (tmp_path / "out" / "shareable").exists()
    gate = report["gate"]
    assert gate["verdict"] == "refused"
    hits = {(f["dataset"], f["column"], f["detector"]) for f in gate["findings"]}
    assert ("web_requests", "browser", "systemic:canary") in hits
    text = str(gate["findings"]).lower()
    assert not any(v.lower() in text for v in world.identifiers()["email"])  # no value quoted


_WEB_PARTITION = "partition: {date: [time, datetime], region_from: path}"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            ("contracts: [connect_session_users]",
             "contracts: [connect_session_users, connect_users]"),
            "connect_users is a join source",
        ),
        (
            (_WEB_PARTITION, "partition: {date: time, region_from: path}"),
            "the contract web_access_iis has none of time",
        ),
        (
            (_WEB_PARTITION, "partition: {date: [time, datetime]}"),
            "name the pool column, or region_from: path",
        ),
        (
            ("principal-id: {op: pseudonymize_lookup, lookup: connect_users, as: user}",
             "principal-id: {op: pseudonymize_lookup, lookup: lync_sessions, as: user}"),
            "is not a join source",
        ),
        (
            ("s-sitename: drop", "s-sitename: {op: keep, as: method}"),
            "the output 'method' is produced by more than one rule (for web_access_iis)",
        ),
    ],
)  # fmt: skip
def test_policy_problems_of_the_new_sources(tmp_path, change, problem):
    from anonymize.errors import PolicyError
    from anonymize.policy import DEFAULT_POLICY, load_policy

    text = DEFAULT_POLICY.read_text()
    old, new = change
    assert old in text
    bad = tmp_path / "p.yaml"
    bad.write_text(text.replace(old, new))
    with pytest.raises(PolicyError) as err:
        load_policy(bad)
    assert problem in str(err.value)


# --- Lync conferences, registrations, join tables, 2010 table exports -------------------------


def test_synthetic_transactions_are_counted_and_left_out(all_sources):
    _, results, out = all_sources
    views = [r for r in results if r.contract == "lync_conferences_view"]
    assert views
    assert all(r.rows_filtered == {"synthetic_transaction": 3} for r in views)  # one per region
    conferences = read(out, "lync_conferences")
    # 2010 Conferences rows carry only a ConferenceUriId: their type is not known.
    assert set(conferences["conference_type"].drop_nulls()) == {"focus"}
    assert conferences["organizer"].str.starts_with("u-").all()


def test_conference_uris_keep_only_their_type(all_sources):
    _, _, out = all_sources
    sessions = read(out, "lync_conference_sessions")
    assert set(sessions.filter(pl.col("client").is_not_null())["conference_type"]) == {"focus"}
    assert set(sessions["mcu_type"].drop_nulls()) == {"audio-video"}
    joins = read(out, "lync_conference_joins")
    assert set(joins["role"].drop_nulls()) == {"presenter", "attendee"}
    mcu = joins.filter(pl.col("via_mcu").is_not_null())
    assert mcu["is_from_pstn"].any()
    assert mcu.filter(pl.col("is_from_pstn"))["user"].str.starts_with("p-").all()  # dial-in


def test_lync_2010_integer_keys_resolve_to_the_same_pseudonyms(all_sources):
    """The 2010 pool numbers its users differently; each folder's Users export resolves its own
    keys, so a person gets one pseudonym across the 2010 tables and the 2013 views."""
    _, results, out = all_sources
    legacy = [r for r in results if "legacy2010" in r.path]
    assert {r.contract for r in legacy} == {
        "lync2010_session_details",
        "lync2010_voip_details",
        "lync2010_conferences",
        "lync2010_conference_session_details",
        "lync_users",
        "lync_phones",
    }
    sessions = read(out, "lync_sessions")
    old = sessions.filter(pl.col("from_client").is_null() & pl.col("from_user").is_not_null())
    new = sessions.filter(pl.col("from_client").is_not_null())
    assert old.height > 0
    assert old["from_user"].str.starts_with("u-").all()
    known = set(new["from_user"]) | set(new["to_user"])
    assert set(old["from_user"]) <= known
    # VoipDetails rows joined their SessionDetails rows: phones through the Phones export.
    pstn = old.filter(pl.col("to_phone").is_not_null())
    voip_rows = sum(r.rows_read for r in legacy if r.contract == "lync2010_voip_details")
    assert pstn.height == voip_rows
    assert pstn["to_phone"].str.starts_with("p-").all()
    assert pstn["to_pstn_gateway"].all()
    assert pstn["duration_s"].min() > 0


def test_integer_keys_without_a_users_export_stay_pseudonymous(tmp_path, policy, dev_keyring):
    src = SAMPLE / "lync" / "legacy2010" / "2026-11-23" / "EMEA" / "SessionDetails.csv"
    target = tmp_path / "landing" / "lync" / "EMEA" / "SessionDetails.csv"
    target.parent.mkdir(parents=True)
    shutil.copy(src, target)
    results, _ = run_here(tmp_path, policy, dev_keyring)
    assert results[0].status == "processed"
    df = read(tmp_path / "out", "lync_sessions")
    assert df["from_user"].null_count() == 0
    assert df["from_user"].str.starts_with("x-").all()  # unresolved: a pseudonym of the key
    raw = pl.read_csv(src, infer_schema_length=0)["User1Id"].to_list()
    assert not set(df["from_user"]) & set(raw)


def test_lookup_scope_is_the_nearest_folder(tmp_path):
    from anonymize.layout import LOOKUPS
    from anonymize.stage import _in_scope

    base = tmp_path / LOOKUPS / "lync_users"
    files = [
        str(base / "lync" / "a.parquet"),
        str(base / "lync" / "legacy2010" / "b.parquet"),
        str(base / "lync" / "legacy2010" / "c.parquet"),
        str(base / "lync" / "2026-11-23" / "d.parquet"),
    ]
    assert _in_scope(files, "lync/2026-11-23/EMEA/FocusJoinsAndLeaves.csv") == [files[3]]
    assert _in_scope(files, "lync/legacy2010/day/EMEA/SessionDetails.csv") == files[1:3]
    assert _in_scope(files, "lync/2026-11-24/x.csv") == [files[0]]
    assert _in_scope(files, "connect/x.csv") == []


def test_registrations_truncate_addresses_and_drop_devices(all_sources):
    _, _, out = all_sources
    regs = read(out, "lync_registrations")
    assert regs.height > 0
    assert regs["client_network"].str.contains(r"/(24|48)$").all()
    assert regs["duration_s"].min() > 0
    assert set(regs["device_manufacturer"].drop_nulls()) <= {"Polycom"}
