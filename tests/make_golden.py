"""Writes tests/golden/: a hand-made SessionDetailsView export and the output it must give.

Run it only to change the golden sample on purpose (``python tests/make_golden.py``); review the
diff of both files. The values are invented; none is a real person.
"""

from __future__ import annotations

import csv
from pathlib import Path

from anonymize.contracts import load_contract

HERE = Path(__file__).parent / "golden"
COLUMNS = [c.name for c in load_contract("lync_session_details_view").columns]
BASE = {
    "SessionIdSeq": "1",
    "FromUriType": "UserUri",
    "ToUriType": "UserUri",
    "FromClientType": "4",
    "FromClientCategory": "OC",
    "ToClientType": "4",
    "ToClientCategory": "OC",
    "FromMessageCount": "0",
    "ToMessageCount": "0",
    "DiagnosticId": "51004",
    "ContentType": "application/sdp",
    "FrontEnd": "fe01.pool01.us.uchost.net",
    "Pool": "fepool01.us.uchost.net",
    "IsFromInternal": "1",
    "IsToInternal": "1",
    "CallPriority": "0",
    "FromUserFlag": "0",
    "ToUserFlag": "0",
    "CallFlag": "0",
    "ResponseCode": "200",
}
SFB = "UCCAPI/16.0.5215.1000 OC/16.0.5215.1000 (Skype for Business)"
ROWS = [
    # 1. IM between two colleagues, URIs as stored (no scheme), upper-case GUIDs.
    {
        "SessionIdTime": "2026-11-23 14:05:09.120",
        "InviteTime": "2026-11-23 14:05:09.120",
        "ResponseTime": "2026-11-23 14:05:10.620",
        "EndTime": "2026-11-23 14:09:10.620",
        "FromUri": "Grace.Hopper@contoso.com",
        "ToUri": "alan.turing@contoso.com",
        "TargetUri": "alan.turing@contoso.com",
        "FromTenant": "T-CONTOSO",
        "ToTenant": "T-CONTOSO",
        "FromEndpointId": "6F9619FF-8B86-D011-B42D-00C04FC964FF",
        "ToEndpointId": "{7A1B2C3D-0000-4000-8000-00000000AA01}",
        "FromClientVersion": SFB,
        "ToClientVersion": "UCWA/6.0.0.0 iPhoneLync/6.22.1 (iOS 12.1)",
        "FromMessageCount": "7",
        "ToMessageCount": "5",
        "MediaTypes": "1",
        "ContentType": "text/plain",
        "DialogId": "a1b2c3,d4;from-tag=1;to-tag=2",
    },
    # 2. Outbound PSTN call: ToUri is a phone URI; the same caller as row 1, another form.
    {
        "SessionIdTime": "2026-11-23 14:30:00.000",
        "InviteTime": "2026-11-23 14:30:00.000",
        "ResponseTime": "2026-11-23 14:30:04.500",
        "EndTime": "2026-11-23 14:42:04.500",
        "FromUri": "sip:grace.hopper@CONTOSO.com;gruu",
        "ToUri": "+14255550100@contoso.com;user=phone",
        "ToUriType": "PhoneUri",
        "TargetUri": "+14255550100@contoso.com;user=phone",
        "FromTenant": "T-CONTOSO",
        "FromClientVersion": SFB,
        "ToClientVersion": "RTCC/6.0.0.0 MediationServer",
        "MediaTypes": "16",
        "IsToInternal": "0",
        "FromEdgeServer": "edge01.uchost.net",
    },
    # 3. Failed federated video call from the UK pool: no EndTime, SIP 486.
    {
        "SessionIdTime": "2026-11-23 09:59:59.999",
        "InviteTime": "2026-11-23 09:59:59.999",
        "ResponseTime": "2026-11-23 10:00:02.999",
        "FromUri": "ada.lovelace@fabrikam.com",
        "ToUri": "charles.babbage@partner.example",
        "TargetUri": "charles.babbage@partner.example",
        "FromTenant": "T-FABRIKAM",
        "ToTenant": "T-PARTNER",
        "FromClientVersion": SFB,
        "ToClientVersion": "Lync for Mac 14.0",
        "MediaTypes": "48",
        "ResponseCode": "486",
        "DiagnosticId": "10007",
        "Pool": "fepool01.uk.uchost.net",
        "IsToInternal": "0",
        "ToEdgeServer": "edge01.uchost.net",
    },
    # 4. A bad SessionIdTime: quarantined as bad_value:SessionIdTime.
    {
        "SessionIdTime": "23/11/2026 25:00",
        "InviteTime": "2026-11-23 11:00:00.000",
        "FromUri": "edsger.dijkstra@contoso.com",
        "ToUri": "alan.turing@contoso.com",
    },
    # 5. A pool no region knows: quarantined as unmapped_pool.
    {
        "SessionIdTime": "2026-11-23 11:00:00.000",
        "InviteTime": "2026-11-23 11:00:00.000",
        "FromUri": "barbara.liskov@contoso.com",
        "ToUri": "alan.turing@contoso.com",
        "Pool": "pool.mars.uchost.net",
        "MediaTypes": "1",
    },
    # 6. Application sharing from APAC the next day, answered after a long setup.
    {
        "SessionIdTime": "2026-11-24 02:15:30.000",
        "InviteTime": "2026-11-24 02:15:30.000",
        "ResponseTime": "2026-11-24 02:15:45.250",
        "EndTime": "2026-11-24 03:15:45.250",
        "FromUri": "alan.turing@contoso.com",
        "ToUri": "Grace.Hopper@Contoso.com",
        "TargetUri": "grace.hopper@contoso.com",
        "FromClientVersion": "LWA/6.0.0.0 (Skype Meetings App)",
        "ToClientVersion": SFB,
        "MediaTypes": "24",
        "Pool": "fepool01.hk.uchost.net",
        "IsFromInternal": "False",
        "IsToInternal": "True",
    },
]
EXPECTED = [
    # date, region, session_hour, setup_s, duration_s, from_domain_class, to_domain_class,
    # from_client, to_client, modalities, response_code, from_via_edge, to_via_edge,
    # is_from_internal
    (
        "2026-11-23",
        "AMER",
        "2026-11-23 14:00:00",
        1.5,
        240.0,
        "internal",
        "internal",
        "desktop_windows",
        "mobile_ios",
        "im",
        200,
        False,
        False,
        True,
    ),
    (
        "2026-11-23",
        "AMER",
        "2026-11-23 14:00:00",
        4.5,
        720.0,
        "internal",
        "phone",
        "desktop_windows",
        "mediation_server",
        "audio",
        200,
        True,
        False,
        True,
    ),
    (
        "2026-11-23",
        "EMEA",
        "2026-11-23 09:00:00",
        3.0,
        None,
        "internal",
        "federated",
        "desktop_windows",
        "desktop_mac",
        "audio|video",
        486,
        False,
        True,
        True,
    ),
    (
        "2026-11-24",
        "APAC",
        "2026-11-24 02:00:00",
        15.25,
        3600.0,
        "internal",
        "internal",
        "web_app",
        "desktop_windows",
        "app_sharing|audio",
        200,
        False,
        False,
        False,
    ),
]
EXPECTED_COLUMNS = [
    "date",
    "region",
    "session_hour",
    "setup_s",
    "duration_s",
    "from_domain_class",
    "to_domain_class",
    "from_client",
    "to_client",
    "modalities",
    "response_code",
    "from_via_edge",
    "to_via_edge",
    "is_from_internal",
]


def main() -> None:
    target = HERE / "lync" / "2026-11-23" / "SessionDetailsView.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\r\n")
        w.writerow(COLUMNS)
        for row in ROWS:
            full = {**BASE, **row}
            w.writerow([full.get(c, "NULL") for c in COLUMNS])
    with (HERE / "expected_lync_sessions.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(EXPECTED_COLUMNS)
        w.writerows(["" if v is None else v for v in row] for row in EXPECTED)


if __name__ == "__main__":
    main()
