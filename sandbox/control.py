"""The /_sandbox/... control API: faults, counters, raw data, schema, reset. No auth, never faulted.

    GET|POST|DELETE /_sandbox/faults        current settings | change some | clear all
    GET|DELETE      /_sandbox/stats         API request counts by kind | reset them
    GET|POST|DELETE /_sandbox/rules         answer rules (sandbox.rules) with their remaining times |
                                            add one (an object) or several (a list), 201 | clear all
    DELETE          /_sandbox/rules/N       remove rule N (404 when there is none)
    GET             /_sandbox/trackors/T    every trackor of type T, all fields, parent, _created_at
                                            (?parent_id=N narrows to one parent's children)
    GET|POST        /_sandbox/trackor_types the schema | add a type (or fields to one):
                    {"name": "MyRun", "parent": "MyIntegration", "label": "My Run",
                     "fields": {"MR_STATE": {"type": "Drop-Down", "values": ["A", "B"],
                                             "label": "State", "required": true}, ...}}
    GET|POST|DELETE /_sandbox/schema        schema settings (sandbox.variants) | change the keys given
                                            (the others stay) | clear them all
    POST            /_sandbox/reset         wipe the data and seed again (schema settings stay)
    GET             /_sandbox/health        {"ok": true}
"""

from __future__ import annotations

import json
from urllib.parse import unquote

from sandbox import schema
from sandbox.api import Response, json_response
from sandbox.schema import SandboxError, bad, not_found


def handle(server, method: str, path: str, query: dict, body: bytes) -> Response:
    """Answer one control request; ``server`` carries .store, .faults, .stats."""
    parts = [unquote(p) for p in path.strip("/").split("/")[1:]]
    name = parts[0] if parts else ""
    if name == "faults" and len(parts) == 1:
        return _faults(server.faults, method, body)
    if name == "stats" and len(parts) == 1:
        if method == "DELETE":
            server.stats.reset()
        elif method != "GET":
            raise SandboxError(405, "GET or DELETE")
        return json_response(server.stats.snapshot())
    if name == "rules":
        return _rules(server.rules, method, parts[1:], body)
    if name == "trackors" and len(parts) == 2 and method == "GET":
        parent = query.get("parent_id", [None])[-1]
        return json_response(server.store.dump(parts[1], int(parent) if parent else None))
    if name == "trackor_types" and len(parts) == 1:
        if method == "POST":
            return json_response(_add_type(server.store, _json(body)).describe(), status=201)
        return json_response(server.store.describe())
    if name == "schema" and len(parts) == 1:
        if method == "POST":
            return json_response(server.store.set_variant(_json(body)))
        if method == "DELETE":
            return json_response(server.store.clear_variant())
        if method != "GET":
            raise SandboxError(405, "GET, POST or DELETE")
        return json_response(server.store.variant.settings())
    if name == "reset" and method == "POST":
        server.store.reset()
        return json_response({"reset": True})
    if name == "health":
        return json_response({"ok": True})
    raise not_found("No such control endpoint: %s %s" % (method, path))


def _faults(faults, method, body):
    if method == "POST":
        faults.update(_json(body))
    elif method == "DELETE":
        faults.clear()
    elif method != "GET":
        raise SandboxError(405, "GET, POST or DELETE")
    return json_response(faults.settings())


def _rules(rules, method, rest, body):
    if rest:
        if method != "DELETE" or len(rest) != 1 or not rest[0].isdigit():
            raise SandboxError(405, "DELETE /_sandbox/rules/N removes rule N")
        if not rules.remove(int(rest[0])):
            raise not_found("No rule %s" % rest[0])
        return json_response(rules.describe())
    if method == "POST":
        return json_response(rules.add(_json(body)), status=201)
    if method == "DELETE":
        rules.clear()
    elif method != "GET":
        raise SandboxError(405, "GET, POST or DELETE")
    return json_response(rules.describe())


def _add_type(store, spec):
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise bad("Expected {\"name\": ..., \"parent\": ..., \"fields\": {...}}")
    unknown = set(spec) - {"name", "parent", "fields", "label", "prefix"}
    if unknown:
        raise bad("Unknown key(s) in a trackor type: %s" % ", ".join(sorted(map(str, unknown))))
    fields = schema.parse_fields_spec(spec.get("fields") or {})
    return store.add_type(spec["name"], spec.get("parent"), fields, spec.get("label"), spec.get("prefix"))


def _json(body: bytes):
    try:
        return json.loads(body.decode("utf-8") or "{}")
    except (UnicodeDecodeError, ValueError) as error:
        raise bad("Malformed JSON: %s" % error) from None
