"""The run's temporary Prefect server (``anonymize.flows.server``): which server, start errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from anonymize.flows.server import ServerStartError, TemporaryServer, configured_api_url


def test_a_configured_server_is_used_from_the_environment_or_the_active_profile(
    monkeypatch, tmp_path
):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_PROFILE", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    assert configured_api_url() is None  # no profile file: a temporary server
    (tmp_path / "profiles.toml").write_text(
        'active = "work"\n[profiles.work]\nPREFECT_API_URL = "http://10.0.0.5:4200/api"\n'
        "[profiles.local]\n"
    )
    assert configured_api_url() == "http://10.0.0.5:4200/api"
    monkeypatch.setenv("PREFECT_PROFILE", "local")
    assert configured_api_url() is None
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    assert configured_api_url() == "http://127.0.0.1:4200/api"
    (tmp_path / "profiles.toml").write_text("not [ toml")
    monkeypatch.delenv("PREFECT_API_URL")
    assert configured_api_url() is None


def test_a_server_that_stops_while_starting_is_an_error_with_its_exit_code(monkeypatch):
    server = TemporaryServer(timeout=30)

    def spawn() -> None:
        server.port = 1
        server.process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(5)"])

    monkeypatch.setattr(server, "_spawn", spawn)
    monkeypatch.setenv("PREFECT_API_URL", "http://keep.example/api")
    server.start()
    with pytest.raises(ServerStartError, match="exit code 5"):
        server.wait()
    server.stop()


def test_a_server_that_never_answers_times_out_and_is_stopped(monkeypatch):
    server = TemporaryServer(timeout=0.5)

    def spawn() -> None:
        server.port = 1  # nothing answers there
        server.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])

    monkeypatch.setattr(server, "_spawn", spawn)
    monkeypatch.setenv("PREFECT_API_URL", "http://keep.example/api")
    server.start()
    process = server.process
    with pytest.raises(ServerStartError, match=r"did not start in 0\.5 s"):
        server.wait()
    server.stop()
    assert process.wait(timeout=10) is not None
