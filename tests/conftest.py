"""Shared fixtures: a fresh OneVizion sandbox per test, the repository root, a Passwords.json writer.

    sandbox             a running sandbox (sandbox.server.SandboxHandle) on a free port, :memory: db,
                        seeded from the repository's Integration.example.json; stopped afterwards
    repo_root           the repository root (a str), also REPO_ROOT
    write_passwords(tmp_path, url, **overrides) -> path of a Passwords.json (mode 0600) for it
                        (import it: from tests.conftest import write_passwords)
    passwords_path      a Passwords.json (Basic auth) for the sandbox fixture
"""

from __future__ import annotations

import json
import os

import pytest

import sandbox as sandbox_pkg
from sandbox.server import start_in_thread

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def repo_root() -> str:
    return REPO_ROOT


@pytest.fixture
def sandbox():
    handle = start_in_thread(db=":memory:", host="127.0.0.1", port=0,
                             integrations_path=os.path.join(REPO_ROOT, "Integration.example.json"))
    try:
        yield handle
    finally:
        handle.stop()


def write_passwords(tmp_path, url, **overrides) -> str:
    """Write a Passwords.json for the sandbox at ``url`` into ``tmp_path``; return its path.

    ``overrides`` change or add keys of the "installation" section; a value of None removes the key
    (e.g. ``Password=None, AccessKey=sandbox.ACCESS_KEY, SecretKey=sandbox.SECRET_KEY``).
    """
    section = {"URL": url, "UserName": sandbox_pkg.USER_NAME, "Password": sandbox_pkg.PASSWORD}
    for key, value in overrides.items():
        if value is None:
            section.pop(key, None)
        else:
            section[key] = value
    path = os.path.join(str(tmp_path), "Passwords.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"installation": section}, handle, indent=2)
    os.chmod(path, 0o600)
    return path


@pytest.fixture
def passwords_path(sandbox, tmp_path) -> str:
    """A Passwords.json (Basic auth) pointing at the ``sandbox`` fixture."""
    return write_passwords(tmp_path, sandbox.url)


@pytest.fixture
def hub(sandbox, tmp_path, monkeypatch):
    """A hub against the sandbox fixture, with fast backoff (fault tests take milliseconds, not minutes)."""
    from tests.hubtest import Hub
    monkeypatch.setenv("HUB_BACKOFF_BASE", "0.02")
    monkeypatch.setenv("HUB_BACKOFF_CAP", "0.2")
    monkeypatch.setenv("HUB_DELIVERY_SECONDS", "1")
    for name in ("HUB_RUN_ID", "HUB_INTEGRATION_ID", "HUB_INTEGRATION_NAME", "HUB_CONTROL_PROCESS", "HUB_LOG_DIR"):
        monkeypatch.delenv(name, raising=False)
    return Hub(sandbox, tmp_path)
