"""The datasheet of each release: written with every publication, equal to the manifest, scanned."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from anonymize.datasheet import DATASHEET, MUST_NOT
from anonymize.gate import scan
from anonymize.layout import partition_key
from anonymize.policy import load_policy
from tests.conftest import SAMPLE
from tests.test_incremental import LATE, landing_from_sample, run


def _sheet(out: Path, release: str = "partner") -> dict:
    return json.loads((out / "shareable" / release / f"{DATASHEET}.json").read_text())


def _manifest(out: Path, run_id: str) -> dict:
    return json.loads((out / "_manifests" / f"{run_id}.json").read_text())


def _published_keys(out: Path, release: str = "partner") -> set[str]:
    return {
        partition_key(p.relative_to(out / "shareable").as_posix())
        for p in (out / "shareable" / release).glob("*/date=*/region=*")
    }


def test_the_datasheet_states_what_the_manifest_and_the_files_say(tmp_path, policy, dev_keyring):
    landing, out = landing_from_sample(tmp_path), tmp_path / "out"
    run(landing, out, policy, dev_keyring, "r1")
    sheet, manifest = _sheet(out), _manifest(out, "r1")
    entry = manifest["releases"]["partner"]
    assert sheet["recipient"] == entry["recipient"] == "partner"
    assert sheet["key_id"] == entry["key_id"]
    assert (sheet["k"], sheet["granularity"]) == (entry["k"], entry["granularity"])
    assert sheet["policy"] == {
        "version": manifest["policy"]["version"],
        "sha256": manifest["policy"]["sha256"],
    }
    assert sheet["not_for_sharing"] is manifest["not_for_sharing"] is True
    assert set(sheet["statistics"]) == set(entry["statistics"])
    for stat, report in entry["statistics"].items():
        pub = sheet["statistics"][stat]["this_publication"]
        assert (pub["cells"], pub["published"], pub["suppressed"]) == (
            report["cells"], report["published"], report["suppressed"],
        )  # fmt: skip
        assert pub["suppressed_share"] == round(report["suppressed"] / report["cells"], 4)
        assert sheet["statistics"][stat]["perturbation"] == report["perturbation"]
    keys = _published_keys(out)
    days = sorted({k.split("/")[0] for k in keys})
    assert sheet["coverage"] == {
        "first_day": days[0], "last_day": days[-1], "days": len(days),
        "regions": sorted({k.split("/")[1] for k in keys}),
    }  # fmt: skip
    assert sheet["schemas"]["statistics"] == "1"
    assert sheet["schemas"]["lync_sessions"] == "1"  # a source of usage_sessions
    assert sheet["must_not"] == list(MUST_NOT)
    assert any("fewer than 10 distinct people" in x for x in sheet["known_limits"])
    md = (out / "shareable" / "partner" / f"{DATASHEET}.md").read_text()
    assert "NOT FOR SHARING" in md
    assert sheet["key_id"] in md
    assert f"{days[0]} to {days[-1]}" in md
    for column in ("modality", "people", "page_views"):
        assert f"| `{column}` |" in md


def test_each_publication_rewrites_it_and_coverage_spans_the_whole_release(
    tmp_path, policy, dev_keyring
):
    """A late file republishes one day and region: the datasheet counts that publication's
    cells (as its manifest does) and still covers every day the release holds."""
    landing = landing_from_sample(tmp_path, without=(LATE,))
    out = tmp_path / "out"
    run(landing, out, policy, dev_keyring, "r1")
    first = _sheet(out)
    shutil.copy(SAMPLE / LATE, landing / LATE)
    run(landing, out, policy, dev_keyring, "r2")
    second, entry = _sheet(out), _manifest(out, "r2")["releases"]["partner"]
    assert second["coverage"] == first["coverage"]
    assert second["coverage"]["days"] == 2
    for stat, report in entry["statistics"].items():
        assert second["statistics"][stat]["this_publication"]["cells"] == report["cells"]
    # r2 computed one day and region, r1 all of them: the figures are each publication's own.
    cells = [
        s["statistics"]["usage_sessions"]["this_publication"]["cells"] for s in (first, second)
    ]
    assert 0 < cells[1] < cells[0]


def test_same_inputs_give_the_same_datasheet_bytes(tmp_path, policy, dev_keyring):
    landing = landing_from_sample(tmp_path)
    run(landing, tmp_path / "a", policy, dev_keyring, "ra")
    run(landing, tmp_path / "b", policy, dev_keyring, "rb")
    for name in (f"{DATASHEET}.json", f"{DATASHEET}.md"):
        a = (tmp_path / "a" / "shareable" / "partner" / name).read_bytes()
        assert a == (tmp_path / "b" / "shareable" / "partner" / name).read_bytes()


def test_a_dp_release_states_its_epsilon_and_accuracy(tmp_path, dev_keyring):
    doc = yaml.safe_load((Path(__file__).parent.parent / "policies" / "default.yaml").read_text())
    doc["releases"]["partner"]["dp"] = {"enabled": True, "epsilon": 1.0, "period": "week"}
    path = tmp_path / "dp.yaml"
    path.write_text(yaml.safe_dump(doc))
    landing, out = landing_from_sample(tmp_path), tmp_path / "out"
    run(landing, out, load_policy(path), dev_keyring, "r1")
    sheet, entry = _sheet(out), _manifest(out, "r1")["releases"]["partner"]
    assert sheet["protection"]["method"].startswith("differential privacy")
    assert sheet["protection"]["settings"]["epsilon"] == 1.0
    assert sheet["protection"]["spent"] == entry["dp"]
    for stat, report in entry["statistics"].items():
        assert sheet["statistics"][stat]["dp"] == report["dp"]
    md = (out / "shareable" / "partner" / f"{DATASHEET}.md").read_text()
    assert "Accuracy (95 % bound on the absolute error)" in md


def test_an_identifier_in_a_datasheet_is_a_finding(tmp_path):
    """The gate reads the datasheets line by line (an attacker's view: every byte shared)."""
    folder = tmp_path / "shareable" / "partner"
    folder.mkdir(parents=True)
    sheet = {"key_id": "k-0123456789abcdef", "policy": {"sha256": "ab" * 32}}
    (folder / f"{DATASHEET}.json").write_text(json.dumps(sheet))
    assert scan(tmp_path, None, {}, areas=("shareable",)) == []  # its own digests are not hits
    (folder / f"{DATASHEET}.md").write_text("# Datasheet\n\nContact: jane.doe@contoso.com\n")
    findings = scan(tmp_path, None, {}, areas=("shareable",))
    assert [(f.area, f.detector) for f in findings] == [("datasheet", "email")]
