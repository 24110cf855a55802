"""IntegrationWrapper.py --check: a read-only preflight against one installation (SPEC §10).

One line per check, in the order an administrator fixes them:

    ✓ what                 passed
    ! what — what to do    a warning: worth a look, but the hub works (the exit code stays 0)
    ✗ what — what to do    a problem to fix
    · what                 not checked, because an earlier check failed

    connection   Passwords.json private; OneVizion reachable (TLS); the server version; the
                 credentials (GET /api/authorize, with the server's reason when refused)
    schema       each mapped trackor type, by name; Run a child of Integration, Log a child of Run;
                 key generation of Run and Log (a warning); each mapped field with its type;
                 mandatory fields the hub does not fill; the mapping's drop-down values
    time zone    Passwords.json's Timezone against the installation's PrimaryTimezone
    entries      with -i, each Integration.json entry: its Integration (found by exact name, only
                 one), Enabled, Read From STDOUT, the program, the working directory, the
                 ${VAR}s, UploadDirs

Exit 0 when no line is ✗ (warnings allowed); 3 when OneVizion cannot be reached, does not answer
like OneVizion or refuses the credentials (then nothing after that is checked; a later request with
no answer, a 5xx, a redirect or a page also makes it 3); else 2. Every request is
a GET through hub.api (ctx.api), every failed one described from its hub.answers classification;
the journal is neither adopted nor delivered.
"""

from __future__ import annotations

import datetime
import difflib
import os
import re
import shutil
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from hub import child as childmod
from hub import config
from hub import vocabulary as V
from hub.answers import REDIRECTED, Kind
from hub.api import CallFailed, exact
from hub.errors import UsageError
from hub.run import checkbox
from hub.schema import field_value

OK, WARN, FAIL, SKIP = "\u2713", "!", "\u2717", "\u00b7"
DASH = "\u2014"
ASCII = {OK: "ok", WARN: "!", FAIL: "X", SKIP: "-", DASH: "--"}   # a stream that cannot show the marks
COLOURS = {OK: "\033[32m", WARN: "\033[33m", FAIL: "\033[31m", SKIP: "\033[2m"}
SECTIONS = ("integration", "run", "log")
TEXT = ("Text", "Memo")
# What each mapped field must be (OneVizion's type labels, GET /api/v3/schema/fields "type").
EXPECTED = {
    "integration": (("name", TEXT), ("control_process", TEXT), ("enabled", ("Checkbox",)),
                    ("last_run", ("Date/Time",)), ("read_from_stdout", ("Checkbox",))),
    "run": (("status", ("Drop-Down",)), ("start", ("Date/Time",)), ("finish", ("Date/Time",)),
            ("file", ("Electronic File",))),
    "log": (("date_time", ("Date/Time",)), ("message_type", ("Drop-Down",)), ("message", TEXT),
            ("description", ("Memo", "Text")), ("file", ("Electronic File",))),
}
# The fields the hub fills when it creates a run or a record (hub.run, hub.delivery); others come later.
FILLED_AT_CREATE = {"run": ("status", "start"), "log": ("date_time", "message_type", "message", "description")}
LOOKUP_KEYS = ("name", "enabled", "read_from_stdout")   # what a lookup of an Integration reads
VALUES = {"run": ("status", ("running", "ok", "warnings")), "log": ("message_type", ("info", "warning", "error"))}
WHAT = {"run": "run", "log": "Log record"}
PORTAL = ("put the installation's own address in Passwords.json URL (https://host, no path): a portal, proxy "
          "or another server answers there")
_UNSET = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\} is not set")
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
_PLACEHOLDER = "\0unset\0"
_INTERPRETER = re.compile(r"^(python[0-9.]*|sh|bash|dash|zsh|ksh|perl|ruby|node|php)$")


class Report:
    """The lines of one --check, printed as they come; `code` is the exit code so far."""

    def __init__(self, stream=None, colour: Optional[bool] = None, log=None):
        self.stream = stream or sys.stdout
        self.colour = wants_colour(self.stream) if colour is None else colour
        self.plain = not _can_show(self.stream)
        self.log = log
        self.code = V.EXIT_OK
        self.failed = self.warned = 0

    def ok(self, text: str) -> None:
        self._line(OK, text)

    def warn(self, text: str, fix: str) -> None:
        self.warned += 1
        self._line(WARN, text, fix)

    def fail(self, text: str, fix: str, code: int = V.EXIT_USAGE) -> None:
        self.failed += 1
        self.code = max(self.code, code)
        self._line(FAIL, text, fix)

    def skip(self, text: str) -> None:
        self._line(SKIP, text)

    def summary(self) -> None:
        warned = f"{self.warned} warning{'s' if self.warned != 1 else ''}"
        if self.failed:
            text = f"{self.failed} to fix, {warned} (exit {self.code})"
        else:
            text = f"all checks passed{', ' + warned if self.warned else ''}"
        self._write(text)

    def _line(self, mark: str, text: str, fix: str = "") -> None:
        if self.log is not None:
            self.log.info("--check: %s %s%s", ASCII[mark], text, f" -- {fix}" if fix else "")
        dash = ASCII[DASH] if self.plain else DASH
        shown = ASCII[mark] if self.plain else mark
        if self.colour:
            shown = f"{COLOURS[mark]}{shown}\033[0m"
        self._write(f"{shown} {text}" + (f" {dash} {fix}" if fix else ""))

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):   # stdout closed: the exit code still tells
            pass


def wants_colour(stream) -> bool:
    """Colour on a terminal only, unless NO_COLOR is set or the terminal is dumb."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        return False
    return tty and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def _can_show(stream) -> bool:
    """Whether the stream's encoding has the marks (cron with PYTHONIOENCODING=ascii has not)."""
    encoding = getattr(stream, "encoding", None)
    if not encoding:   # a stream of text only (io.StringIO)
        return True
    try:
        (OK + WARN + FAIL + SKIP + DASH).encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


@dataclass
class Found:
    """What the schema checks learned, for the entry checks: the Integration type and the names of
    its fields as this installation spells them (None: the mapping is broken, no lookup can work)."""

    integration_type: Optional[str] = None
    integration_fields: Optional[Dict[str, str]] = None


# ---------------------------------------------------------------- the whole check

def run(ctx, args) -> int:
    """--check: every check in order, a summary line, the exit code."""
    report = Report(log=ctx.log)
    check_passwords_file(report, args.passwords)
    if check_connection(ctx, report) and check_credentials(ctx, report):
        found = check_schema(ctx, report)
        check_timezone(ctx, report)
        if args.integrations:
            check_entries(ctx, report, args.integrations, found)
    else:
        rest = "the trackor types, relations, key generation, fields, mandatory fields, drop-down values, the Timezone"
        report.skip(f"not checked: {rest}{' and the entries of ' + args.integrations if args.integrations else ''}"
                    f" (OneVizion must answer first)")
    report.summary()
    return report.code


def check_passwords_file(report: Report, path: str) -> None:
    _, warnings = config.load_passwords(path)   # already loaded once: it cannot fail now
    for warning in warnings:
        what, _, fix = warning.partition("; ")
        report.warn(what, fix)
    if not warnings:
        report.ok(f"{path} is readable only by its owner")


# ---------------------------------------------------------------- connection

def check_connection(ctx, report: Report) -> bool:
    """Reachable (with TLS) and the server version, both from the public server_info."""
    try:
        info = ctx.api.server_info(seconds=10.0)
    except CallFailed as failed:
        if failed.answer.status is None:
            report.fail(*describe_failure(ctx, failed, "server_info"))
            return False
        _reachable(ctx, report)   # something answered: the connection (and TLS) worked
        text, fix, _ = describe_failure(ctx, failed, "server_info")
        if 400 <= failed.answer.status < 500:   # the public server_info: no OneVizion refuses it
            text, fix = (f"{ctx.installation.url} does not answer like a OneVizion installation "
                         f"({failed.answer.describe()} to GET /api/v3/server_info)", PORTAL)
        report.fail(text, fix, V.EXIT_UNREACHABLE)
        return False
    _reachable(ctx, report)
    version = info.get("version")
    if isinstance(version, str) and version.strip():
        report.ok(f"OneVizion version {version.strip()}")
    else:
        report.warn("server_info answers without a version", "make sure URL is the installation's address")
    return True


def _reachable(ctx, report: Report) -> None:
    api, verify = ctx.api, ctx.installation.verify
    where = f"OneVizion at {api.host} answers"
    if api.scheme == "https" and verify is False:
        report.warn(f"{where} over TLS, but its certificate is not verified (VerifyTLS false)",
                    "give the installation's CA in Passwords.json CABundle instead")
    elif api.scheme == "https":
        report.ok(f"{where} over TLS, certificate verified" + (f" with CABundle {verify}" if isinstance(verify, str)
                                                               else ""))
    elif (api._hostname or "").lower() in ("localhost", "127.0.0.1", "::1"):
        report.ok(f"{where} (plain http, on this machine)")
    else:
        report.warn(f"{where} over plain http: the credentials travel unencrypted", "use https:// in URL")


def check_credentials(ctx, report: Report) -> bool:
    """GET /api/authorize; refused: the server's own reason (401 body)."""
    who = (f"UserName {ctx.installation.user_name}" if ctx.installation.user_name is not None
           else "the AccessKey/SecretKey token")
    try:
        ctx.api.authorize()
    except CallFailed as failed:
        answer = failed.answer
        if answer.kind is Kind.CREDENTIALS:
            report.fail(f"OneVizion refused the credentials ({who}): {answer.text}", credentials_fix(ctx),
                        V.EXIT_UNREACHABLE)
        elif answer.status == 403:
            report.fail(f"OneVizion refused {who} the API (403: {answer.text or 'forbidden'})",
                        "give the user's role access to the REST API", V.EXIT_UNREACHABLE)
        else:
            text, fix, _ = describe_failure(ctx, failed, "the credentials")
            report.fail(text, fix, V.EXIT_UNREACHABLE)
        return False
    report.ok(f"credentials accepted ({who})")
    return True


def credentials_fix(ctx) -> str:
    if ctx.installation.user_name is not None:
        return ("check UserName and Password in Passwords.json, and that the user is active, not locked, its "
                "password current")
    return "check AccessKey and SecretKey in Passwords.json, and that the token is active"


def describe_failure(ctx, failed: CallFailed, what: str) -> Tuple[str, str, int]:
    """(what went wrong, what to do, exit code) for a request without a good answer, from its
    hub.answers classification: 3 when OneVizion cannot be asked at all, 2 when it said no."""
    answer, where = failed.answer, "GET " + failed.where.split(" ", 1)[-1].split("?")[0]
    if answer.status is None:
        if "CABundle" in answer.text:   # hub.api's TLS sentence carries its own fix
            text, _, fix = answer.text.partition(": ")
            return text, fix, V.EXIT_UNREACHABLE
        return (answer.text, "check URL in Passwords.json, DNS, the firewall or proxy, and that OneVizion is up",
                V.EXIT_UNREACHABLE)
    if answer.kind is Kind.CREDENTIALS:
        return (f"OneVizion refused the credentials for {where} (401: {answer.text})", credentials_fix(ctx),
                V.EXIT_UNREACHABLE)
    if 300 <= answer.status < 400:
        location = answer.text[len(REDIRECTED):] if answer.text.startswith(REDIRECTED) else answer.text
        return f"{where} was redirected ({answer.status}) to {location}", PORTAL, V.EXIT_UNREACHABLE
    if 200 <= answer.status < 300:
        return f"{where} answered {answer.status} with {answer.text}", PORTAL, V.EXIT_UNREACHABLE
    if answer.status == 403:
        return (f"this user may not read {what} (403 to {where}: {answer.text or 'forbidden'})",
                f"give the user's role read access to {what}, or run --check as a user who may", V.EXIT_USAGE)
    if answer.kind in (Kind.TRANSIENT, Kind.SERVER_ERROR):
        return (f"OneVizion answered {answer.status} to {where}: {answer.text}",
                "try again later; if it lasts, tell the installation's administrators", V.EXIT_UNREACHABLE)
    return f"OneVizion answered {answer.status} to {where}: {answer.text}", f"check {what} in OneVizion", V.EXIT_USAGE


# ---------------------------------------------------------------- schema

def check_schema(ctx, report: Report) -> Found:
    """Types, relations, key generation, then fields, mandatory fields, drop-down values. Returns
    what the entry checks need to look Integrations up."""
    schema = ctx.schema
    as_given = Found(schema.integration.trackor_type,
                     {key: getattr(schema.integration, key) for key in LOOKUP_KEYS})
    try:
        types = [t for t in ctx.api.schema_types() if isinstance(t, dict)]
    except CallFailed as failed:
        report.fail(*describe_failure(ctx, failed, "the trackor types"))
        report.skip("not checked: trackor types, relations, key generation, fields, mandatory fields, drop-down "
                    "values (the schema could not be read)")
        return as_given   # the lookups may still work for a user who may read trackors, not the schema
    present = check_types(report, schema, types)
    if not present:
        return Found()
    try:
        specs = ctx.api.schema_fields([_name(t) for t in present.values()])
    except CallFailed as failed:
        report.fail(*describe_failure(ctx, failed, "the fields"))
        report.skip("not checked: fields, mandatory fields, drop-down values (the fields could not be read)")
        return as_given if "integration" in present else Found()
    mapped = check_all_fields(report, schema, present, fields_by_type(specs, list(present.values())))
    integration = mapped.get("integration", {})
    if "name" not in integration:
        return Found()
    return Found(_name(present["integration"]),
                 {key: _name(spec) for key, spec in integration.items() if key in LOOKUP_KEYS})


def check_types(report: Report, schema, types: List[dict]) -> Dict[str, dict]:
    """Each mapped type, the two relations, key generation; the types found, by section."""
    found = {section: check_type(report, schema, section, types) for section in SECTIONS}
    check_relation(report, found, "run", "integration")
    check_relation(report, found, "log", "run")
    for section in ("run", "log"):
        if found[section] is not None:
            check_key_generation(report, section, found[section])
    for section in SECTIONS:
        if found[section] is None:
            report.skip(f"not checked: the fields of {section}.trackor_type (no such type)")
    return {section: ttype for section, ttype in found.items() if ttype is not None}


def check_all_fields(report: Report, schema, present: Dict[str, dict],
                     by_type: Dict[str, List[dict]]) -> Dict[str, Dict[str, dict]]:
    """Fields of each type, then mandatory fields, then drop-down values; the mapped fields found."""
    of = {section: by_type.get(_name(ttype).lower(), []) for section, ttype in present.items()}
    mapped = {section: check_fields(report, schema, section, ttype, of[section]) for section, ttype in present.items()}
    for section in ("run", "log"):
        if section in present:
            check_mandatory(report, schema, section, present[section], of[section])
    for section in ("run", "log"):
        if section in present:
            check_values(report, schema, section, mapped[section])
    return mapped


def _name(spec: Optional[dict]) -> str:
    return str((spec or {}).get("name") or "")


def check_type(report: Report, schema, section: str, types: List[dict]) -> Optional[dict]:
    """The mapped trackor type, found by name (in any case); a label or a near miss is named."""
    wanted, ref = getattr(schema, section).trackor_type, f"{section}.trackor_type"
    for ttype in types:
        if _name(ttype).lower() == wanted.lower():
            spelled = "" if _name(ttype) == wanted else f"; Schema.json's {wanted!r} is spelled {_name(ttype)}"
            report.ok(f"trackor type {_name(ttype)} exists ({ref}{spelled})")
            return ttype
    for ttype in types:
        if str(ttype.get("label") or "").lower() == wanted.lower():
            report.fail(f"{wanted!r} is the label of {_name(ttype)}: use the name",
                        f'set {ref} to "{_name(ttype)}" in Schema.json')
            return None
    guess = near_miss(wanted, [_name(t) for t in types if _name(t)])
    report.fail(f"no trackor type {wanted!r} ({ref}) that this user can read"
                + (f"; did you mean {guess}?" if guess else ""),
                f"create it in OneVizion, give the user's role access to it, or set {ref} in Schema.json to the "
                f"type you use")
    return None


def _related(ttype: dict, side: str) -> List[str]:
    """The names in relations.children / relations.parents (plain names, or objects with a name)."""
    relations = ttype.get("relations") if isinstance(ttype.get("relations"), dict) else {}
    names = relations.get(side) if isinstance(relations.get(side), list) else []
    return [str(n.get("name") if isinstance(n, dict) else n) for n in names]


def check_relation(report: Report, found: Dict[str, Optional[dict]], child: str, parent: str) -> None:
    kid, elder = found[child], found[parent]
    if kid is None or elder is None:
        report.skip(f"not checked: whether {child}.trackor_type is a child of {parent}.trackor_type (a type is "
                    f"missing)")
        return
    parents = _related(kid, "parents")
    if _name(elder).lower() in (p.lower() for p in parents):
        report.ok(f"{_name(kid)} is a child of {_name(elder)}")
        return
    children = _related(elder, "children")
    report.fail(f"{_name(kid)} is not a child of {_name(elder)} (its parents: {', '.join(parents) or 'none'})",
                f"make {_name(kid)} a child of {_name(elder)} in OneVizion's trackor tree, or set {child}.trackor_type "
                f"in Schema.json to the child type you use"
                + (f" ({_name(elder)}'s children: {', '.join(children)})" if children else ""))


def check_key_generation(report: Report, section: str, ttype: dict) -> None:
    """The hub gives every run and record its own key; a type that generates keys may replace it."""
    formula = ttype.get("autogen_trackor_key")
    if formula:
        report.warn(f"{_name(ttype)} generates its own keys ({formula}): the hub's keys may be replaced, and a "
                    f"create retried after a lost answer can make a second {WHAT[section]}",
                    f"turn off Trackor Key Auto-Generation for {_name(ttype)} in OneVizion")
    else:
        report.ok(f"{_name(ttype)} takes the keys the hub gives (no key generation)")


def fields_by_type(specs: List[dict], types: List[dict]) -> Dict[str, List[dict]]:
    """The field specs grouped by the lower-case name of their trackor type."""
    result: Dict[str, List[dict]] = {}
    for spec in specs:
        if not isinstance(spec, dict):
            continue
        owner = spec.get("field_trackor_type")
        owner = _name(owner) if isinstance(owner, dict) else (_name(types[0]) if len(types) == 1 else "")
        result.setdefault(owner.lower(), []).append(spec)
    return result


def _kind(label) -> str:
    return re.sub(r"[^a-z]", "", str(label).lower())


def check_fields(report: Report, schema, section: str, ttype: dict, specs: List[dict]) -> Dict[str, dict]:
    """Each mapped field of one type: found by name (in any case), of the expected type. One ✓ line
    for those that are right, a ✗ line for each that is not. Returns the fields found, by mapping key."""
    part, tname = getattr(schema, section), _name(ttype)
    by_name = {_name(spec).lower(): spec for spec in specs}
    good, problems, found = [], [], {}
    for key, expected in EXPECTED[section]:
        wanted, ref = getattr(part, key), f"{section}.{key}"
        spec = by_name.get(wanted.lower())
        if spec is None:
            problems.append(_missing_field(tname, wanted, ref, expected, specs))
            continue
        found[key] = spec
        kind = str(spec.get("type") or "untyped")
        if _kind(kind) not in {_kind(e) for e in expected}:
            problems.append((f"{tname}.{_name(spec)} ({ref}) is a {kind} field; expected {' or '.join(expected)}",
                             f"set {ref} in Schema.json to a {' or '.join(expected)} field of {tname}, or change "
                             f"the field's type in OneVizion"))
            continue
        spelled = "" if _name(spec) == wanted else f", Schema.json's {wanted}"
        good.append(f"{_name(spec)} ({kind}{spelled})")
    if good:
        report.ok(f"{tname} fields: {', '.join(good)}")
    for text, fix in problems:
        report.fail(text, fix)
    return found


def _missing_field(tname: str, wanted: str, ref: str, expected: Sequence[str], specs: List[dict]) -> Tuple[str, str]:
    for spec in specs:
        if str(spec.get("label") or "").lower() == wanted.lower():
            return (f"{wanted!r} ({ref}) is the label of {tname}.{_name(spec)}: use the name",
                    f'set {ref} to "{_name(spec)}" in Schema.json')
    guess = near_miss(wanted, [_name(s) for s in specs if _name(s)])
    return (f"{tname} has no field {wanted} ({ref})" + (f"; did you mean {guess}?" if guess else ""),
            f"create it in OneVizion ({' or '.join(expected)}), or set {ref} in Schema.json to the field you use")


def near_miss(word: str, known: Sequence[str]) -> Optional[str]:
    """The known name that differs from `word` only in case, or only a little (a typo); None when
    nothing is that close (a loose guess between INT_NAME and INT_ENABLED would mislead)."""
    by_lower = {k.lower(): k for k in known}
    if word.lower() in by_lower:
        return by_lower[word.lower()]
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.8)
    return by_lower[close[0]] if close else None


def _truthy(value) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes")


def check_mandatory(report: Report, schema, section: str, ttype: dict, specs: List[dict]) -> None:
    """A mandatory field the hub leaves empty when it creates a run or a record: every create fails."""
    part, tname = getattr(schema, section), _name(ttype)
    filled = {getattr(part, key).lower() for key in FILLED_AT_CREATE[section]}
    mapped = {getattr(part, key).lower(): f"{section}.{key}" for key, _ in EXPECTED[section]}
    left = [spec for spec in specs if _truthy(spec.get("required")) and _name(spec).lower() not in filled]
    if not left:
        report.ok(f"{tname}: no mandatory field that the hub leaves empty")
        return
    named = ", ".join(f"{_name(spec)} ({_why_empty(spec, mapped)})" for spec in left)
    report.fail(f"{tname} has mandatory fields the hub does not fill when it creates a {WHAT[section]}: {named}",
                f"make them optional for {tname} in OneVizion: every create would be refused")


def _why_empty(spec: dict, mapped: Dict[str, str]) -> str:
    """'run.finish, set later' for a mapped field filled after the create; else the field's label."""
    ref = mapped.get(_name(spec).lower())
    return f"{ref}, set later" if ref else str(spec.get("label") or "not in the mapping")


def check_values(report: Report, schema, section: str, mapped: Dict[str, dict]) -> None:
    """The mapping's drop-down values exist exactly; a value that differs only a little is named."""
    field_key, keys = VALUES[section]
    spec = mapped.get(field_key)
    if spec is None or _kind(spec.get("type")) != "dropdown":
        return   # a missing or mistyped field has its own ✗ above
    part, fname = getattr(schema, section), _name(spec)
    items = [v for v in spec.get("dropdown_values") or [] if isinstance(v, dict)]
    values = [str(v.get("value")) for v in items if v.get("value") is not None]
    labels = {str(v.get("label")): str(v.get("value")) for v in items if v.get("label") is not None}
    taken = {getattr(part, key) for key in keys}
    problems = []
    for key in keys:
        wanted, ref = getattr(part, key), f"{section}.{key}"
        if wanted in values:
            continue
        near = near_miss(wanted, [v for v in values if v not in taken])
        if wanted in labels and labels[wanted] != wanted:
            problems.append((f"{wanted!r} ({ref}) is the label of the {fname} value {labels[wanted]!r}: use the value",
                             f'set {ref} to "{labels[wanted]}" in Schema.json'))
        elif near:
            problems.append((f"{wanted!r} ({ref}) is not a value of {fname}; did you mean {near!r}?",
                             f'set {ref} to "{near}" in Schema.json'))
        else:
            problems.append((f"{wanted!r} ({ref}) is not a value of {fname} (its values: "
                             f"{', '.join(values) or 'none'})",
                             f"add it to {fname} in OneVizion, or set {ref} in Schema.json to the value meant"))
    if not problems:
        report.ok(f"{fname} has the values {', '.join(getattr(part, key) for key in keys)}")
    for text, fix in problems:
        report.fail(text, fix)


# ---------------------------------------------------------------- time zone

def check_timezone(ctx, report: Report) -> None:
    """Passwords.json's Timezone against PrimaryTimezone (read fresh, not from the log folder's cache)."""
    from hub.zones import known
    given = ctx.installation.timezone_name
    machine = f"the machine's zone ({datetime.datetime.now().astimezone().tzname()})"
    try:
        zone = str(ctx.api.system_param("PrimaryTimezone", seconds=10.0).get("value") or "").strip()
    except CallFailed as failed:
        text, _, _ = describe_failure(ctx, failed, "PrimaryTimezone")
        report.warn(f"PrimaryTimezone could not be read ({text}): date-times will be written in "
                    + (f"{given} (Timezone of Passwords.json)" if given else machine),
                    "make sure Timezone in Passwords.json is the installation's zone" if given
                    else "set Timezone in Passwords.json to the installation's zone")
        return
    if not known(zone):
        report.warn(f"PrimaryTimezone {zone!r} is not a time zone this machine knows: date-times will be written in "
                    + (f"{given} (Timezone of Passwords.json)" if given else machine),
                    "set Timezone in Passwords.json to the installation's zone (an IANA name)")
    elif given is None:
        report.ok(f"date-times will be written in PrimaryTimezone {zone} (no Timezone in Passwords.json)")
    elif given.lower() == zone.lower():
        report.ok(f"Timezone {given} of Passwords.json is the installation's PrimaryTimezone")
    else:
        report.warn(f"date-times will be written in {given} (Timezone of Passwords.json) while the installation "
                    f"reads them in {zone} (PrimaryTimezone)",
                    f'remove Timezone from Passwords.json, or set it to "{zone}"')


# ---------------------------------------------------------------- Integration.json

def check_entries(ctx, report: Report, path: str, found: Found) -> None:
    try:
        entries = config.load_integrations(path)
    except UsageError as exc:
        report.fail(exc.message, "fix the named entry and key")
        return
    for entry in entries:
        check_integration(ctx, report, entry, found)
        cwd = os.path.abspath(entry.working_dir or os.getcwd())
        env = dict(os.environ)
        env.update(entry.environment)
        argv, unset, problem = build_argv(entry, cwd, env)
        check_program(report, entry, argv, cwd, env)
        check_working_dir(report, entry, cwd)
        check_variables(report, entry, env, unset, problem)
        check_upload_dirs(report, entry, cwd)


def check_integration(ctx, report: Report, entry, found: Found) -> None:
    """Its Integration, by exact name, only one; Enabled; Read From STDOUT (information)."""
    label, names = entry.name, found.integration_fields
    if names is None or not found.integration_type:
        report.skip(f"{label}: its Integration not looked up (the 'integration' mapping has a problem above)")
        return
    s = ctx.schema.integration
    try:
        rows = ctx.api.find(found.integration_type, {names["name"]: exact(entry.name)}, list(names.values()))
    except CallFailed as failed:
        report.fail(*describe_failure(ctx, failed, f"the {found.integration_type} trackors"))
        return
    rows = [row for row in rows if field_value(row, names["name"]) == entry.name]
    if not rows:
        report.fail(f"{label}: no Integration named {entry.name!r} in OneVizion "
                    f"({found.integration_type}.{names['name']}){_similar(ctx, found, entry.name)}",
                    "create it, or make IntegrationName in Integration.json match its name exactly")
        return
    keys = [str(row.get("TRACKOR_KEY")) for row in rows]
    if len(rows) > 1:
        report.fail(f"{label}: {len(rows)} Integrations are named {entry.name!r} ({', '.join(keys)}); the wrapper "
                    f"would use {keys[0]}", "give each Integration its own name")
    else:
        report.ok(f"{label}: Integration {keys[0]} found by its name")
    row = rows[0]
    if "enabled" in names:
        if checkbox(field_value(row, names["enabled"])):
            report.ok(f"{label}: Enabled")
        else:
            report.warn(f"{label}: Enabled is unchecked on {keys[0]}: the wrapper skips it",
                        f"check Enabled ({s.enabled}) on {keys[0]} in OneVizion when it should run")
    if "read_from_stdout" in names:
        if checkbox(field_value(row, names["read_from_stdout"])):
            report.ok(f"{label}: Read From STDOUT is checked: its stdout lines become Log records")
        else:
            report.ok(f"{label}: Read From STDOUT is unchecked: only its stderr lines become Log records "
                      f"(stdout is read for the files it names)")


def _similar(ctx, found: Found, name: str) -> str:
    """'; did you mean …?' from an unquoted ("contains") read of the name, when one is close."""
    try:
        rows = ctx.api.find(found.integration_type, {found.integration_fields["name"]: name},
                            [found.integration_fields["name"]], per_page=50)
    except CallFailed:
        return ""
    guess = near_miss(name, [str(field_value(r, found.integration_fields["name"])) for r in rows])
    return f"; did you mean {guess!r}?" if guess else ""


def build_argv(entry, cwd: str, env: Dict[str, str]) -> Tuple[Optional[List[str]], List[str], str]:
    """(argv, unset, problem): the argv the wrapper would build (hub.child.build_argv), the ${VAR}s
    that are not set (each is given a placeholder and the command line built again, so that every
    one is named), and why the command line cannot be split at all (then argv is None)."""
    unset: List[str] = []
    trial = dict(env)
    while True:
        try:
            return childmod.build_argv(entry.executable_path, entry.shell, cwd, trial), unset, ""
        except UsageError as exc:
            missing = _UNSET.search(exc.message)
            if missing is None or missing.group(1) in trial:
                return None, unset, exc.message
            unset.append(missing.group(1))
            trial[missing.group(1)] = _PLACEHOLDER


def check_program(report: Report, entry, argv: Optional[List[str]], cwd: str, env: Dict[str, str]) -> None:
    """The program found (a bare name on the child's PATH) and executable, its #! interpreter, and
    the script an interpreter is given (python3 job.py: job.py in the working directory)."""
    label = entry.name
    if argv is None:
        return   # check_variables says why the command line cannot be split
    program = argv[0]
    if _PLACEHOLDER in program:
        report.skip(f"{label}: the program not checked (its name uses a variable that is not set)")
        return
    path = program
    if "/" not in program:
        search = env.get("PATH", os.defpath)
        path = shutil.which(program, path=search) or shutil.which(program, mode=os.F_OK, path=search)
        if path is None:
            report.fail(f"{label}: no program {program!r} on PATH ({search})",
                        "give its full path in ExecutablePath, or set PATH in the environment cron gives the wrapper")
            return
    problem = _not_runnable(path, env)
    script = _script(entry, argv, cwd)
    if problem:
        report.fail(f"{label}: {problem[0]}", problem[1])
    elif script and not os.path.isfile(script):
        report.fail(f"{label}: {os.path.basename(path)} is given the script {argv[1]}, and there is no file {script}",
                    "fix the script's path in ExecutablePath (a relative one is taken from the working directory)")
    else:
        report.ok(f"{label}: program {path} found and executable"
                  + (" (Shell: true; the command itself is /bin/sh's to run)" if entry.shell else ""))


def _script(entry, argv: List[str], cwd: str) -> Optional[str]:
    """The file an interpreter is started with (python3 job.py), against the working directory."""
    if entry.shell or len(argv) < 2 or not _INTERPRETER.match(os.path.basename(argv[0])) \
            or argv[1].startswith("-") or _PLACEHOLDER in argv[1]:
        return None
    return os.path.join(cwd, argv[1])


def _not_runnable(path: str, env: Dict[str, str]) -> Optional[Tuple[str, str]]:
    if not os.path.exists(path):
        return (f"program {path} does not exist",
                "fix ExecutablePath (a relative path is taken from the working directory)")
    if os.path.isdir(path):
        return f"program {path} is a directory", "name the program in it in ExecutablePath"
    if not os.access(path, os.X_OK):
        return f"program {path} is not executable", f"chmod +x {path}, or start it through its interpreter"
    try:
        with open(path, "rb") as handle:
            head = handle.read(256)
    except OSError:
        return None   # executable but unreadable: the kernel may still run it
    if head.startswith(b"#!"):
        words = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").split()
        if not words or not os.access(words[0], os.X_OK):
            return (f"the #! interpreter {words[0] if words else '(none)'} of {path} was not found",
                    "fix its #! line, or name the interpreter in ExecutablePath")
        if os.path.basename(words[0]) == "env" and len(words) > 1 and not words[1].startswith("-") \
                and shutil.which(words[1], path=env.get("PATH", os.defpath)) is None:
            return (f"the #! line of {path} asks env for {words[1]}, which is not on PATH",
                    "fix its #! line, or set PATH in the environment cron gives the wrapper")
    elif not head.startswith(b"\x7fELF"):
        return (f"{path} is not a program (no #! line, not a binary)",
                "add a #! line, or name its interpreter in ExecutablePath")
    return None


def check_working_dir(report: Report, entry, cwd: str) -> None:
    label = entry.name
    if not os.path.exists(cwd):
        report.fail(f"{label}: working directory {cwd} does not exist", "create it, or fix ExecutableWorkingDir")
    elif not os.path.isdir(cwd):
        report.fail(f"{label}: working directory {cwd} is not a directory", "fix ExecutableWorkingDir")
    elif not os.access(cwd, os.X_OK):
        report.fail(f"{label}: working directory {cwd} cannot be entered (permission denied)",
                    "give the wrapper's user access to it")
    elif entry.working_dir:
        report.ok(f"{label}: working directory {cwd}")
    else:
        report.ok(f"{label}: working directory {cwd} (no ExecutableWorkingDir: the wrapper's own; cron starts it "
                  f"in the user's home)")


def check_variables(report: Report, entry, env: Dict[str, str], unset: List[str], problem: str) -> None:
    """Every ${VAR} of ExecutablePath set (as the wrapper expands them); with Shell, what sh would
    leave empty; Environment values that look like ${VAR} (they are passed as written)."""
    label = entry.name
    if problem:
        report.fail(f"{label}: {problem}", "fix ExecutablePath in Integration.json")
        return
    used = sorted({a or b for a, b in _REFERENCE.findall(entry.executable_path)})
    if entry.shell:
        empty = [name for name in used if name not in env]
        if empty:
            them = "it" if len(empty) == 1 else "them"
            report.warn(f"{label}: {', '.join('${%s}' % name for name in empty)} not set: /bin/sh will expand "
                        f"{them} to nothing",
                        f"set {them} in the environment cron gives the wrapper, or in the entry's Environment")
    elif unset:
        names, them = ", ".join("${%s}" % name for name in unset), "it" if len(unset) == 1 else "them"
        report.fail(f"{label}: ExecutablePath uses {names}, not set in the environment",
                    f"set {them} in the environment cron gives the wrapper (cron's is minimal), or in the entry's "
                    f"Environment")
    elif used:
        report.ok(f"{label}: variables set: {', '.join(used)}")
    literal = sorted(name for name, value in entry.environment.items() if "${" in value)
    if literal:
        report.warn(f"{label}: Environment {', '.join(literal)} {'holds' if len(literal) == 1 else 'hold'} ${{…}} as "
                    f"text: Environment values are passed as written, not expanded",
                    "give the value itself, or export it in cron's environment")


def check_upload_dirs(report: Report, entry, cwd: str) -> None:
    label, folders = entry.name, entry.upload_dirs
    if folders is None:
        return   # the default (the working directory and the temp folder): nothing to check
    if not folders:
        report.ok(f"{label}: UploadDirs is empty: no printed file is uploaded")
        return
    missing = [os.path.join(cwd, f) for f in folders if not os.path.isdir(os.path.join(cwd, f))]
    if missing:
        one = len(missing) == 1
        report.fail(f"{label}: UploadDirs {', '.join(missing)} {'is not a folder' if one else 'are not folders'}",
                    f"create {'it' if one else 'them'}, or fix UploadDirs")
    elif any(os.path.realpath(os.path.join(cwd, f)) == "/" for f in folders):
        report.warn(f"{label}: UploadDirs includes /: any file the wrapper can read may be uploaded",
                    "name the folders the script writes its files to")
    else:
        report.ok(f"{label}: UploadDirs exist: {', '.join(folders)}")
