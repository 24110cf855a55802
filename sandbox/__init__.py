"""The OneVizion sandbox: a local stand-in for the part of the OneVizion REST API v3 the hub uses.

Run it with ``python -m sandbox`` (see ``sandbox.__main__``) or, in tests, with
``sandbox.server.start_in_thread(...)``. Production code never imports this package.

Layout:
    schema.py     trackor types, fields, value checks (what a value may be, how it reads back)
    query.py      field references, filters and sort turned into SQL
    store.py      the SQLite store: schema, seed, reads, files, control dumps, page data
    writes.py     the store's create / update / delete (a mixin of store.Store)
    variants.py   a schema wrong in chosen ways (dropped fields, other types, mandatory fields,
                  generated keys, ...) and the time zone, served over the configured schema
    faults.py     injected faults (latency, errors, drops, downtime) and request counters
    rules.py      answers on demand: rules that replace the answer to matching requests
    multipart.py  multipart/form-data parsing for file uploads
    api.py        the /api/... routes; metadata.py the schema and system endpoints;
                  control.py the /_sandbox/... routes
    server.py     HTTP plumbing, auth, rules and faults applied, start_in_thread
    page.py       the web page (GET / and /ui/...)

Credentials: the user name and password come from the repository's Passwords.example.json, so the
example file and the sandbox never disagree; a fixed token pair is accepted too.
"""

from __future__ import annotations

import json
import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _example(name: str) -> str:
    """The repository's example file in a checkout; in an installed copy (pip install .), the
    copy packaged in sandbox/examples/ (links to the repository's files, resolved at build)."""
    in_checkout = os.path.join(REPO_ROOT, name)
    if os.path.exists(in_checkout):
        return in_checkout
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "examples", name)


PASSWORDS_EXAMPLE = _example("Passwords.example.json")
INTEGRATIONS_EXAMPLE = _example("Integration.example.json")

VERSION = "24.1.0-sandbox"

# Token pair: access key 20 characters, secret 70, like real OneVizion tokens.
ACCESS_KEY = "SANDBOXACCESSKEY0001"
SECRET_KEY = "sandbox-secret-" + "0123456789abcdefghijklmnopqrstuvwxyz" + "ABCDEFGHIJKLMNOPQRS"


def load_credentials(path: str = PASSWORDS_EXAMPLE) -> tuple:
    """(user name, password) from a Passwords.json-shaped file's "installation" section.

    Falls back to the documented example values when the file is absent, so an installed copy
    of the package still starts; a present but broken file is an error worth seeing.
    """
    if not os.path.exists(path):
        return ("hub.admin", "sandbox-password")
    with open(path, encoding="utf-8") as handle:
        section = json.load(handle)["installation"]
    return (section["UserName"], section["Password"])


USER_NAME, PASSWORD = load_credentials()

assert len(ACCESS_KEY) == 20 and len(SECRET_KEY) == 70
