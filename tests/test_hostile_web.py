"""Web traffic as a recipient's adversary would plant it, and as real public logs carry it.

Recall: names, slugs, phones in many layouts, emails encoded once and twice, short ids, simple
URLs on meet hosts, bots named after people, personal referers, query values and keys never
reach an output (templating), and the gate finds every one of them when a policy lets the raw
text through. Precision: the noise of real logs (network-address clients, spam echoed in
referers, scanners, long and non-ASCII URLs) and the real logs in shared/ publish, nothing
withheld.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from urllib.parse import unquote

import polars as pl
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from anonymize.gate import canaries_from_landing, scan_values
from anonymize.run import run_local
from anonymize.synth_sources import generate_all
from anonymize.synth_web import (
    BROWSERS,
    HOSTILE_CLASSES,
    SITE_PATHS,
    generate_hostile_weblogs,
    noisy_access_log,
)
from anonymize.vocabulary import _personal_names
from anonymize.web import url_template_value, user_agent_parts
from tests.conftest import REAL_LOGS

PSEUDONYM = re.compile(r"^[a-z]-[a-p]{32}$")


def _squash(text: str) -> str:
    """Letters and digits only, lower case: a seed is found whatever its separators."""
    return re.sub(r"[^a-z0-9]", "", unquote(unquote(text)).lower())


def _output_strings(root: Path) -> list[str]:
    """Every string of every Parquet file under ``root``: values, metadata, partition paths."""
    out: set[str] = set()
    for f in root.rglob("*.parquet"):
        out |= set(f.relative_to(root).parts[:-1])
        meta = pq.read_metadata(f).metadata or {}
        out |= {v.decode("utf-8", "replace") for v in meta.values()}
        frame = pl.read_parquet(f, hive_partitioning=False)
        for col, dtype in frame.schema.items():
            values = frame[col].explode() if isinstance(dtype, pl.List) else frame[col]
            if values.dtype == pl.String:
                out |= {v for v in values.drop_nulls().unique().to_list() if not PSEUDONYM.match(v)}
    return sorted(out)


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory, policy, dev_keyring):
    root = tmp_path_factory.mktemp("hostile")
    landing = root / "landing"
    world = generate_all(landing, seed=21, rows=1200, days=1, people=90)
    generate_hostile_weblogs(landing, world, seed=21, requests=9000, days=1, share=0.35)
    report: dict = {}
    _, published = run_local(landing, root / "out", policy=policy, keyring=dev_keyring,
                             run_id="h", report=report)  # fmt: skip
    return root, world, report, published


def test_every_hostile_class_is_planted(hostile_run):
    _, world, _, _ = hostile_run
    for kind in HOSTILE_CLASSES:
        assert len(world.extra.get(f"hostile:{kind}", ())) >= 20, kind


def test_no_planted_value_reaches_any_byte_of_the_outputs(hostile_run):
    root, world, report, published = hostile_run
    assert report["gate"]["verdict"] == "pass", report["gate"]["findings"]
    assert published
    texts = [_squash(t) for t in _output_strings(root / "out" / "shareable")]
    texts += [_squash(t) for t in _output_strings(root / "out" / "restricted")]
    raw = b"".join(f.read_bytes() for f in (root / "out" / "shareable").rglob("*.parquet"))
    leaks = []
    for kind in HOSTILE_CLASSES:
        for seed in world.extra[f"hostile:{kind}"]:
            s = _squash(seed)
            if len(s) < 5:
                continue
            if any(s in t for t in texts) or seed.encode() in raw:
                leaks.append((kind, len(s)))  # never the value itself
    assert leaks == []


def test_the_gate_finds_every_planted_value_a_policy_would_let_through(hostile_run, policy):
    """Recall of the gate itself: for every hostile line of the landing zone, what a naive
    policy would publish of it (the raw path, encoded or decoded; the family ua-parser gives a
    bot; the referer's host) is a finding."""
    root, _, _, _ = hostile_run
    canaries, unreadable = canaries_from_landing(root / "landing", policy)
    assert unreadable == []
    line_re = re.compile(
        r'^(\S+) \S+ - - \[[^]]+\] "GET (\S+) HTTP/1.1" \d+ \d+ "([^"]*)" "([^"]*)"$'
    )
    checked: dict[str, int] = {}
    missed: dict[str, int] = {}
    for f in sorted((root / "landing" / "weblogs").rglob("hostile/*.log")):
        for line in f.read_text().splitlines():
            host, path, referer, ua = line_re.match(line).groups()
            leaked = []
            if path not in SITE_PATHS or host != "www.uchost.net":
                leaked += [("path", path), ("path", unquote(path))]
            if ua not in BROWSERS:
                leaked.append(("bot", _raw_family(ua)))
            if referer != "-":
                leaked.append(("referer", referer.split("/")[2]))
            for what, value in leaked:
                checked[what] = checked.get(what, 0) + 1
                if not scan_values(pl.Series([value]), canaries, free_text=True):
                    missed[what] = missed.get(what, 0) + 1
    assert min(checked.values()) > 50
    assert len(checked) == 3
    assert missed == {}


def _raw_family(ua: str) -> str:
    from ua_parser import parse

    r = parse(ua)
    return r.user_agent.family if r.user_agent else "Other"


names = st.sampled_from(sorted(_personal_names()))


@given(names, names, st.sampled_from(["/people/{f}%20{l}", "/personal/{f}_{l}_contoso_com/x",
                                      "/team/{F}{L}", "/directory/{f}.{l}", "/u/{f}-{l}",
                                      "/search?q={F}+{L}&page=2", "/p?view={f}{l}"]))  # fmt: skip
def test_no_personal_name_survives_templating(first, last, layout):
    url = layout.format(f=first, l=last, F=first.title(), L=last.title())
    out = url_template_value(url, ("page", "view"))
    words = set(re.split(r"[^a-z0-9]+", out.lower()))
    assert first not in words, out
    assert last not in words, out


@pytest.mark.parametrize(
    "ua",
    [
        "JaneDoeBot/1.0 (+https://janedoe.example.org/bot)",
        "Mozilla/5.0 (compatible; KarenSmithCrawler/2.1)",
        "JohnSmithApp/3.2 CFNetwork/1410.0.3 Darwin/22.6.0",
    ],
)
def test_browser_and_os_come_from_a_closed_list(ua):
    browser, major, os_family, _ = user_agent_parts(ua)
    assert browser in ("bot", "Other")
    assert major is None
    assert "smith" not in os_family.lower()
    assert "doe" not in os_family.lower()


# --- precision: real logs and realistic noise publish --------------------------------------------


def test_the_real_logs_publish_with_nothing_withheld(tmp_path, policy, dev_keyring):
    landing = tmp_path / "landing" / "weblogs" / "EMEA"
    landing.mkdir(parents=True)
    for f in REAL_LOGS.glob("*.log"):
        shutil.copy(f, landing / f.name)
    report: dict = {}
    results, published = run_local(tmp_path / "landing", tmp_path / "out", policy=policy,
                                   keyring=dev_keyring, run_id="r", report=report)  # fmt: skip
    assert report["gate"]["verdict"] == "pass", report["gate"]["findings"]
    assert report["gate"]["withheld"] == {}
    assert published
    assert all(r.status == "processed" and r.balanced for r in results)


def test_a_noisy_public_log_publishes_and_a_network_address_client_is_its_network(
    tmp_path, policy, dev_keyring
):
    landing = tmp_path / "landing"
    noisy_access_log(landing / "weblogs" / "EMEA" / "www" / "access.log", lines=100_000, seed=3)
    report: dict = {}
    results, published = run_local(landing, tmp_path / "out", policy=policy,
                                   keyring=dev_keyring, run_id="r", report=report)  # fmt: skip
    assert report["gate"]["verdict"] == "pass", report["gate"]["findings"]
    assert report["gate"]["withheld"] == {}
    assert published
    (result,) = results
    assert result.balanced
    assert result.rows_read == 100_000
    web = pl.read_parquet(tmp_path / "out" / "restricted" / "web_requests")
    nets = web["client_network"].drop_nulls()
    assert nets.str.ends_with(".0/24").sum() > 0
    assert not nets.str.contains(r"^\d+\.\d+\.\d+\.\d+$").any()  # never a full address
    assert not web["path_template"].str.contains(" ").any()  # no free text survives


def test_a_client_that_is_a_network_address_publishes_as_its_network(tmp_path, policy, dev_keyring):
    """``a.b.c.0`` is a canary (a client address); its /24, ``a.b.c.0/24``, is no leak of it,
    nor is ``15.39.50.0/24`` a leak of ``5.39.50.0``."""
    lines = [
        f'{client} - - [23/Nov/2026:10:00:{i:02d} +0000] "GET / HTTP/1.1" 200 512 "-" "-"'
        for i, client in enumerate(["203.0.113.0", "5.39.50.0", "15.39.50.7"] * 5)
    ]
    report, published = _run_lines(lines, tmp_path, policy, dev_keyring)
    assert report["gate"]["verdict"] == "pass", report["gate"]["findings"]
    assert report["gate"]["withheld"] == {}
    assert published
    web = pl.read_parquet(tmp_path / "out" / "restricted" / "web_requests")
    assert sorted(set(web["client_network"])) == [
        "15.39.50.0/24", "203.0.113.0/24", "5.39.50.0/24"
    ]  # fmt: skip


def test_a_referer_sentence_echoed_in_the_path_is_no_finding(tmp_path, policy, dev_keyring):
    sentence = "Buy%20cheap%20watches%2C%20best%20prices%2C%20free%20shipping"
    lines = [
        f'198.51.100.{i} - - [23/Nov/2026:10:00:{i:02d} +0000] "GET /?{sentence} HTTP/1.1" 200 '
        f'512 "http://spam.example/?q={sentence},x" "Mozilla/5.0"'
        for i in range(1, 40)
    ]
    report, published = _run_lines(lines, tmp_path, policy, dev_keyring)
    assert report["gate"]["verdict"] == "pass", report["gate"]["findings"]
    assert report["gate"]["withheld"] == {}
    assert published


def _run_lines(lines: list[str], tmp_path: Path, policy, keyring) -> tuple[dict, list[str]]:
    """One access log of these lines through a run: (the report, the published partitions)."""
    path = tmp_path / "landing" / "weblogs" / "EMEA" / "access.log"
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(lines) + "\n")
    report: dict = {}
    _, published = run_local(tmp_path / "landing", tmp_path / "out", policy=policy,
                             keyring=keyring, run_id="r", report=report)  # fmt: skip
    return report, published


# --- withheld rows, not refused runs ----------------------------------------------------------


def _ua_log(path: Path, lines: int, leaky: set[int]) -> None:
    """An access log whose user agents are "-" but on the ``leaky`` lines (an app named after
    a person)."""
    out = []
    for i in range(lines):
        ua = f"JaneDoeApp/1.{i % 7}" if i in leaky else "-"
        out.append(
            f"198.51.{i // 250 % 250}.{i % 250 + 1} - - [23/Nov/2026:{i // 7200 % 24:02d}:"
            f'{i // 120 % 60:02d}:{i % 60:02d} +0000] "GET /pricing HTTP/1.1" 200 512 "-" "{ua}"'
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n")


@pytest.fixture
def ua_keeping_policy(tmp_path):
    """A policy that publishes the raw user agent as the browser (allowed: it is a QI)."""
    from anonymize.policy import DEFAULT_POLICY, load_policy

    rule = "- {op: user_agent, part: browser, as: browser}"
    text = DEFAULT_POLICY.read_text()
    assert rule in text
    path = tmp_path / "ua-keep.yaml"
    path.write_text(text.replace(rule, "- {op: keep, as: browser}"))
    return load_policy(path)


def test_a_leak_in_3_of_100k_rows_is_withheld_and_the_rest_published(
    tmp_path, ua_keeping_policy, dev_keyring
):
    landing = tmp_path / "landing"
    _ua_log(landing / "weblogs" / "EMEA" / "access.log", 100_000, {17, 50_000, 99_998})
    report: dict = {}
    (result,), published = run_local(landing, tmp_path / "out", policy=ua_keeping_policy,
                                     keyring=dev_keyring, run_id="r", report=report)  # fmt: skip
    gate = report["gate"]
    assert gate["verdict"] == "pass", gate["findings"]
    assert published
    assert gate["withheld"]["web_requests"]["rows"] == 3
    assert gate["withheld"]["web_requests"]["columns"] == {"browser": {"gate:canary": 3}}
    assert result.rows_quarantined == {"gate:canary": 3}
    assert result.rows_published == 100_000 - 3
    assert result.balanced
    web = pl.read_parquet(tmp_path / "out" / "restricted" / "web_requests")
    assert web.height == 100_000 - 3
    assert not web["browser"].drop_nulls().str.contains("JaneDoe").any()
    (held,) = (tmp_path / "out" / "_quarantine" / "r" / "web_requests").glob("gate-*.parquet")
    q = pl.read_parquet(held)
    assert q.height == 3
    assert q["_reason"].unique().to_list() == ["gate:canary"]
    assert q["_column"].unique().to_list() == ["browser"]
    # The statistics are computed after withholding: no cell counts a withheld row.
    stats = pl.read_parquet(tmp_path / "out" / "shareable" / "partner" / "usage_web")
    assert stats["page_views"].sum() <= 100_000 - 3


def test_a_leak_in_5_percent_of_rows_refuses_the_run(tmp_path, ua_keeping_policy, dev_keyring):
    landing = tmp_path / "landing"
    _ua_log(landing / "weblogs" / "EMEA" / "access.log", 20_000, set(range(0, 20_000, 20)))
    report: dict = {}
    (result,), published = run_local(landing, tmp_path / "out", policy=ua_keeping_policy,
                                     keyring=dev_keyring, run_id="r", report=report)  # fmt: skip
    assert published == []
    gate = report["gate"]
    assert gate["verdict"] == "refused"
    assert {(f["dataset"], f["column"], f["detector"]) for f in gate["findings"]} == {
        ("web_requests", "browser", "systemic:canary")
    }
    assert gate["withheld"]["web_requests"]["share"] == 0.05
    assert result.balanced
    assert not (tmp_path / "out" / "restricted").exists()
    assert not (tmp_path / "out" / "shareable").exists()
