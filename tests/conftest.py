"""Shared fixtures: synthetic landing zones, the default policy, keys, a Prefect test server."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from anonymize.keys import KeyRing
from anonymize.policy import DEFAULT_POLICY, Policy, load_policy
from anonymize.synth import World, generate_lync

# No per-example deadline: on a busy two-core CI machine a first call (phonenumbers metadata,
# ua-parser tables) can take longer than hypothesis's 200 ms and fail for no reason.
settings.register_profile("cdranon", deadline=None, print_blob=True)
settings.load_profile("cdranon")

# Before anything imports Prefect (the library never does): its home (database, result storage)
# lives in a temporary folder, so no test reads a cache or result of an earlier session and
# nothing lands in the checkout.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="cdranon-test-prefect-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"
REAL_LOGS = ROOT.parent / "shared" / "data" / "real-logs"
# A test master key (hex, random bytes); never a real one.
TEST_KEY = "9c1e5f0a7b3d2c8e46a1f09b5d7e3c2a81f4b6d0e9c7a5b3f1d2e8c4a6b09f7e"


@pytest.fixture(scope="session")
def policy() -> Policy:
    return load_policy(DEFAULT_POLICY)


@pytest.fixture(scope="session")
def dev_keyring() -> KeyRing:
    return KeyRing.development()


@pytest.fixture(scope="session")
def synth_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, World]:
    """A synthetic landing zone (read-only by convention) and the world that made it."""
    landing = tmp_path_factory.mktemp("landing")
    world = generate_lync(landing, seed=11, rows=3000, days=2, people=150)
    return landing, world


@pytest.fixture
def sample_landing(tmp_path: Path) -> Path:
    """A private copy of data/sample/ that a test may change."""
    target = tmp_path / "landing"
    shutil.copytree(SAMPLE, target)
    return target


@pytest.fixture(scope="module")
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect server for the flow tests (PREFECT_HOME is temporary, above).

    Module-scoped, and only tests/test_flow.py uses it: the server and its threads are gone
    before the other modules' property tests run.
    """
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def published_sample(tmp_path_factory, policy, dev_keyring) -> Path:
    """The published version (``<out>/current``) of one run over the sample with the default
    policy, shared by the tests that only read it (copy before changing anything)."""
    from anonymize.run import run_local

    root = tmp_path_factory.mktemp("published-sample")
    shutil.copytree(SAMPLE, root / "landing")
    report: dict = {}
    run_local(root / "landing", root / "out", policy=policy, keyring=dev_keyring, run_id="r1",
              report=report)  # fmt: skip
    assert report["status"] == "published"
    return root / "out" / "current"
