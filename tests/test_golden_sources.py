"""Golden rows: small hand-written inputs of each kind and the exact rows they must give.

The values are invented (documentation addresses and example domains); none is a real person.
Pseudonyms are compared with the pseudonym the same identifier gets elsewhere, never written out.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest

from anonymize.identifiers import normalize_identifier, pseudonym
from anonymize.run import run_local
from anonymize.stage import make_context


def write(root: Path, rel: str, text: str) -> None:
    path = root / "landing" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def run(root: Path, policy, keyring) -> dict[str, pl.DataFrame]:
    results, _ = run_local(root / "landing", root / "out", policy=policy, keyring=keyring,
                           run_id="r")  # fmt: skip
    assert all(r.status == "processed" and r.balanced for r in results), [
        (r.path, r.reason) for r in results
    ]
    out = root / "out" / "restricted"
    return {
        d.name: pl.read_parquet(d / "**" / "*.parquet", hive_partitioning=True)
        for d in sorted(out.iterdir())
    }


@pytest.fixture
def pseudo(policy, dev_keyring):
    ctx = make_context(policy, dev_keyring)

    def of(value: str, kind: str = "auto") -> str:
        k, norm = normalize_identifier(value, kind, "US")
        return pseudonym(ctx.key_for(k), k, norm)

    return of


def test_web_requests_golden(tmp_path, policy, dev_keyring, pseudo):
    write(tmp_path, "weblogs/EMEA/www/access.log", (
        'www.example.net 198.51.100.23 - jane.doe@contoso.com [23/Nov/2026:10:15:00 +0100] '
        '"GET /newsletter/subscribe?email=jane.doe%40contoso.com&lang=en HTTP/1.1" 200 512 '
        '"https://www.google.com/search?q=jane+doe" '
        '"Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0"\n'
    ))  # fmt: skip
    write(tmp_path, "weblogs/lyncweb01.hk.uchost.net/u_ex261123.log", (
        "#Fields: date time cs-method cs-uri-stem cs-uri-query cs-username c-ip "
        "cs(User-Agent) cs(Cookie) sc-status time-taken\r\n"
        "2026-11-23 23:59:59 GET /meet/jane.doe/K7Q2XZ9B sl=1&lang=en CONTOSO\\jdoe "
        "2001:db8:abcd:12::7 Mozilla/5.0+(iPhone;+CPU+iPhone+OS+17_1+like+Mac+OS+X)+"
        "AppleWebKit/605.1.15+(KHTML,+like+Gecko)+Version/17.1+Mobile/15E148+Safari/604.1 "
        "MRAS=0c1bd958-105a-4b62-b1c8-36273ba4631c 200 31\r\n"
    ))  # fmt: skip
    web = run(tmp_path, policy, dev_keyring)["web_requests"].sort("region")
    cols = ["request_hour", "date", "region", "site", "client_network", "method",
            "path_template", "query", "status", "bytes_sent", "time_taken_ms", "referer_host",
            "browser", "browser_major", "os", "device_class"]  # fmt: skip
    assert web.select(cols).rows() == [
        (datetime(2026, 11, 23, 23, tzinfo=UTC), date(2026, 11, 23), "APAC", None,
         "2001:db8:abcd::/48", "GET", "/meet/{user}/{conference}", "lang=en", 200, None, 31,
         None, "Mobile Safari", "17", "iOS", "mobile"),
        (datetime(2026, 11, 23, 9, tzinfo=UTC), date(2026, 11, 23), "EMEA", "www.example.net",
         "198.51.100.0/24", "GET", "/newsletter/subscribe", "email&lang=en", 200, 512, None,
         "google.com", "Firefox", "121", "Windows", "desktop"),
    ]  # fmt: skip
    assert web["user"].to_list() == [
        pseudo("CONTOSO\\jdoe", "person"),
        pseudo("sip:jane.doe@contoso.com", "person"),  # the same person as in Lync
    ]


def test_lync_conferences_registrations_and_joins_golden(tmp_path, policy, dev_keyring, pseudo):
    write(tmp_path, "lync/2026-11-23/ConferencesView.csv", (
        "SessionIdTime,SessionIdSeq,ConferenceUri,ConferenceUriType,ConfInstance,"
        "ConferenceStartTime,ConferenceEndTime,OrganizerUri,OrganizerType,OrganizerTenant,Pool,Flag\n"
        "2026-11-23 10:00:00.000,1,sip:ann@contoso.com;gruu;opaque=app:conf:focus:id:AB12CD34,"
        "UserUri,9A1B2C3D-0000-4000-8000-000000000001,2026-11-23 10:00:00.000,"
        "2026-11-23 10:30:00.000,ann@contoso.com,UserUri,NULL,fepool01.uk.uchost.net,0\n"
        "2026-11-23 11:00:00.000,1,sip:probe@contoso.com;gruu;opaque=app:conf:focus:id:ZZ,"
        "UserUri,9A1B2C3D-0000-4000-8000-000000000002,2026-11-23 11:00:00.000,"
        "2026-11-23 11:01:00.000,probe@contoso.com,UserUri,NULL,fepool01.uk.uchost.net,1\n"
    ))  # fmt: skip
    write(tmp_path, "lync/2026-11-23/RegistrationView.csv", (
        "SessionIdTime,SessionIdSeq,RegisterTime,UserUri,EndpointId,DeRegisterType,ClientVersion,"
        "IpAddress,Pool,EdgeServer,DeviceMacAddress,DeviceManufacturer\n"
        "2026-11-23 08:00:00.000,1,2026-11-23 08:00:00.000,ann@contoso.com,"
        "11111111-2222-4333-8444-555555555555,2026-11-23 16:30:00.000,"
        "Polycom/5.9.5.0333 PolycomVVX-VVX_411-UA/5.9.5.0333,203.0.113.77,fepool01.us.uchost.net,"
        "edge01.us.uchost.net,00-04-F2-AA-BB-CC,Polycom\n"
    ))  # fmt: skip
    users = "UserId,UserUri\n7,sip:ann@contoso.com\n8,tel:+14255550100\n"
    write(tmp_path, "lync/2026-11-23/Users.csv", users)
    write(tmp_path, "lync/2026-11-23/APAC/McuJoinsAndLeaves.csv", (
        "SessionIdTime,SessionIdSeq,UserId,IsFromPstn,McuId,UserJoinTime,UserLeaveTime\n"
        "2026-11-23 10:00:00.000,1,7,0,2,2026-11-23 10:00:05.000,2026-11-23 10:20:05.000\n"
        "2026-11-23 10:00:00.000,1,8,1,2,2026-11-23 10:01:00.000,NULL\n"
        "2026-11-23 10:00:00.000,1,99,0,2,2026-11-23 10:02:00.000,2026-11-23 10:03:00.000\n"
    ))  # fmt: skip
    out = run(tmp_path, policy, dev_keyring)

    conf = out["lync_conferences"]
    assert conf.select("conference_hour", "duration_s", "conference_type", "region").rows() == [
        (datetime(2026, 11, 23, 10, tzinfo=UTC), 1800.0, "focus", "EMEA")
    ]  # the synthetic transaction (Flag 1) is not there
    assert conf["organizer"].to_list() == [pseudo("sip:ann@contoso.com")]

    reg = out["lync_registrations"]
    assert reg.select(
        "register_hour", "duration_s", "client", "client_network", "via_edge",
        "device_manufacturer", "region",
    ).rows() == [
        (datetime(2026, 11, 23, 8, tzinfo=UTC), 30600.0, "desk_phone", "203.0.113.0/24", True,
         "Polycom", "AMER"),
    ]  # fmt: skip
    assert reg["user"].to_list() == [pseudo("ann@contoso.com")]

    joins = out["lync_conference_joins"].sort("duration_s", descending=True, nulls_last=True)
    assert joins["user"][0] == pseudo("ann@contoso.com")
    assert joins["user"][1].startswith("x-")  # UserId 99 is in no Users export
    assert joins["user"][2] == pseudo("tel:+14255550100")  # a dial-in: a phone pseudonym
    assert joins.select("duration_s", "is_from_pstn", "via_mcu", "region").rows() == [
        (1200.0, False, True, "APAC"),
        (60.0, False, True, "APAC"),
        (None, True, True, "APAC"),  # still in the conference
    ]


def test_lync_2010_tables_golden(tmp_path, policy, dev_keyring, pseudo):
    folder = "lync/legacy/EMEA"
    write(
        tmp_path, f"{folder}/Users.csv", "UserId,UserUri\n1,ann@contoso.com\n2,bob@fabrikam.com\n"
    )
    write(tmp_path, f"{folder}/Phones.csv", "PhoneId,PhoneUri\n5,tel:+442079460000\n")
    write(tmp_path, f"{folder}/SessionDetails.csv", (
        "SessionIdTime,SessionIdSeq,InviteTime,ResponseTime,SessionEndTime,User1Id,User2Id,"
        "ResponseCode,MediaTypes,User2EdgeServerid\n"
        "2026-11-23 09:00:00.000,1,2026-11-23 09:00:00.000,2026-11-23 09:00:02.000,"
        "2026-11-23 09:05:02.000,1,2,200,16,3\n"
        "2026-11-23 09:10:00.000,1,2026-11-23 09:10:00.000,2026-11-23 09:10:04.000,"
        "2026-11-23 09:11:04.000,2,NULL,200,16,NULL\n"
    ))  # fmt: skip
    write(tmp_path, f"{folder}/VoipDetails.csv", (
        "SessionIdTime,SessionIdSeq,FromNumberId,ConnectedNumberId,ToGatewayId\n"
        "2026-11-23 09:10:00.000,1,NULL,5,6\n"
    ))  # fmt: skip
    sessions = run(tmp_path, policy, dev_keyring)["lync_sessions"].sort("session_hour", "setup_s")
    assert sessions.select(
        "setup_s", "duration_s", "modalities", "to_via_edge", "to_pstn_gateway", "region"
    ).rows() == [
        (2.0, 300.0, ["audio"], True, None, "EMEA"),
        (4.0, 60.0, ["audio"], False, True, "EMEA"),
    ]
    ann, bob = pseudo("ann@contoso.com"), pseudo("bob@fabrikam.com")
    assert sessions["from_user"].to_list() == [ann, bob]
    assert sessions["to_user"].to_list() == [bob, None]
    assert sessions["to_phone"].to_list() == [None, pseudo("+44 20 7946 0000", "phone")]
