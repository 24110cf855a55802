"""`python -m sandbox` as a process: starts fast, prints its URL, answers, stops on SIGTERM, keeps its data."""

import os
import re
import signal
import subprocess
import sys
import time

import requests

import sandbox as sandbox_pkg

AUTH = (sandbox_pkg.USER_NAME, sandbox_pkg.PASSWORD)


def start(repo_root, db):
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "sandbox", "--port", "0", "--db", db],
                               cwd=repo_root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    assert time.monotonic() - started < 2.0
    url = re.search(r"http://[\d.]+:\d+", line).group(0)
    assert sandbox_pkg.USER_NAME in line and sandbox_pkg.PASSWORD in line
    return process, url


def stop(process):
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=5) == 0
    process.stdout.close()
    process.stderr.close()


def test_process_serves_seeds_once_and_keeps_data(repo_root, tmp_path):
    db = str(tmp_path / "sandbox.db")
    process, url = start(repo_root, db)
    try:
        rows = requests.get(url + "/api/v3/trackor_types/Integration/trackors?fields=INT_NAME", auth=AUTH).json()
        assert [r["TRACKOR_KEY"] for r in rows] == ["INT-1", "INT-2"]
        spec = {"name": "MyIntegration", "fields": {"MI_NAME": "text"}}
        assert requests.post(url + "/_sandbox/trackor_types", json=spec).status_code == 201
        requests.post(url + "/api/v3/trackor_types/MyIntegration/trackors", auth=AUTH,
                      json={"fields": {"TRACKOR_KEY": "MI-1", "MI_NAME": "kept"}})
    finally:
        stop(process)
    process, url = start(repo_root, db)
    try:
        rows = requests.get(url + "/api/v3/trackor_types/Integration/trackors", auth=AUTH).json()
        assert len(rows) == 2
        kept = requests.get(url + "/api/v3/trackor_types/MyIntegration/trackors?fields=MI_NAME", auth=AUTH)
        assert kept.json()[0]["MI_NAME"] == "kept"
    finally:
        stop(process)
    assert os.path.exists(db)


def test_page_answers(sandbox):
    answer = requests.get(sandbox.url + "/")
    assert answer.status_code == 200 and "OneVizion sandbox" in answer.text


def test_every_flag_and_control_endpoint_is_in_the_readme(repo_root):
    from sandbox.__main__ import build_parser
    with open(os.path.join(repo_root, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    section = readme[readme.index("## The sandbox"):readme.index("## Benchmark")]
    flags = [flag for action in build_parser()._actions for flag in action.option_strings
             if flag not in ("-h", "--help")]
    assert [flag for flag in flags if "[%s" % flag not in section] == []
    endpoints = ["/_sandbox/faults", "/_sandbox/stats", "/_sandbox/trackors/{type}", "/_sandbox/rules",
                 "/_sandbox/rules/{id}", "/_sandbox/schema", "/_sandbox/trackor_types", "/api/authorize",
                 "/api/v3/schema/trackor_types", "/api/v3/schema/fields", "/api/v3/trackor_types/{type}",
                 "/api/v3/trackor_types/{type}/parents", "/api/v3/params/system/PrimaryTimezone"]
    assert [e for e in endpoints if e not in section] == []
