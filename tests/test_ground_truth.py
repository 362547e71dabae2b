"""Ground truth: no published cell of any statistic stands for fewer than k real people.

The generator knows who wrote each record: the people of its world, and, in truth mode, the
writer of each web request (with one device each, phones roaming between carrier networks,
proxies, IIS layouts that change mid-file, signed-in and anonymous requests). Over 30 days, each
statistic's cells are recounted with real people and compared with what was published.
"""

from __future__ import annotations

import polars as pl
import pytest

from anonymize.contracts import load_output_schema
from anonymize.identifiers import normalize_identifier, pseudonym
from anonymize.policy import DEFAULT_POLICY, load_policy
from anonymize.releases import PERIODS
from anonymize.run import run_local
from anonymize.stage import make_context
from anonymize.statistics import PERSON, STATISTICS
from anonymize.synth_sources import generate_all

DAYS = 30
pytestmark = pytest.mark.slow  # about 70 s: a month of every source


@pytest.fixture(scope="module")
def truth_run(tmp_path_factory, policy, dev_keyring):
    root = tmp_path_factory.mktemp("truth")
    world = generate_all(root / "landing", seed=8, rows=24_000, days=DAYS, people=90,
                         truth=True)  # fmt: skip
    report: dict = {}
    _, published = run_local(root / "landing", root / "out", policy=policy, keyring=dev_keyring,
                             run_id="t", report=report)  # fmt: skip
    assert report["gate"]["verdict"] == "pass", report["gate"]["findings"]
    assert published
    ctx = make_context(policy, dev_keyring)
    who: dict[str, int] = {}
    for i, p in enumerate(world.people):
        for ident in (p.sip, f"tel:{p.phone}"):
            kind, norm = normalize_identifier(ident, "auto")
            who[pseudonym(ctx.key_for(kind), kind, norm)] = i
    return root / "out", who, report["releases"]


def _scan(restricted):
    def scan(dataset: str) -> pl.LazyFrame:
        files = sorted((restricted / dataset).glob("date=*/region=*/*.parquet"))
        if not files:
            schema = dict(load_output_schema(dataset).polars_schema)
            return pl.LazyFrame(schema={**schema, "date": pl.Date, "region": pl.String})
        return pl.scan_parquet(files, hive_partitioning=True,
                               hive_schema={"date": pl.Date, "region": pl.String})  # fmt: skip

    return scan


# Every statistic of every third-party release of the default policy (tenant releases count
# their tenant's own users, under pseudonyms the generator's world cannot be mapped to).
RELEASES = load_policy(DEFAULT_POLICY).releases
CASES = sorted(
    (stat, name) for name, spec in RELEASES.items() if spec.kind == "recipient"
    for stat in spec.statistics
)  # fmt: skip


def test_every_statistic_is_checked_in_some_release():
    assert {stat for stat, _ in CASES} == set(STATISTICS)


@pytest.mark.parametrize(("name", "release"), CASES)
def test_every_published_cell_has_k_real_people(truth_run, name, release):
    out, who, releases = truth_run
    entry, spec = releases[release], RELEASES[release]
    stat = STATISTICS[name]
    keys = ["date", "region", *stat.dims]
    _, people = stat.build(_scan(out / "restricted"), False)
    if spec.granularity in PERIODS:  # a cell of a week or a month: its people over the period
        people = people.with_columns(pl.col("date").dt.truncate(PERIODS[spec.granularity]))
    if name == "usage_web":  # the writer, from the time-taken (IIS) or the size (Apache)
        real = pl.coalesce(pl.col("time_taken_ms"), pl.col("bytes_sent")) // 1000
        people = people.with_columns(real.cast(pl.String).alias("__real"))
    else:  # a person's pseudonyms (SIP, phone) are one person; other numbers are their own
        mapping = {k: str(v) for k, v in who.items()}
        people = people.with_columns(
            pl.col(PERSON).replace_strict(mapping, default=pl.col(PERSON)).alias("__real")
        )
    real = people.group_by(keys).agg(pl.col("__real").n_unique().alias("real")).collect()
    cells = pl.read_parquet(out / "shareable" / release / name, hive_partitioning=True)
    assert cells.height == entry["statistics"][name]["published"]
    if name in ("usage_sessions", "usage_web"):
        assert cells.height >= 20, name  # the test has something to check
    if spec.granularity in PERIODS:
        assert cells.height >= 6, name
    joined = cells.join(real, on=keys, how="left", nulls_equal=True)
    assert joined["real"].null_count() == 0
    assert joined["real"].min() >= entry["k"], joined.filter(pl.col("real") < entry["k"])
