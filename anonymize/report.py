"""The run report, next to the manifest: Markdown (also the Prefect artifact) and HTML with charts.

Everything in it comes from the manifest (counts, reasons, verdicts, key ids), never from data
values. Charts are drawn with matplotlib as inline SVG, so the HTML file is self-contained and
opens in any browser without a network.
"""

from __future__ import annotations

import html
import io
from pathlib import Path

from anonymize.errors import safe_text

MANIFESTS = "_manifests"


def _markdown_table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _incremental_lines(inc: dict) -> list[str]:
    if not inc:
        return []
    rebuilt = inc.get("partitions_rebuilt", [])
    days = sorted({k.split("/")[0] for k in rebuilt})
    span = f" ({days[0]} .. {days[-1]})" if days else ""
    return [
        f"Incremental: {inc.get('files_unchanged', 0)} file(s) unchanged since the last run, "
        f"{inc.get('files_superseded', 0)} superseded; {len(rebuilt)} day/region partition(s) "
        f"rebuilt{span}" + (" (reprocess)" if inc.get("reprocess") else ""),
        "",
    ]


def _withheld_rows(gate: dict) -> list[list]:
    """(dataset, column, detector, rows, share of the dataset) of the rows the gate withheld."""
    out = []
    for dataset, entry in sorted((gate.get("withheld") or {}).items()):
        for col, detectors in sorted(entry["columns"].items()):
            for det, n in sorted(detectors.items()):
                out.append([dataset, col, det, n, f"{entry['share']:.4%}"])
    return out


def render_markdown(manifest: dict) -> str:
    """The report as Markdown."""
    t = manifest["totals"]
    gate = manifest.get("gate", {})
    lines = [
        f"# cdranon run {manifest['run_id']}: {manifest['status']}",
        "",
        f"policy {manifest['policy']['version']}, key {manifest['key']['key_id']}"
        + (" (DEVELOPMENT KEY: not for sharing)" if manifest["not_for_sharing"] else ""),
        "",
        *([f"**Why:** {manifest['reason']}", ""] if manifest.get("reason") else []),
        *_incremental_lines(manifest.get("incremental") or {}),
        f"Privacy gate: **{gate.get('verdict', 'not_run')}**"
        + (f" ({gate.get('canaries', 0)} canaries, {gate.get('seconds', 0)} s)" if gate else ""),
        "",
    ]
    if gate.get("findings"):
        lines += ["## Gate findings (nothing was published)", ""]
        lines += _markdown_table(
            ["area", "dataset", "column", "detector", "rows"],
            [[f["area"], f["dataset"], f["column"], f["detector"], f["rows"]]
             for f in gate["findings"]],
        )  # fmt: skip
        lines.append("")
    withheld = _withheld_rows(gate)
    if withheld:
        lines += ["## Rows withheld by the gate (quarantined, the rest published)", ""]
        lines += _markdown_table(["dataset", "column", "detector", "rows", "share"], withheld)
        lines.append("")
    lines += [
        f"Totals: {t['files']} file(s), {t['files_refused']} refused, {t['rows_read']} rows read, "
        f"{t['rows_published']} published, {t['rows_quarantined']} quarantined, "
        f"{t['rows_filtered']} filtered; {len(manifest['partitions_published'])} partition(s).",
        "",
        "## Volumes per dataset and day",
        "",
    ]
    lines += _markdown_table(
        ["dataset", "date", "rows"],
        [[v["dataset"], v["date"], v["rows"]] for v in manifest.get("volumes", [])],
    )
    reasons = manifest.get("quarantine", {}).get("rows_by_reason", {})
    lines += ["", "## Quarantined rows by reason", ""]
    lines += _markdown_table(["reason", "rows"], [[k, v] for k, v in reasons.items()] or [["-", 0]])
    lines += _requests_and_retention(manifest)
    lines += ["", "## Releases", ""]
    for name, entry in manifest.get("releases", {}).items():
        lines += [f"### {name} (for {entry['recipient']}, k={entry['k']}, {entry['granularity']})",
                  ""]  # fmt: skip
        lines += _markdown_table(
            ["statistic", "cells", "published", "suppressed"],
            [[s, r["cells"], r["published"], r["suppressed"]]
             for s, r in entry["statistics"].items()],
        )  # fmt: skip
        lines.append("")
        lines += _release_over_time(entry)
    curve = manifest.get("unicity", {})
    if curve:
        lines += ["## Unicity of the restricted sessions (latest day)", ""]
        lines += _markdown_table(
            ["points", "share of people singled out"], [[p, v] for p, v in curve.items()]
        )
        lines.append("")
    lines += ["## Files", ""]
    lines += _markdown_table(
        ["file", "kind", "read", "published", "quarantined", "filtered", "status"],
        [[safe_text(r["path"]), r["contract"] or "-", r["rows_read"], r["rows_published"],
          sum(r["rows_quarantined"].values()), sum(r["rows_filtered"].values()), r["status"]]
         for r in manifest["inputs"]],
    )  # fmt: skip
    return "\n".join(lines) + "\n"


def _requests_and_retention(manifest: dict) -> list[str]:
    """Data-subject requests applied and what retention purged (ids and counts only)."""
    lines = []
    requests = manifest.get("subject_requests") or {}
    if requests.get("applied") or requests.get("rederived"):
        lines += ["", "## Data-subject requests", ""]
        if requests.get("applied"):
            lines.append(
                f"Applied: {', '.join(requests['applied'])}; "
                f"{len(requests.get('partitions', []))} partition(s) rebuilt, "
                f"{requests.get('quarantine_rows_erased', 0)} quarantined row(s) erased."
            )
        if requests.get("rederived"):
            lines.append(
                f"Moved to the new key: {', '.join(requests['rederived'])} "
                f"({requests.get('pseudonyms_not_found', 0)} pseudonym(s) not found)."
            )
    purged = manifest.get("purged") or {}
    if any(purged.values()):
        lines += ["", "## Purged (retention)", ""]
        lines += _markdown_table(
            ["what", "count", "items"],
            [[k, len(v), ", ".join(v[:6]) + (" ..." if len(v) > 6 else "")]
             for k, v in purged.items() if v],
        )  # fmt: skip
    return lines


def _release_over_time(entry: dict) -> list[str]:
    """What a release's recipient was given this run: refusal, frozen partitions, budget."""
    lines = []
    if entry.get("refused"):
        lines += [f"**Not published:** {entry['refused']}.", ""]
    delivery = entry.get("delivery")
    if delivery:
        lines += [
            f"Delivered files: {delivery['new']} new, {delivery['changed']} changed, "
            f"{delivery['unchanged']} unchanged; {len(delivery['frozen'])} frozen partition(s) "
            "kept as the recipient holds them.",
            "",
        ]
    if entry.get("budget"):
        lines += _markdown_table(
            ["period", "spent before", "charged", "spent", "budget", "remaining"],
            [[p, b["spent_before"], b["charged"], b["spent"], b["budget"], b["remaining"]]
             for p, b in entry["budget"].items()],
        )  # fmt: skip
        lines.append("")
    return lines


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _charts(manifest: dict) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    charts = []
    vols = manifest.get("volumes", [])
    if vols:
        fig, ax = plt.subplots(figsize=(8, 3.2))
        dates = sorted({v["date"] for v in vols})
        datasets = sorted({v["dataset"] for v in vols})
        bottom = [0] * len(dates)
        for ds in datasets:
            heights = [sum(v["rows"] for v in vols if v["dataset"] == ds and v["date"] == d)
                       for d in dates]  # fmt: skip
            ax.bar(dates, heights, bottom=bottom, label=ds)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        ax.set_ylabel("rows published")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        charts.append(("Volumes per source and day", _svg(fig)))
        plt.close(fig)
    reasons = manifest.get("quarantine", {}).get("rows_by_reason", {})
    fig, ax = plt.subplots(figsize=(8, 2.4))
    ax.barh(list(reasons) or ["none"], list(reasons.values()) or [0], color="#c0504d")
    ax.set_xlabel("rows quarantined")
    charts.append(("Quarantined rows by reason", _svg(fig)))
    plt.close(fig)
    stats = [(f"{n}/{s}", r) for n, e in manifest.get("releases", {}).items()
             for s, r in e["statistics"].items()]  # fmt: skip
    if stats:
        fig, ax = plt.subplots(figsize=(8, 2.8))
        labels = [s for s, _ in stats]
        ax.barh(labels, [r["published"] for _, r in stats], label="published")
        ax.barh(labels, [r["suppressed"] for _, r in stats],
                left=[r["published"] for _, r in stats], label="suppressed")  # fmt: skip
        ax.set_xlabel("cells")
        ax.legend(fontsize=8)
        charts.append(("Published and suppressed cells", _svg(fig)))
        plt.close(fig)
    curve = manifest.get("unicity", {})
    if curve:
        fig, ax = plt.subplots(figsize=(5, 3))
        xs = [int(p) for p in curve]
        ax.plot(xs, list(curve.values()), marker="o")
        ax.set_xticks(xs)
        ax.set_xlabel("points known (hour and region of a session)")
        ax.set_ylabel("share of people singled out")
        ax.set_ylim(0, 1)
        charts.append(("Unicity curve (restricted sessions, latest day)", _svg(fig)))
        plt.close(fig)
    return charts


def render_html(manifest: dict) -> str:
    """The report as one self-contained HTML page: the Markdown's content plus SVG charts."""
    gate = manifest.get("gate", {})
    verdict = gate.get("verdict", "not_run")
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>cdranon run {html.escape(manifest['run_id'])}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
        ".pass{color:#2a7} .refused{color:#c33}</style></head><body>",
        f"<h1>cdranon run {html.escape(manifest['run_id'])}: "
        f"{html.escape(manifest['status'])}</h1>",
        f"<p id='gate' class='{html.escape(verdict)}'>Privacy gate: <b>{html.escape(verdict)}</b>"
        f" ({len(gate.get('findings', []))} finding(s))</p>",
    ]
    if gate.get("findings"):
        parts.append("<table id='findings'><tr><th>area</th><th>dataset</th><th>column</th>"
                     "<th>detector</th><th>rows</th></tr>")  # fmt: skip
        for f in gate["findings"]:
            cells = [f["area"], f["dataset"], f["column"], f["detector"], str(f["rows"])]
            parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
        parts.append("</table>")
    withheld = _withheld_rows(gate)
    if withheld:
        head = "".join(f"<th>{h}</th>" for h in ("dataset", "column", "detector", "rows", "share"))
        parts.append(f"<h2>Rows withheld by the gate</h2><table id='withheld'><tr>{head}</tr>")
        for row in withheld:
            parts.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
        parts.append("</table>")
    for title, svg in _charts(manifest):
        parts.append(f"<h2>{html.escape(title)}</h2><figure class='chart'>{svg}</figure>")
    parts.append("<section id='details'><h2>Details</h2>")
    parts.append(_markdown_to_html(render_markdown(manifest)))
    parts.append("</section></body></html>")
    return "\n".join(parts)


def _markdown_to_html(text: str) -> str:
    """The report's Markdown as HTML: tables as tables, headings one level down (the page has
    its own title). Raw HTML in the text is escaped, never passed through."""
    from markdown_it import MarkdownIt

    rendered = MarkdownIt("commonmark", {"html": False}).enable("table").render(text)
    for level in (5, 4, 3, 2, 1):
        rendered = rendered.replace(f"<h{level}>", f"<h{level + 1}>")
        rendered = rendered.replace(f"</h{level}>", f"</h{level + 1}>")
    return rendered


def write_report(out: Path, manifest: dict) -> tuple[Path, Path]:
    """Write ``_manifests/<run-id>.md`` and ``.html``; return both paths."""
    folder = Path(out) / MANIFESTS
    folder.mkdir(parents=True, exist_ok=True)
    md = folder / f"{manifest['run_id']}.md"
    page = folder / f"{manifest['run_id']}.html"
    md.write_text(render_markdown(manifest))
    page.write_text(render_html(manifest))
    return md, page
