"""Secrets never leak (SPEC §2, §5 step 9): the password, the token's secret (and access) key and
the values of ${VAR}s in ExecutablePath appear nowhere the wrapper writes: its log files, its stdout
and stderr, the Log records in OneVizion, its error messages, or its own command line in the
process list. The child's arguments are not logged; a Passwords.json readable by others is warned
about in the log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

import sandbox as sandbox_pkg
from tests.conftest import REPO_ROOT, write_passwords
from tests.hubtest import fixture_command

VAR_SECRET = "var-secret-7f3a9c1e"
ENV_SECRET = "environment-secret-51b2"


def everything_written(hub, *texts):
    """All the wrapper wrote: its log, the given outputs, every trackor in the sandbox."""
    dump = {t: hub.sandbox.trackors(t) for t in ("Integration", "IntegrationRun", "IntegrationLog")}
    return "\n".join([hub.hub_log(), json.dumps(dump), *texts])


@pytest.fixture(params=["basic", "token"])
def auth(request, hub):
    """The hub with Basic or token auth; returns the secrets that must never show."""
    if request.param == "token":
        folder = os.path.join(hub.tmp, "token")
        os.makedirs(folder, exist_ok=True)
        hub.passwords = write_passwords(folder, hub.sandbox.url, UserName=None, Password=None,
                                        AccessKey=sandbox_pkg.ACCESS_KEY, SecretKey=sandbox_pkg.SECRET_KEY)
        return [sandbox_pkg.SECRET_KEY, sandbox_pkg.ACCESS_KEY]
    return [sandbox_pkg.PASSWORD]


def test_a_full_run_leaks_no_secret_anywhere_and_the_wrapper_cmdline_holds_none(hub, auth, tmp_path):
    key = hub.add_integration("Secretive")
    started, release = tmp_path / "started", tmp_path / "release"
    command = fixture_command("bad_holds.py", str(started), str(release)) + " --token=${HUB_BAD_SECRET} 'pw=${HUB_BAD_SECRET}'"
    integrations = hub.integrations_file(
        {"IntegrationName": "Secretive", "ExecutablePath": command, "Environment": {"API_TOKEN": ENV_SECRET}},
        {"IntegrationName": "Unset", "ExecutablePath": "/bin/echo --token=${HUB_BAD_SECRET} ${HUB_BAD_UNSET}"},
        {"IntegrationName": "Missing", "ExecutablePath": "/no/such/tool --token=${HUB_BAD_SECRET}"})
    hub.add_integration("Unset")
    hub.add_integration("Missing")
    env = dict(os.environ, HUB_BAD_SECRET=VAR_SECRET)
    env.pop("HUB_BAD_UNSET", None)
    argv = [sys.executable, os.path.join(REPO_ROOT, "IntegrationWrapper.py"),
            *hub.common("-i", integrations, "--drain-seconds", "5")]
    wrapper = subprocess.Popen(argv, cwd=hub.tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        deadline = time.monotonic() + 15
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert started.exists(), "the child never started"
        with open("/proc/%d/cmdline" % wrapper.pid, "rb") as handle:
            wrapper_cmdline = handle.read().decode()
        child_pid = int(started.read_text())
        with open("/proc/%d/cmdline" % child_pid, "rb") as handle:
            child_cmdline = handle.read().decode()
        release.write_text("go")
        out, err = wrapper.communicate(timeout=30)
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
            wrapper.communicate()
    assert VAR_SECRET in child_cmdline  # the child does get its expanded arguments...
    for secret in auth + [VAR_SECRET, ENV_SECRET]:  # ...but the wrapper's own command line holds none
        assert secret not in wrapper_cmdline
    assert wrapper.returncode == 2, err  # Unset: exit 2 for that entry; Missing: exit 1
    assert "error: Unset: ExecutablePath: ${HUB_BAD_UNSET} is not set in the environment" in err
    written = everything_written(hub, out, err)
    for secret in auth + [VAR_SECRET, ENV_SECRET]:
        assert secret not in written, secret
    assert "--token" not in hub.hub_log() and "pw=" not in hub.hub_log()  # arguments are not logged
    assert "program python" in hub.hub_log() and "with 5 arguments" in hub.hub_log()
    assert [r["IL_MESSAGE"] for r in hub.logs(hub.runs(key)[0]["TRACKOR_KEY"])] == ["released"]


@pytest.mark.parametrize("mode, warned", [(0o644, True), (0o640, True), (0o604, True), (0o600, False),
                                          (0o400, False)])
def test_passwords_json_readable_by_others_is_warned_about_in_the_log(hub, mode, warned):
    os.chmod(hub.passwords, mode)
    hub.add_integration("Plain")
    done = hub.script("IntegrationWrapper.py", "-i", hub.integrations_file(
        {"IntegrationName": "Plain", "ExecutablePath": "true"}), "--drain-seconds", "2")
    assert done.returncode == 0, done.stderr
    log = hub.hub_log()
    assert (("%s is " % hub.passwords) in log and "chmod 600 it" in log) == warned, log
    assert ("(mode %04o)" % mode in log) == warned
    assert sandbox_pkg.PASSWORD not in log


def test_a_bad_passwords_file_names_the_key_not_the_value_through_the_real_script(hub):
    with open(hub.passwords, "w") as handle:
        json.dump({"installation": {"URL": hub.sandbox.url, "UserName": "u", "Password": sandbox_pkg.PASSWORD,
                                    "Passwort": sandbox_pkg.PASSWORD}}, handle)
    done = hub.script("IntegrationWrapper.py", "-i", hub.integrations_file(
        {"IntegrationName": "Plain", "ExecutablePath": "true"}))
    assert done.returncode == 2
    assert 'installation: unknown key "Passwort"' in done.stderr
    assert sandbox_pkg.PASSWORD not in done.stderr + done.stdout + hub.hub_log()
    assert hub.sandbox.stats()["total"] == 0


def test_a_record_refused_with_an_echoing_body_leaks_no_secret_into_the_log(hub, auth):
    """OneVizion (or a proxy) answering a refused create with the request echoed back: what the
    hub keeps of the refusal (its message, for the log and --status) masks the credentials.
    A real HTTP server on loopback that echoes the Authorization header it got."""
    import http.server
    import threading
    from hub.api import CallFailed, OneVizion
    from hub.config import load_passwords

    class Echo(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            header = self.headers.get("Authorization") or ""
            body = ("bad request; you sent Authorization: %s (%s)" % (header, header.split(" ", 1)[-1])).encode()
            self.send_response(400)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with open(hub.passwords) as handle:
            data = json.load(handle)
        data["installation"]["URL"] = "http://127.0.0.1:%d" % server.server_address[1]
        with open(hub.passwords, "w") as handle:
            json.dump(data, handle)
        installation, _ = load_passwords(hub.passwords)
        api = OneVizion(installation)
        header = installation.authorization()
        with pytest.raises(CallFailed) as caught:
            api.create("IntegrationLog", {"TRACKOR_KEY": "K-000001"}, [("IntegrationRun", "K")])
        api.close()
    finally:
        server.shutdown()
        server.server_close()
    text = caught.value.message + caught.value.answer.describe()
    for secret in auth + [header, header.split()[1]]:
        assert secret not in text
    assert "Authorization: ***" in text and caught.value.answer.status == 400
