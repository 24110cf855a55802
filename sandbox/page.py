"""The sandbox's web page: integrations, their runs, a run's log records, refreshing by itself.

Routes (no auth: a local sandbox; never under /api/, which is the OneVizion API surface):

    GET /  /ui  /ui/                    the page, integrations view
    GET /ui/integration/{id}            the page, runs of one integration (id = TRACKOR_ID)
    GET /ui/run/{id}                    the page, log records of one run
    GET /ui/static/{app.js,style.css}   the page's script and stylesheet (sandbox/static/)
    GET /ui/api/integrations            JSON: every integration with its last run
    GET /ui/api/integration/{id}        JSON: one integration and its runs, newest first
    GET /ui/api/run/{id}                JSON: one run and its log records in Log ID order, without
                                        descriptions (they can be 65,000 characters each)
    GET /ui/api/log/{id}                JSON: one log record with its description
    GET /ui/file/{trackor_id}/{field}   an electronic file, as a download

The JSON views take ``?v=<version>`` (the ``version`` of the previous answer); when nothing
changed they answer ``{"version": v, "same": true}``, so the page's polling once a second stays
cheap. The page renders every value with textContent (app.js), never as HTML, and is served with
a Content-Security-Policy that allows no inline script, so data that looks like markup stays text.

Contract with server.py: ``handle(handler, path, query, store) -> bool`` answers the request
through ``handler.send(status, body_bytes, content_type, headers=None)`` and returns True, or
returns False for a path it does not know (the server then answers 404).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from datetime import datetime
from urllib.parse import quote

from sandbox.schema import SandboxError, not_found
from sandbox.store import get_file, list_integrations, list_logs, list_runs

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
STATIC_TYPES = {"app.js": "text/javascript;charset=UTF-8", "style.css": "text/css;charset=UTF-8"}

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
COMMON_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
                  "Referrer-Policy": "no-referrer"}

SHELL = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>OneVizion sandbox \u2013 Integration Hub</title>
<link rel="stylesheet" href="/ui/static/style.css">
<script src="/ui/static/app.js" defer></script>
</head><body>
<header><a class="brand" href="/">OneVizion sandbox</a><span class="sub">Integration Hub</span>
<span id="live" class="live" title="The page refreshes itself every second">live</span></header>
<nav id="crumbs" aria-label="breadcrumbs"></nav>
<main id="view"><p class="muted">Loading\u2026</p><noscript>This page needs JavaScript.</noscript></main>
</body></html>
""".encode("utf-8")

_PAGE_RE = re.compile(r"^/(?:ui/?)?$|^/ui/(?:integration|run)/\d+/?$")
_API_RE = re.compile(r"^/ui/api/(integrations|integration|run|log)(?:/(\d+))?/?$")
_FILE_RE = re.compile(r"^/ui/file/(\d+)/([A-Za-z][A-Za-z0-9_]*)/?$")


def handle(handler, path, query, store) -> bool:
    if getattr(handler, "command", "GET") not in ("GET", "HEAD"):
        handler.close_connection = True  # a body may follow, unread
        raise SandboxError(405, "The page is read-only: GET only")
    if _PAGE_RE.match(path):
        headers = dict(COMMON_HEADERS, **{"Content-Security-Policy": CSP})
        handler.send(200, SHELL, "text/html;charset=UTF-8", headers)
        return True
    if path.startswith("/ui/static/"):
        return _static(handler, path[len("/ui/static/"):])
    match = _API_RE.match(path)
    if match:
        kind, number = match.group(1), match.group(2)
        if (kind == "integrations") != (number is None):
            return False
        data = _VIEWS[kind](store, int(number) if number else None)
        _send_json(handler, data, (query.get("v") or [""])[-1])
        return True
    match = _FILE_RE.match(path)
    if match:
        _send_file(handler, store, int(match.group(1)), match.group(2))
        return True
    return False


# -- views --------------------------------------------------------------------------------
def _integrations(store, _):
    result = []
    for row in list_integrations(store):
        runs = list_runs(store, row["TRACKOR_ID"])
        last = runs[0] if runs else None
        result.append({
            "id": row["TRACKOR_ID"], "key": row["TRACKOR_KEY"], "name": row.get("INT_NAME"),
            "enabled": _checked(row.get("INT_ENABLED")),
            "control_process": row.get("INT_CONTROL_PROCESS"),
            "last_run": row.get("INT_LAST_RUN") or (last or {}).get("IR_START"),
            "last_status": (last or {}).get("IR_STATUS"),
            "last_run_id": (last or {}).get("TRACKOR_ID"),
            "runs": len(runs)})
    return {"integrations": result}


def _integration(store, integration_id):
    integration = _one(list_integrations(store), integration_id, "Integration")
    return {"integration": {"id": integration_id, "key": integration["TRACKOR_KEY"],
                            "name": integration.get("INT_NAME"),
                            "enabled": _checked(integration.get("INT_ENABLED")),
                            "control_process": integration.get("INT_CONTROL_PROCESS"),
                            "description": integration.get("INT_DESCRIPTION")},
            "runs": [_run(run) for run in list_runs(store, integration_id)]}


def _run_view(store, run_id):
    run = _find_run(store, run_id)
    logs = []
    for row in list_logs(store, run_id):
        message, description = row.get("IL_MESSAGE") or "", row.get("IL_DESCRIPTION") or ""
        logs.append({
            "id": row["TRACKOR_ID"], "key": row["TRACKOR_KEY"], "time": row.get("IL_DATE_TIME"),
            "type": row.get("IL_MESSAGE_TYPE"), "message": message,
            # The description is fetched on demand; say only whether it adds anything.
            "description_chars": len(description) if description != message else 0,
            "description_lines": description.count("\n") + 1 if description != message else 0,
            "file": _file_link(row, "IL_FILE")})
    return {"integration": {"id": run["_parent_id"], "key": run["_parent_key"],
                            "name": run.get("_integration_name")},
            "run": _run(run), "logs": logs}


def _log(store, log_id):
    try:
        row = store.read_one(log_id, ["IL_MESSAGE", "IL_DESCRIPTION"])
    except SandboxError as error:  # not a log record: its type has no such fields (400)
        raise not_found("Log record %s not found" % log_id) if error.status == 400 else error
    return {"id": log_id, "key": row["TRACKOR_KEY"], "message": row.get("IL_MESSAGE"),
            "description": row.get("IL_DESCRIPTION")}


_VIEWS = {"integrations": _integrations, "integration": _integration, "run": _run_view, "log": _log}


def _run(row) -> dict:
    return {"id": row["TRACKOR_ID"], "key": row["TRACKOR_KEY"], "status": row.get("IR_STATUS"),
            "start": row.get("IR_START"), "finish": row.get("IR_FINISH"),
            "duration": _duration(row), "file": _file_link(row, "IR_FILE")}


def _find_run(store, run_id):
    run = _one(store.dump("IntegrationRun"), run_id, "Run")
    names = {row["TRACKOR_ID"]: row.get("INT_NAME") for row in list_integrations(store)}
    run["_integration_name"] = names.get(run["_parent_id"])
    return run


def _one(rows, trackor_id, what):
    for row in rows:
        if row["TRACKOR_ID"] == trackor_id:
            return row
    raise not_found("%s %s not found" % (what, trackor_id))


def _checked(value) -> bool:
    return str(value) in ("1", "true", "True")


def _parse_time(value):
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S")
    except (TypeError, ValueError):
        return None


def _duration(row):
    """Seconds from start to finish; for a run still going, since the sandbox created it."""
    start, finish = _parse_time(row.get("IR_START")), _parse_time(row.get("IR_FINISH"))
    if start and finish:
        return max(0, int((finish - start).total_seconds()))
    if row.get("_created_at") and not finish:
        return max(0, int(time.time() - row["_created_at"]))
    return None


def _file_link(row, field):
    info = row.get(field)
    if not info:
        return None
    return {"name": info.get("file_name"), "size": info.get("size"),
            "url": "/ui/file/%d/%s" % (row["TRACKOR_ID"], field)}


# -- answers ------------------------------------------------------------------------------
def _send_json(handler, data, known_version):
    body = json.dumps(data, sort_keys=True, separators=(",", ":")).encode("utf-8")
    version = hashlib.sha1(body).hexdigest()[:16]
    if known_version == version:
        body = json.dumps({"version": version, "same": True}).encode("utf-8")
    else:
        data = dict(data, version=version)
        body = json.dumps(data, separators=(",", ":")).encode("utf-8")
    handler.send(200, body, "application/json;charset=UTF-8", dict(COMMON_HEADERS))


def _static(handler, name) -> bool:
    if name not in STATIC_TYPES:
        return False
    with open(os.path.join(STATIC_DIR, name), "rb") as source:
        body = source.read()
    handler.send(200, body, STATIC_TYPES[name], dict(COMMON_HEADERS))
    return True


def _send_file(handler, store, trackor_id, field):
    try:
        name, data = get_file(store, trackor_id, field)
    except SandboxError as error:
        if error.status == 400:
            raise not_found(error.message) from None
        raise
    name = name or "file"
    ascii_name = re.sub(r'[^A-Za-z0-9._ -]', "_", name)
    headers = dict(COMMON_HEADERS)
    headers["Content-Disposition"] = "attachment; filename=\"%s\"; filename*=UTF-8''%s" % (
        ascii_name, quote(name, safe=""))
    headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    handler.send(200, data, "application/octet-stream", headers)


__all__ = ["handle"]
