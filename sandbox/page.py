"""The sandbox's web page (GET / and /ui/...). A stub for now: the real page comes later.

Contract: ``handle(handler, path, query, store) -> bool`` answers the request through
``handler.send(status, body_bytes, content_type, headers=None)`` and returns True, or returns
False for a path it does not know (the server then answers 404). Data comes from the plain
functions of sandbox.store: list_integrations(store), list_runs(store, integration_id),
list_logs(store, run_id), get_file(store, trackor_id, field_name).
"""

from __future__ import annotations

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>OneVizion sandbox</title></head>
<body><h1>OneVizion sandbox</h1><p>The sandbox is running.</p></body></html>
"""


def handle(handler, path, query, store) -> bool:
    if path in ("/", "/ui", "/ui/"):
        handler.send(200, PAGE, "text/html;charset=UTF-8")
        return True
    return False
