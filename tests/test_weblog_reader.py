"""Access-log readers on the real server logs in shared/, and on the variants servers write."""

from __future__ import annotations

import gzip
from pathlib import Path

import polars as pl
import pytest

from anonymize.errors import InputError
from anonymize.parse import parse_ip
from anonymize.sources.weblog import LINE, REASON, AccessLog
from tests.conftest import REAL_LOGS

pytestmark = pytest.mark.skipif(not REAL_LOGS.is_dir(), reason="shared/data/real-logs is missing")


def read(path: Path, **kw) -> tuple[str, pl.DataFrame, pl.DataFrame]:
    log = AccessLog.open(path)
    chunks = list(log.chunks(**kw))
    good = pl.concat([c.good for c in chunks], how="diagonal")
    bad = pl.concat([c.rejected for c in chunks])
    return log.format, good, bad


def test_apache_edge_cases():
    fmt, good, bad = read(REAL_LOGS / "apache-edge-cases.log")
    assert fmt == "apache"
    assert good[LINE].to_list() == list(range(1, 8))
    assert bad.height == 0
    rows = good.to_dicts()
    assert rows[0]["client"] == "::1"
    assert rows[0]["referer"] is None  # common format: no referer, no user agent
    assert (rows[2]["request"], rows[2]["method"], rows[2]["status"]) == (None, None, "408")
    assert rows[3]["extra"] == '"-"'  # a trailing extra field is kept, not mistaken
    assert rows[4]["client"] == "monitoring-server"  # a host name in %h
    assert (rows[6]["vhost"], rows[6]["client"]) == ("vhost1.domaine.fr", "123.123.123.123")
    assert rows[6]["user_agent"].startswith("Mozilla/5.0 (X11; Linux x86_64)")


def test_nginx_forwarded_for_variants():
    _, good, bad = read(REAL_LOGS / "nginx-xff-edge-cases.log")
    assert good.height == 7
    assert bad.height == 0
    rows = good.to_dicts()
    assert rows[0]["client"] == "10.0.0.2, 10.0.0.1, 127.0.0.1"  # the chain is the address field
    assert rows[4]["forwarded_for"] == "10.5.102.222, 199.96.1.1, 204.246.1.1"
    assert rows[4]["client"] == "10.2.1.185"
    assert rows[5]["forwarded_for"].startswith("2a03:0000:10ff:f00f")
    assert rows[5]["client"] == "10.2.2.121"
    assert (rows[6]["request"], rows[6]["status"]) == (None, "400")  # an empty request line


def test_iis_three_layouts_in_one_file():
    fmt, good, bad = read(REAL_LOGS / "iis-w3c-three-layouts.log")
    assert fmt == "iis"
    assert bad.height == 0
    assert good[LINE].to_list() == [5, 10, 15, 16, 17]
    assert good["sc-status"].to_list() == ["200", "200", "200", "401", "404"]
    assert good["cs-host"].to_list() == [None, "example.com", "example.com", None, None]
    assert good["s-computername"].to_list()[2] == "MACHINE-NAME"
    assert good["cs(User-Agent)"][0].startswith("Mozilla/5.0+(Windows+NT+6.1;")  # + kept
    assert "cs(Cookie)" in good.columns


def test_iis_corrupted_line_is_caught_by_its_address_type():
    _, good, bad = read(REAL_LOGS / "iis-7.5-ipv6-corrupt-line.log")
    assert good.height == 4
    assert bad.height == 0
    typed = good.select(pl.col(LINE), parse_ip(pl.col("c-ip")).alias("ip"), pl.col("c-ip"))
    broken = typed.filter(pl.col("ip").is_null() & pl.col("c-ip").is_not_null())
    assert broken[LINE].to_list() == [5]  # the contract's "ip" type sends it to quarantine
    assert typed["ip"][3] == "2001:cdba:0000:0000:0000:0000:3257:9652"


@pytest.mark.parametrize("name", sorted(p.name for p in REAL_LOGS.glob("*.log")))
def test_every_real_line_is_accounted_for(name, tmp_path):
    """Each non-empty, non-directive line is a row or a rejected line; chunking changes nothing."""
    path = REAL_LOGS / name
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    _, good, bad = read(path)
    assert good.height + bad.height == len(lines)
    gz = tmp_path / (name + ".gz")
    gz.write_bytes(gzip.compress(path.read_bytes()))
    _, good_gz, _ = read(gz, lines_per_chunk=2)
    assert good_gz.equals(good)


def test_garbage_lines_and_data_before_fields_are_rejected(tmp_path):
    apache = tmp_path / "a.log"
    apache.write_text(
        '::1 - - [26/Dec/2016:16:16:29 +0200] "GET / HTTP/1.1" 200 1\n[error] something broke\n'
    )
    _, good, bad = read(apache)
    assert good.height == 1
    assert bad[REASON].to_list() == ["unparseable_line"]
    iis = tmp_path / "i.log"
    iis.write_text(
        "#Software: Microsoft Internet Information Services 10.0\n"
        "2018-01-01 08:09:10 127.0.0.1 GET / - 80\n"
        "#Fields: date time s-ip cs-method cs-uri-stem cs-uri-query s-port\n"
        "2018-01-01 08:09:11 127.0.0.1 GET / - 80\n"
        "2018-01-01 08:09:12 127.0.0.1 GET /\n"
    )
    _, good, bad = read(iis)
    assert good[LINE].to_list() == [4]
    assert bad.sort(LINE)[REASON].to_list() == ["no_fields_directive", "field_count"]


def test_escapes_and_ansi_encoding(tmp_path):
    log = tmp_path / "e.log"
    line = (
        '192.0.2.1 - jos\xe9 [01/Jan/2024:00:00:00 +0000] "GET /a\\x22b HTTP/1.1" 200 5 '
        '"-" "UA \\"quoted\\""\n'
    )
    log.write_bytes(line.encode("cp1252"))
    _, good, bad = read(log)
    assert bad.height == 0
    row = good.to_dicts()[0]
    assert row["user"] == "jos\xe9"
    assert row["path"] == '/a"b'
    assert row["user_agent"] == 'UA "quoted"'


def test_not_an_access_log_is_refused(tmp_path):
    p = tmp_path / "error.log"
    p.write_text("[Sun Dec 04 04:47:44 2005] [notice] workerEnv.init() ok\n" * 3)
    with pytest.raises(InputError, match="not an access log"):
        AccessLog.open(p)
