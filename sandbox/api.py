"""The /api/... routes: the subset of OneVizion REST API v3 the hub uses, shaped as onevizion-api.md says.

``route(method, path)`` names the handler and the kind of request (for the counters) before anything
is processed; each handler takes (store, request, *path parts) and returns a Response. Failures are
SandboxError, which the server turns into text/plain answers.

Choices where onevizion-api.md says "unknown": a duplicate TRACKOR_KEY is 400; update or delete by
filter matching nothing is 404, and without any filter 400; a parent filter matching several
trackors picks the oldest (sandbox.writes); deleting a trackor deletes its descendants; the JSON endpoints require a JSON
Content-Type (else 415); ``view=`` and ``filter=`` (saved views and filters) are not supported (400);
a create body with properties other than "fields" and "parents" is 400 (flat fields are a mistake
there). Filter matching rules are in sandbox.query, value rules in sandbox.schema.
"""

from __future__ import annotations

import json
import mimetypes
import re
from urllib.parse import quote, unquote

from sandbox import VERSION, metadata, multipart
from sandbox.schema import SandboxError, bad, not_found

JSON_TYPE = "application/json;charset=UTF-8"


class Request:
    """What a handler needs of an HTTP request; ``query`` maps names to lists of values."""

    def __init__(self, method, path, query, headers, body):
        self.method, self.path, self.query, self.headers, self.body = method, path, query, headers, body

    def json(self):
        content_type = (self.headers.get("Content-Type") or "").lower()
        if "json" not in content_type:
            raise SandboxError(415, "Content-Type must be application/json")
        try:
            return json.loads(self.body.decode("utf-8"), parse_constant=_no_constant)
        except (UnicodeDecodeError, ValueError) as error:
            raise bad("Malformed JSON: %s" % error) from None
        except RecursionError:
            raise bad("Malformed JSON: nested too deeply") from None

    def first(self, name, default=None):
        for key, values in self.query.items():
            if key.lower() == name.lower() and values:
                return values[-1]
        return default


def _no_constant(name):
    """NaN, Infinity and -Infinity are not JSON (Python's json accepts them by default)."""
    raise ValueError("%s is not a JSON value" % name)


class Response:
    def __init__(self, status=200, body=b"", content_type="text/plain;charset=UTF-8", headers=None):
        self.status, self.body, self.content_type = status, body, content_type
        self.headers = headers or {}


def json_response(data, status=200, headers=None) -> Response:
    body = json.dumps(data, ensure_ascii=False).encode("utf-8")
    return Response(status, body, JSON_TYPE, headers)


def server_info(store, request):
    return json_response({"version": VERSION})


def read(store, request, type_name):
    rows, total = store.read(type_name, request.query)
    return json_response(rows, headers={"X-Total-Count": str(total)})


def read_one(store, request, trackor_id):
    fields = [f.strip() for v in request.query.get("fields", []) for f in v.split(",") if f.strip()]
    return json_response(store.read_one(int(trackor_id), fields))


def create(store, request, type_name):
    body = request.json()
    if not isinstance(body, dict):
        raise bad("The body must be a JSON object with 'fields' and 'parents'")
    fields, parents = body.get("fields") or {}, _parents(body)
    return json_response(store.create(type_name, fields, parents), status=201)


def _check_body(body):
    unknown = set(body) - {"fields", "parents"}
    if unknown:
        raise bad("Unknown properties in the body: %s (expected 'fields' and 'parents')"
                  % ", ".join(sorted(map(str, unknown))))


def _parents(body):
    _check_body(body)
    parents = body.get("parents") or []
    if not isinstance(parents, list):
        raise bad("'parents' must be a list of {\"trackor_type\", \"filter\"} objects")
    return parents


def update_one(store, request, trackor_id):
    fields = request.json()
    if not isinstance(fields, dict):
        raise bad("The body must be a JSON object of fields")
    return json_response(store.update_by_id(int(trackor_id), fields))


def update_where(store, request, type_name):
    body = request.json()
    if not isinstance(body, dict):
        raise bad("The body must be a JSON object with 'fields'")
    filters = _filters(request)
    return json_response(store.update_where(type_name, filters, body.get("fields") or {},
                                            _parents(body)))


def delete_where(store, request, type_name):
    store.delete_where(type_name, _filters(request))
    return Response(200)


def delete_one(store, request, trackor_id):
    store.delete_by_id(int(trackor_id))
    return Response(200)


def _filters(request):
    return [(name, value) for name, values in request.query.items() for value in values]


def upload(store, request, trackor_id, field_name):
    parts = multipart.parse(request.body, request.headers.get("Content-Type"))
    if "file" not in parts:
        raise bad("The multipart body needs a part named 'file'")
    part_name, data = parts["file"]
    file_name = request.first("file_name") or part_name or "file"
    blob_id = store.upload(int(trackor_id), field_name, file_name, data)
    return json_response(blob_id)


def download(store, request, trackor_id, field_name):
    return file_response(*store.download(int(trackor_id), field_name))


def download_blob(store, request, blob_id):
    return file_response(*store.blob(int(blob_id)))


def file_response(file_name, data) -> Response:
    content_type = mimetypes.guess_type(file_name)[0] or "application/octet-stream"
    disposition = "attachment; filename*=UTF-8''" + quote(file_name, safe="")
    return Response(200, data, content_type, {"Content-Disposition": disposition})


# (method, pattern, kind, handler, public)
ROUTES = [
    ("GET", r"/api/v3/server_info", "info", server_info, True),
    ("GET", r"/api/(?:v3/)?authorize", "info", metadata.authorize, False),
    ("GET", r"/api/v3/schema/trackor_types", "schema", metadata.schema_trackor_types, False),
    ("GET", r"/api/v3/schema/fields", "schema", metadata.schema_fields, False),
    ("GET", r"/api/v3/trackor_types", "schema", metadata.trackor_types, False),
    ("GET", r"/api/v3/trackor_types/([^/]+)", "schema", metadata.trackor_type, False),
    ("GET", r"/api/v3/trackor_types/([^/]+)/parents", "schema", metadata.parents, False),
    ("GET", r"/api/v3/trackor_types/([^/]+)/children", "schema", metadata.children, False),
    ("GET", r"/api/v3/params/system/([^/]+)", "schema", metadata.system_param, False),
    ("GET", r"/api/v3/trackor_types/([^/]+)/trackors", "read", read, False),
    ("POST", r"/api/v3/trackor_types/([^/]+)/trackors", "create", create, False),
    ("PUT", r"/api/v3/trackor_types/([^/]+)/trackors", "update", update_where, False),
    ("DELETE", r"/api/v3/trackor_types/([^/]+)/trackors", "delete", delete_where, False),
    ("GET", r"/api/v3/trackors/(\d+)", "read", read_one, False),
    ("PUT", r"/api/v3/trackors/(\d+)", "update", update_one, False),
    ("DELETE", r"/api/v3/trackors/(\d+)", "delete", delete_one, False),
    ("POST", r"/api/v3/trackor/(\d+)/file/([^/]+)", "upload", upload, False),
    ("GET", r"/api/v3/trackor/(\d+)/file/([^/]+)", "download", download, False),
    ("GET", r"/api/v3/files/(\d+)", "download", download_blob, False),
]
_COMPILED = [(m, re.compile(p + r"/?$"), k, h, pub) for m, p, k, h, pub in ROUTES]


def route(method: str, path: str):
    """(kind, handler, path args, public) for a request; 404 / 405 when there is no such route."""
    allowed = False
    for route_method, pattern, kind, handler, public in _COMPILED:
        match = pattern.match(path)
        if match:
            allowed = True
            if route_method == method:
                return kind, handler, [unquote(g) for g in match.groups()], public
    if allowed:
        raise SandboxError(405, "Method %s not allowed on %s" % (method, path))
    raise not_found("No such API endpoint: %s" % path)
