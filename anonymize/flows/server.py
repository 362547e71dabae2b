"""The temporary Prefect server of one ``cdranon run``, started before Prefect is imported.

Prefect starts the same server (uvicorn over ``prefect.server.api.server:create_app``, no UI) at a
flow's first API call, after importing its server package in the caller: about 4 s of imports,
then 6 s of server start, one after the other. Started here, from a process that has not
imported Prefect yet, the server comes up on the other core while the run imports and checks
everything else; the run then talks to it through ``PREFECT_API_URL`` as to any server, and
stops it at the end. This module imports nothing of Prefect.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from importlib.util import find_spec
from pathlib import Path

PORT_IN_USE = 3  # uvicorn's exit code when it cannot bind


class ServerStartError(RuntimeError):
    """The temporary server did not come up (the message says why; no data in it)."""


def configured_api_url() -> str | None:
    """The API URL Prefect would use without starting a server: ``PREFECT_API_URL`` in the
    environment, else in the active profile of ``PREFECT_HOME/profiles.toml``."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
    try:
        profiles = tomllib.loads((home / "profiles.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active") or "ephemeral"
    url = profiles.get("profiles", {}).get(active, {}).get("PREFECT_API_URL")
    return str(url) if url else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TemporaryServer:
    """One run's Prefect server: ``start()`` returns at once, ``wait()`` until it answers.

    Example
    -------
    >>> server = TemporaryServer(timeout=120)   # doctest: +SKIP
    >>> server.start(); ...; server.wait(); ...; server.stop()   # doctest: +SKIP
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.process: subprocess.Popen | None = None
        self.port = 0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def _spawn(self) -> None:
        spec = find_spec("prefect")
        if spec is None or not spec.origin:
            raise ServerStartError("Prefect is not installed in this environment")
        self.port = _free_port()
        env = {
            **os.environ,
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
        }
        env.pop("PREFECT_API_URL", None)
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn",
                "--app-dir", str(Path(spec.origin).parent.parent),
                "--factory", "prefect.server.api.server:create_app",
                "--host", "127.0.0.1", "--port", str(self.port),
                "--log-level", "error", "--lifespan", "on",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def start(self) -> None:
        """Spawn the server and point this process's Prefect at it (``PREFECT_API_URL``).

        It is stopped at exit: registered before Prefect is imported, after Prefect's own exit
        handlers have sent the last logs and events."""
        self._spawn()
        os.environ["PREFECT_API_URL"] = self.api_url
        atexit.register(self.stop)

    def wait(self) -> None:
        """Return once the server answers its health check; raise ServerStartError if it stops
        or does not answer within ``timeout`` seconds."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            code = self.process.poll()
            if code == PORT_IN_USE:  # someone took the port in between: another one
                self._spawn()
                os.environ["PREFECT_API_URL"] = self.api_url
                continue
            if code is not None:
                raise ServerStartError(
                    f"the embedded Prefect server stopped while starting (exit code {code})"
                )
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise ServerStartError(f"the embedded Prefect server did not start in {self.timeout:g} s")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
