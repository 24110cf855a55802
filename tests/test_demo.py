"""demo.py, the README's first command, as a real process: it starts a sandbox, runs the example
integrations through IntegrationWrapper.py, prints a summary and the page's URL, and leaves no
process behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO_ROOT

DEMO = os.path.join(REPO_ROOT, "demo.py")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def sandbox_pids(port: int) -> list:
    """Processes running ``-m sandbox ... --port <port>`` (from /proc)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % name, "rb") as source:
                argv = source.read().decode("utf-8", "replace").split("\0")
        except OSError:
            continue
        if "sandbox" in argv and "-m" in argv and "--port" in argv and str(port) in argv:
            pids.append(int(name))
    return pids


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def wait_gone(port: int, seconds: float = 5.0) -> list:
    deadline = time.monotonic() + seconds
    while sandbox_pids(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    return sandbox_pids(port)


def cleanup(process, port):
    """After a failure: end the demo and any sandbox it left, by pid."""
    if process is not None and process.poll() is None:
        process.kill()
        process.wait()
    for pid in sandbox_pids(port):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to look for leftover processes")


def test_demo_no_wait_runs_the_examples_prints_the_summary_and_leaves_nothing(tmp_path):
    port = free_port()
    try:
        result = subprocess.run([sys.executable, DEMO, "--no-wait", "--port", str(port)], cwd=str(tmp_path),
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=90)
    finally:
        leftovers = wait_gone(port)
        cleanup(None, port)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "http://127.0.0.1:%d/" % port in out
    assert "IntegrationWrapper.py exited with 1" in out
    lines = out.splitlines()
    [daily] = [line for line in lines if line.strip().startswith("Example Daily Import ")]
    [export] = [line for line in lines if line.strip().startswith("Example Nightly Export ")]
    assert "INT-1-" in daily and "Executed without Warnings" in daily and "1 warning" in daily
    assert "INT-2-" in export and "Executed with Warnings" in export and "error" in export
    assert leftovers == [] and not listening(port)


def test_demo_says_clearly_when_the_port_is_taken(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, DEMO, "--no-wait", "--port", str(port)], cwd=str(tmp_path),
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "port %d" % port in result.stderr and "already in use" in result.stderr
    assert sandbox_pids(port) == []


def test_demo_serves_the_page_until_interrupted(tmp_path):
    """Without --no-wait: the page shows the runs (screenshot in tmp_path), Ctrl-C stops everything."""
    from tests.test_page import launch_browser
    playwright, browser = launch_browser()
    port = free_port()
    process = None
    try:
        process = subprocess.Popen([sys.executable, DEMO, "--port", str(port)], cwd=str(tmp_path),
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True)
        output = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            output.append(line)
            if line.startswith("Serving until Ctrl-C"):
                break
        assert output and output[-1].startswith("Serving until Ctrl-C"), "".join(output)
        run_url = [word for line in output for word in line.split() if "/ui/run/" in word][0]

        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(run_url)
        page.locator("#logs tr.log").nth(5).wait_for(timeout=5000)
        assert page.locator("dl.meta").get_attribute("data-status") == "Executed without Warnings"
        assert page.locator("#logs tr.log .file a").count() == 1
        page.screenshot(path=os.environ.get("HUB_SCREENSHOT") or str(tmp_path / "run-page.png"), full_page=True)
        page.close()

        process.send_signal(signal.SIGINT)
        assert process.wait(15) == 0
        rest = process.stdout.read()
        assert "Stopping the sandbox." in rest
        assert wait_gone(port) == [] and not listening(port)
    finally:
        try:
            browser.close()
        finally:
            playwright.stop()
            if process is not None:
                cleanup(process, port)
                process.stdout.close()
