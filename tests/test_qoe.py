"""Call quality: the QoEMetrics exports (Session view, MediaLine view, AudioStream) are read,
join their sessions, keep no endpoint's address, MAC, BSSID or machine name, and classify
streams as poor as CQD does."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest
import yaml

from anonymize.errors import PolicyError
from anonymize.operators import connection_class, dialog_call_id, site_of
from anonymize.policy import DEFAULT_POLICY, load_policy
from anonymize.releases import restricted_scanner
from anonymize.run import run_local
from anonymize.statistics import POOR_STREAM, poor_stream
from tests.conftest import SAMPLE


@pytest.fixture
def sample_out(published_sample) -> Path:
    return published_sample


def _raw(name: str) -> pl.DataFrame:
    files = sorted(SAMPLE.glob(f"lync/*/*/{name}"))
    assert files, name
    return pl.concat(
        [pl.read_csv(f, infer_schema=False, null_values="NULL") for f in files],
        how="diagonal_relaxed",
    )


def test_every_qoe_export_of_the_sample_is_read_whole(sample_out):
    scan = restricted_scanner(sample_out / "restricted")
    for dataset, export in (
        ("qoe_sessions", "QoESessionView.csv"),
        ("qoe_media_lines", "QoEMediaLineView.csv"),
        ("qoe_audio_streams", "QoEAudioStream.csv"),
    ):
        assert scan(dataset).collect().height == _raw(export).height, dataset


def test_qoe_rows_join_their_sessions(sample_out):
    scan = restricted_scanner(sample_out / "restricted")
    sessions = scan("qoe_sessions").collect()
    lines = scan("qoe_media_lines").collect()
    streams = scan("qoe_audio_streams").collect()
    # Every media line and stream has its session, in the same day and region.
    keys = ["session_key", "date", "region"]
    assert lines.join(sessions, on=keys, how="anti").height == 0
    assert streams.join(lines, on=[*keys, "media_line"], how="anti").height == 0
    # Every peer-to-peer report has its CDR session: the same dialog, caller and callee.
    cdr = scan("lync_sessions").collect()
    p2p = sessions.filter(pl.col("dialog").is_not_null())
    assert p2p.height == sessions.height > 0
    both = p2p.join(cdr, on=["dialog", "date", "region"], how="left")
    assert both["from_user"].null_count() == 0
    assert (both["caller"] == both["from_user"]).all()
    assert (both["callee"] == both["to_user"]).all()
    # Audio and video sessions only, and each one once.
    assert both.height == p2p.height
    assert both["modalities"].list.eval(pl.element().is_in(["audio", "video"])).list.any().all()


def test_no_endpoint_address_mac_bssid_or_machine_name_is_kept(sample_out):
    raw_lines, raw_sessions = _raw("QoEMediaLineView.csv"), _raw("QoESessionView.csv")
    secrets = set()
    for c in ("CallerIPAddr", "CalleeIPAddr", "CallerMacAddress", "CalleeMacAddress",
              "CallerBssid", "CalleeBssid"):  # fmt: skip
        secrets |= set(raw_lines[c].drop_nulls().to_list())
    secrets |= set(raw_sessions["CallerEndpoint"].drop_nulls().to_list())
    secrets |= set(raw_sessions["ConferenceURI"].drop_nulls().to_list())
    assert len(secrets) > 100
    text = b"".join(f.read_bytes() for f in sample_out.rglob("*.parquet"))
    assert not [s for s in secrets if s.encode() in text]
    lines = restricted_scanner(sample_out / "restricted")("qoe_media_lines").collect()
    assert set(lines["caller_site"]) <= {"london", "new-york", "hong-kong", "vpn-pool", "outside"}
    assert set(lines["caller_connection"]) <= {"wired", "wifi", "mobile"}
    assert lines["caller_network"].str.ends_with(".0/24").all()


def test_a_stream_is_poor_by_any_one_of_cqds_thresholds():
    base = dict.fromkeys(POOR_STREAM, 0)
    rows = [base]
    for column, limit in POOR_STREAM.items():
        rows.append(base | {column: limit})  # at the limit: not poor
        rows.append(base | {column: limit * 1.5 + 1})  # above: poor
    frame = pl.DataFrame(rows, schema=dict.fromkeys(POOR_STREAM, pl.Float64))
    got = frame.select(poor_stream()).to_series().to_list()
    assert got == [False] + [False, True] * len(POOR_STREAM)
    nulls = pl.DataFrame(
        {c: [None] for c in POOR_STREAM}, schema=dict.fromkeys(POOR_STREAM, pl.Float64)
    )
    assert nulls.select(poor_stream()).item() is False


def test_sites_connections_and_dialogs():
    sites = (("10.20.1.0/24", "london-floor-1"), ("10.20.0.0/16", "london"))
    assert site_of("10.20.1.9", sites) == "london-floor-1"
    assert site_of("10.20.7.9", sites) == "london"
    assert site_of("192.168.1.1", sites) == "unknown"
    assert site_of("81.2.69.160", sites) == "outside"
    assert site_of("not an address", sites) == "unknown"
    assert site_of("2001:db8::1", (("2001:db8::/32", "v6-site"),)) == "v6-site"
    assert [connection_class(v) for v in ("Ethernet", "WiFi", "wireless", "4G", "Unknown")] == [
        "wired", "wifi", "wifi", "mobile", "other",
    ]  # fmt: skip
    assert dialog_call_id("ABC-1;from-tag=1;to-tag=2") == dialog_call_id("abc-1;from-tag=3")


def test_bad_decimals_are_quarantined_and_comma_decimals_read(tmp_path, policy, dev_keyring):
    landing = tmp_path / "landing"
    folder = landing / "lync" / "2026-11-23" / "EMEA"
    src = sorted(SAMPLE.glob("lync/2026-11-23/EMEA/QoE*.csv"))
    folder.mkdir(parents=True)
    for f in src:
        shutil.copy(f, folder / f.name)
    streams = pl.read_csv(folder / "QoEAudioStream.csv", infer_schema=False)
    streams = streams.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("lots")).when(pl.int_range(pl.len()) == 1)
        .then(pl.col("PacketLossRate").str.replace(".", ",", literal=True))
        .otherwise(pl.col("PacketLossRate")).alias("PacketLossRate")
    )  # fmt: skip
    streams.write_csv(folder / "QoEAudioStream.csv")
    results, _ = run_local(landing, tmp_path / "out", policy=policy, keyring=dev_keyring,
                           run_id="r1")  # fmt: skip
    got = pl.read_parquet(tmp_path / "out/current/restricted/qoe_audio_streams/**/*.parquet")
    assert got.height == streams.height - 1
    entry = next(r for r in results if Path(r.path).name == "QoEAudioStream.csv")
    assert entry.rows_quarantined == {"bad_value:PacketLossRate": 1}
    assert got["packet_loss_rate"].null_count() == 0


def test_network_sites_are_checked(tmp_path):
    path = tmp_path / "p.yaml"
    for site, subnets, problem in (
        ("bad", ["10.1.2.3/99"], "is not a subnet"),
        ("outside", ["10.1.0.0/16"], "network_sites.outside"),
    ):
        doc = yaml.safe_load(DEFAULT_POLICY.read_text())
        doc["network_sites"][site] = {"subnets": subnets}
        path.write_text(yaml.safe_dump(doc))
        with pytest.raises(PolicyError, match=problem):
            load_policy(path)
