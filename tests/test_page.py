"""The sandbox's web page (sandbox/page.py, sandbox/static/) in a real browser: Debian's chromium driven
by Playwright (``playwright`` from PyPI, never a browser download of its own).

Without chromium or the playwright package the browser tests are skipped, with the reason; with
HUB_REQUIRE_BROWSER set (CI) they fail instead. The HTTP-level tests below them always run.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import time

import pytest
import requests

import sandbox as sandbox_pkg
from tests.conftest import REPO_ROOT
from tests.hubtest import fixture_command

AUTH = (sandbox_pkg.USER_NAME, sandbox_pkg.PASSWORD)
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                 "--disable-dev-shm-usage"]
PAYLOAD = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=1">'
WAIT_MS = 5000


# -- the browser --------------------------------------------------------------------------
def chromium_path():
    """Debian's chromium (or $HUB_CHROMIUM), or None."""
    for name in (os.environ.get("HUB_CHROMIUM"), "chromium", "chromium-browser"):
        path = name and shutil.which(name)
        if path:
            return path
    return None


def browser_missing(reason: str):
    """Skip, or fail when HUB_REQUIRE_BROWSER says the browser must be there (CI)."""
    if os.environ.get("HUB_REQUIRE_BROWSER"):
        pytest.fail("HUB_REQUIRE_BROWSER is set but " + reason, pytrace=False)
    pytest.skip(reason)


def launch_browser():
    """(playwright, browser) on Debian's chromium; the caller closes both. Skips/fails when missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        browser_missing("the playwright package is not installed (pip install -r requirements-dev.txt)")
    path = chromium_path()
    if path is None:
        browser_missing("chromium is not installed (apt-get install chromium)")
    playwright = sync_playwright().start()
    try:
        # Playwright gives each launch a fresh temporary profile (--user-data-dir) and removes it.
        browser = playwright.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS,
                                             timeout=30000)
    except Exception:
        playwright.stop()
        raise
    return playwright, browser


@pytest.fixture(scope="module")
def browser():
    playwright, browser = launch_browser()
    try:
        yield browser
    finally:
        try:
            browser.close()
        finally:
            playwright.stop()


@pytest.fixture
def page(browser):
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
        assert errors == [], "JavaScript errors on the page: %s" % errors
    finally:
        context.close()


# -- data ---------------------------------------------------------------------------------
def create(sandbox, type_name, fields, parent=None):
    body = {"fields": fields}
    if parent:
        body["parents"] = [{"trackor_type": parent[0], "filter": {"TRACKOR_KEY": parent[1]}}]
    answer = requests.post("%s/api/v3/trackor_types/%s/trackors" % (sandbox.url, type_name), json=body, auth=AUTH)
    assert answer.status_code == 201, answer.text
    return answer.json()


def create_run(sandbox, key, integration="INT-1", status="Running"):
    return create(sandbox, "IntegrationRun", {"TRACKOR_KEY": key, "IR_STATUS": status,
                                              "IR_START": "2024-05-01T10:00:00"}, ("Integration", integration))


def create_log(sandbox, run_key, number, message, message_type="Info", **fields):
    values = dict({"TRACKOR_KEY": "%s-%06d" % (run_key, number), "IL_MESSAGE_TYPE": message_type,
                   "IL_MESSAGE": message, "IL_DATE_TIME": "2024-05-01T10:00:%02d" % (number % 60)}, **fields)
    return create(sandbox, "IntegrationLog", values, ("IntegrationRun", run_key))


def texts(page, selector):
    return [t.strip() for t in page.locator(selector).all_inner_texts()]


# -- browser tests ------------------------------------------------------------------------
def description_text(page):
    """The opened Description once it has come (the page shows "Loading…" until it has)."""
    page.wait_for_function("() => { const pre = document.querySelector('pre.description');"
                           " return pre && pre.textContent !== 'Loading\\u2026'; }")
    return page.locator("pre.description").inner_text()


def test_the_pages_show_a_real_run_its_records_and_its_file(hub, page, tmp_path):
    key = hub.add_integration("Page Check")
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "report.csv").write_bytes(b"a,b\n1,2\n")
    code = hub.wrapper(hub.integrations_file({
        "IntegrationName": "Page Check", "ExecutableWorkingDir": str(tmp_path / "work"),
        "ExecutablePath": fixture_command("says.py", "out:first line", "out:WARNING: careful", "err:it broke",
                                          "out:report.csv", "long:1000", "exit:2")}))
    assert code == 1
    [run] = hub.runs(key)
    url = hub.sandbox.url

    page.goto(url + "/")
    row = page.locator('#integrations tr[data-key="%s"]' % key)
    row.locator(".last-status .badge").wait_for()
    assert row.locator(".name").inner_text() == "Page Check"
    assert row.locator(".enabled").inner_text() == "Yes"
    assert row.locator(".control").inner_text() == "tests"
    assert row.locator(".last-status").inner_text() == "Executed with Warnings"
    assert row.locator(".last-run").inner_text() == run["IR_START"].replace("T", " ")
    assert page.locator('#integrations tr[data-key="INT-1"] .name').inner_text() == "Example Daily Import"

    row.locator(".name a").click()
    page.wait_for_url("**/ui/integration/*")
    run_row = page.locator('#runs tr[data-key="%s"]' % run["TRACKOR_KEY"])
    run_row.wait_for()
    badge = run_row.locator(".status .badge")
    assert badge.inner_text() == "Executed with Warnings"
    assert "status-executed-with-warnings" in badge.get_attribute("class")
    assert badge.evaluate("e => getComputedStyle(e).color") == "rgb(179, 89, 0)"  # orange
    assert run_row.locator(".start").inner_text() == run["IR_START"].replace("T", " ")
    assert run_row.locator(".finish").inner_text() == run["IR_FINISH"].replace("T", " ")
    assert run_row.locator(".duration").inner_text().endswith(" s")
    assert run_row.locator(".file a").inner_text() == "report.csv"
    assert page.locator("h1").inner_text() == "Page Check"

    run_row.locator(".key a").click()
    page.wait_for_url("**/ui/run/*")
    page.locator("#logs tr.log").nth(5).wait_for()
    logs = hub.logs(run["TRACKOR_KEY"])
    assert texts(page, "#logs tr.log .key") == [r["TRACKOR_KEY"] for r in logs]  # Log ID order
    messages = texts(page, "#logs tr.log .message .text")
    assert messages == [r["IL_MESSAGE"] for r in logs]  # stdout and stderr may interleave either way
    assert {"first line", "WARNING: careful", "it broke", "report.csv", "Exit code 2"} <= set(messages)
    types = texts(page, "#logs tr.log td.type")
    assert types == [r["IL_MESSAGE_TYPE"] for r in logs]
    assert types[messages.index("WARNING: careful")] == "Warning" and types[messages.index("it broke")] == "Error"
    assert texts(page, "#logs tr.log .time") == [r["IL_DATE_TIME"].replace("T", " ") for r in logs]
    assert page.locator("#logs tr.log-error .type .badge").first.evaluate(
        "e => getComputedStyle(e).color") == "rgb(192, 38, 45)"  # red
    assert page.locator("dl.meta").get_attribute("data-status") == "Executed with Warnings"

    link = page.locator("#logs tr.log .file a")
    assert link.count() == 1 and link.inner_text() == "report.csv"
    with page.expect_download() as download:
        link.click()
    assert download.value.suggested_filename == "report.csv"
    with open(download.value.path(), "rb") as got:
        assert got.read() == b"a,b\n1,2\n"

    # The long line's record: its description (all 1000 characters) on demand.
    long_row = page.locator("#logs tr.log").nth([m.startswith("yyyy") for m in messages].index(True))
    assert page.locator("pre.description").count() == 0
    long_row.locator("button.toggle").click()
    page.locator("pre.description").wait_for()
    assert description_text(page) == "y" * 1000
    long_row.locator("button.toggle").click()
    page.locator("pre.description").wait_for(state="detached")


def test_a_live_run_grows_on_the_page_without_a_reload(sandbox, page):
    run = create_run(sandbox, "INT-1-LIVE")
    create_log(sandbox, "INT-1-LIVE", 1, "first", IL_DESCRIPTION="first\nmerged second line")
    page.goto("%s/ui/run/%d" % (sandbox.url, run["TRACKOR_ID"]))
    page.locator("#logs tr.log").first.wait_for()
    assert page.locator("dl.meta .badge").inner_text() == "Running"
    assert "status-running" in page.locator("dl.meta .badge").get_attribute("class")
    page.locator("#logs tr.log button.toggle").click()
    page.locator("pre.description").wait_for()
    assert description_text(page) == "first\nmerged second line"
    page.evaluate("() => { window.__sameDocument = 1; document.querySelector('pre.description').__mark = 1; }")

    started = time.monotonic()
    create_log(sandbox, "INT-1-LIVE", 2, "second", "Warning")
    create_log(sandbox, "INT-1-LIVE", 3, "third", "Error")
    page.locator("#logs tr.log").nth(2).wait_for(timeout=WAIT_MS)
    assert time.monotonic() - started < WAIT_MS / 1000
    assert texts(page, "#logs tr.log .message .text") == ["first", "second", "third"]
    assert texts(page, "#logs tr.log td.type") == ["Info", "Warning", "Error"]
    # No reload, and the expanded description is the same node, still open.
    assert page.evaluate("() => window.__sameDocument") == 1
    assert page.evaluate("() => document.querySelector('pre.description').__mark") == 1

    requests.put("%s/api/v3/trackors/%d" % (sandbox.url, run["TRACKOR_ID"]), auth=AUTH,
                 json={"IR_STATUS": "Executed without Warnings", "IR_FINISH": "2024-05-01T10:01:05"}
                 ).raise_for_status()
    page.wait_for_function("() => document.querySelector('dl.meta').dataset.status === 'Executed without Warnings'")
    assert "1 min 05 s" in page.locator("dl.meta").inner_text()
    assert page.evaluate("() => window.__sameDocument") == 1
    assert description_text(page) == "first\nmerged second line"


def test_a_run_of_the_real_wrapper_shows_lines_as_they_come(hub, page):
    """A slow child under the real wrapper (a process): the run page, opened while the run goes on,
    shows its lines arriving and then the run's final status."""
    key = hub.add_integration("Slow Page")
    integration = [i for i in hub.sandbox.trackors("Integration") if i["TRACKOR_KEY"] == key][0]
    script = hub.integrations_file({"IntegrationName": "Slow Page", "Shell": True, "ExecutablePath":
                                    fixture_command("says.py", "out:line 1") + "; sleep 1.5; " +
                                    fixture_command("says.py", "out:line 2")})
    argv = [sys.executable, os.path.join(REPO_ROOT, "IntegrationWrapper.py"), *hub.common("-i", script)]
    wrapper = subprocess.Popen(argv, cwd=hub.tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        page.goto("%s/ui/integration/%d" % (hub.sandbox.url, integration["TRACKOR_ID"]))
        page.locator("#runs tr.run .key a").click(timeout=10000)  # appears while the run goes on
        page.wait_for_url("**/ui/run/*")
        page.locator("#logs tr.log").first.wait_for(timeout=10000)
        assert page.locator("dl.meta").get_attribute("data-status") == "Running"
        page.evaluate("() => { window.__sameDocument = 1; }")
        page.wait_for_function("() => document.querySelector('dl.meta').dataset.status === "
                               "'Executed without Warnings'", timeout=15000)
        assert texts(page, "#logs tr.log .message .text") == ["line 1", "line 2"]
        assert page.evaluate("() => window.__sameDocument") == 1
        assert wrapper.wait(15) == 0, wrapper.stderr.read()
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
            wrapper.wait()
        wrapper.stderr.close()


def test_markup_in_the_data_stays_text(sandbox, page):
    create(sandbox, "Integration", {"TRACKOR_KEY": "INT-X", "INT_NAME": PAYLOAD, "INT_CONTROL_PROCESS": PAYLOAD,
                                    "INT_ENABLED": 1})
    run = create(sandbox, "IntegrationRun", {"TRACKOR_KEY": "INT-X-RUN", "IR_STATUS": "Executed with Warnings",
                                             "IR_START": "2024-05-01T10:00:00", "IR_FINISH": "2024-05-01T10:00:09"},
                 ("Integration", "INT-X"))
    data = base64.b64encode(b"<script>alert(1)</script>").decode("ascii")
    create_log(sandbox, "INT-X-RUN", 1, PAYLOAD, "Error", IL_DESCRIPTION=PAYLOAD + "\n" + PAYLOAD,
               IL_FILE={"file_name": '<img src=x onerror="window.__pwned=1">.html', "data": data})
    integration_id = [i for i in sandbox.trackors("Integration") if i["TRACKOR_KEY"] == "INT-X"][0]["TRACKOR_ID"]

    page.goto(sandbox.url + "/")
    row = page.locator('#integrations tr[data-key="INT-X"]')
    row.wait_for()
    assert row.locator(".name").inner_text() == PAYLOAD
    assert row.locator(".control").inner_text() == PAYLOAD

    page.goto("%s/ui/integration/%d" % (sandbox.url, integration_id))
    page.locator("#runs tr.run").wait_for()
    assert page.locator("h1").inner_text() == PAYLOAD

    page.goto("%s/ui/run/%d" % (sandbox.url, run["TRACKOR_ID"]))
    page.locator("#logs tr.log").wait_for()
    assert page.locator("#logs tr.log .message .text").inner_text() == PAYLOAD
    page.locator("#logs tr.log button.toggle").click()
    page.locator("pre.description").wait_for()
    assert description_text(page) == PAYLOAD + "\n" + PAYLOAD
    assert page.locator("#logs tr.log .file a").inner_text().startswith("<img")
    page.wait_for_timeout(1200)  # a poll or two more
    assert page.evaluate("() => typeof window.__pwned") == "undefined"
    assert page.locator("#view script, #view img").count() == 0


# -- HTTP-level tests (no browser) -----------------------------------------------------------
def test_the_page_routes_answer_with_a_strict_policy(sandbox):
    for path in ("/", "/ui", "/ui/", "/ui/integration/1", "/ui/run/7"):
        answer = requests.get(sandbox.url + path)
        assert answer.status_code == 200, path
        assert answer.headers["Content-Type"].startswith("text/html")
        assert "script-src 'self'" in answer.headers["Content-Security-Policy"]
        assert "<script src=\"/ui/static/app.js\"" in answer.text
    assert requests.get(sandbox.url + "/ui/static/app.js").headers["Content-Type"].startswith("text/javascript")
    assert requests.get(sandbox.url + "/ui/static/style.css").headers["Content-Type"].startswith("text/css")
    assert requests.post(sandbox.url + "/ui/api/integrations", data=b"x").status_code == 405
    for path in ("/ui/static/../page.py", "/ui/static/nope.js", "/ui/nothing", "/ui/api/run/999",
                 "/ui/api/log/1", "/ui/api/integrations/1", "/ui/api/run", "/ui/file/999/IL_FILE"):
        assert requests.get(sandbox.url + path).status_code == 404, path


def test_the_json_views_answer_same_when_nothing_changed(sandbox):
    first = requests.get(sandbox.url + "/ui/api/integrations").json()
    assert [i["key"] for i in first["integrations"]] == ["INT-1", "INT-2"]
    assert first["integrations"][0]["last_status"] is None
    again = requests.get(sandbox.url + "/ui/api/integrations", params={"v": first["version"]}).json()
    assert again == {"version": first["version"], "same": True}
    create_run(sandbox, "INT-1-A", status="Executed without Warnings")
    changed = requests.get(sandbox.url + "/ui/api/integrations", params={"v": first["version"]}).json()
    assert changed["integrations"][0]["last_status"] == "Executed without Warnings"


def test_run_view_orders_by_log_id_and_leaves_descriptions_out(sandbox):
    run = create_run(sandbox, "INT-1-B")
    for number in (3, 1, 2):
        create_log(sandbox, "INT-1-B", number, "line %d" % number, IL_DESCRIPTION="line %d\nmore" % number)
    view = requests.get("%s/ui/api/run/%d" % (sandbox.url, run["TRACKOR_ID"])).json()
    assert [log["message"] for log in view["logs"]] == ["line 1", "line 2", "line 3"]
    assert all("description" not in log and log["description_lines"] == 2 for log in view["logs"])
    assert view["run"]["status"] == "Running" and view["integration"]["name"] == "Example Daily Import"
    one = requests.get("%s/ui/api/log/%d" % (sandbox.url, view["logs"][0]["id"])).json()
    assert one["description"] == "line 1\nmore"
    create_run(sandbox, "INT-1-D", status="Executed with Warnings")
    runs = requests.get("%s/ui/api/integration/%d" % (sandbox.url, view["integration"]["id"])).json()["runs"]
    assert [r["key"] for r in runs] == ["INT-1-D", "INT-1-B"]  # newest first


def test_a_file_downloads_through_the_page_route_without_auth(sandbox):
    run = create_run(sandbox, "INT-1-C")
    data = bytes(range(256)) * 3
    requests.post("%s/api/v3/trackor/%d/file/IR_FILE" % (sandbox.url, run["TRACKOR_ID"]), auth=AUTH,
                  params={"file_name": "rapport é.bin"}, files={"file": ("rapport é.bin", data)}).raise_for_status()
    answer = requests.get("%s/ui/file/%d/IR_FILE" % (sandbox.url, run["TRACKOR_ID"]))
    assert answer.status_code == 200 and answer.content == data
    assert answer.headers["Content-Type"] == "application/octet-stream"
    assert answer.headers["Content-Disposition"] == \
        "attachment; filename=\"rapport _.bin\"; filename*=UTF-8''rapport%20%C3%A9.bin"
    assert requests.get("%s/ui/file/%d/IR_STATUS" % (sandbox.url, run["TRACKOR_ID"])).status_code == 404
    assert requests.get("%s/ui/file/%d/IL_FILE" % (sandbox.url, run["TRACKOR_ID"])).status_code == 404
