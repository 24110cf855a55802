"""The mapping from the hub's notions to one OneVizion installation's trackor types,
field names and drop-down values (SPEC section 4).

Installations name things differently, so nothing outside this module spells
"IR_STATUS" or "Executed with Warnings": code asks a `Schema`. The defaults are the
dataclass defaults; a Schema.json overrides any subset of sections and keys.

`load_schema` reads Schema.json. This module also holds what all three configuration
files share: `read_json` (every file problem becomes a UsageError starting with the
path) and the did-you-mean and type-name helpers for messages. hub.config
re-exports the public names, so callers import from there.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from dataclasses import dataclass
from typing import Any, Iterable, Optional

from hub import vocabulary
from hub.errors import UsageError


@dataclass(frozen=True)
class IntegrationSchema:
    """The Integration trackor type and the fields the hub reads or writes on it."""

    trackor_type: str = "Integration"
    name: str = "INT_NAME"
    control_process: str = "INT_CONTROL_PROCESS"
    enabled: str = "INT_ENABLED"
    last_run: str = "INT_LAST_RUN"
    read_from_stdout: str = "INT_READ_FROM_STDOUT"


@dataclass(frozen=True)
class RunSchema:
    """The Integration Run trackor type, its fields and its Status drop-down values."""

    trackor_type: str = "IntegrationRun"
    status: str = "IR_STATUS"
    start: str = "IR_START"
    finish: str = "IR_FINISH"
    file: str = "IR_FILE"
    running: str = vocabulary.RUNNING
    ok: str = vocabulary.EXECUTED_OK
    warnings: str = vocabulary.EXECUTED_WITH_WARNINGS


@dataclass(frozen=True)
class LogSchema:
    """The Log trackor type, its fields and its Message Type drop-down values."""

    trackor_type: str = "IntegrationLog"
    date_time: str = "IL_DATE_TIME"
    message_type: str = "IL_MESSAGE_TYPE"
    message: str = "IL_MESSAGE"
    description: str = "IL_DESCRIPTION"
    file: str = "IL_FILE"
    info: str = vocabulary.INFO
    warning: str = vocabulary.WARNING
    error: str = vocabulary.ERROR
    # Field lengths are set per field on each installation and the API does not report them.
    message_limit: int = vocabulary.MESSAGE_LIMIT
    description_limit: int = vocabulary.DESCRIPTION_LIMIT

    def type_value(self, message_type: str) -> str:
        """This installation's drop-down value for hub.vocabulary.INFO/WARNING/ERROR.

        Raises ValueError for anything else: that is a bug in the caller, not bad input.
        """
        values = {vocabulary.INFO: self.info, vocabulary.WARNING: self.warning,
                  vocabulary.ERROR: self.error}
        try:
            return values[message_type]
        except KeyError:
            raise ValueError("unknown message type %r" % (message_type,)) from None


# Keys that name drop-down values rather than trackor types or fields; they may not
# repeat within a section (two statuses with one value could not be told apart).
_VALUE_KEYS = {"run": ("running", "ok", "warnings"), "log": ("info", "warning", "error")}
# Keys that are numbers (characters), not names.
_LIMIT_KEYS = ("message_limit", "description_limit")


@dataclass(frozen=True)
class Schema:
    """The whole mapping: one part per trackor type."""

    integration: IntegrationSchema = IntegrationSchema()
    run: RunSchema = RunSchema()
    log: LogSchema = LogSchema()

    def describe(self, field: str, section: Optional[str] = None) -> str:
        """Name the Schema.json entry that holds `field`, for error messages.

        `describe("IR_STATUS")` → "run.status (IR_STATUS)". Field names are searched
        before trackor types and drop-down values; several matches are joined with
        "or"; `section` ("integration", "run", "log") narrows the search. A name no
        entry holds (e.g. TRACKOR_KEY) comes back unchanged.
        """
        first, later = [], []
        for part in _SECTIONS:
            if section is not None and part != section:
                continue
            values = _VALUE_KEYS.get(part, ())
            for key, value in _items(getattr(self, part)):
                if key in _LIMIT_KEYS:
                    continue
                if value == field:
                    is_field = key != "trackor_type" and key not in values
                    (first if is_field else later).append("%s.%s" % (part, key))
        matches = first or later
        if not matches:
            return field
        return "%s (%s)" % (" or ".join(matches), field)


_SECTIONS = {"integration": IntegrationSchema, "run": RunSchema, "log": LogSchema}

DEFAULT_SCHEMA = Schema(IntegrationSchema(), RunSchema(), LogSchema())


def _items(part: Any) -> list:
    return [(f.name, getattr(part, f.name)) for f in dataclasses.fields(part)]


def schema_as_dict(schema: Schema = DEFAULT_SCHEMA) -> dict:
    """The mapping as plain JSON-ready dicts, sections and keys in documentation order."""
    return {name: dict(_items(getattr(schema, name))) for name in _SECTIONS}


def default_schema_json() -> str:
    """The default mapping as pretty JSON: the README's example and a starting Schema.json."""
    return json.dumps(schema_as_dict(DEFAULT_SCHEMA), indent=2) + "\n"


def field_value(row: dict, name: str) -> Any:
    """A field of an answer, its name matched without regard to case: OneVizion takes names in
    any case and answers with its own spelling (upper case), so `int_enabled` in Schema.json
    must still find INT_ENABLED."""
    if name in row:
        return row[name]
    lowered = name.lower()
    for key, value in row.items():
        if key.lower() == lowered:
            return value
    return None


def did_you_mean(word: str, known: Iterable[str]) -> Optional[str]:
    """The known word closest to `word`, or None. Case is ignored, because the
    commonest slip in hand-written JSON is "Username" for "UserName" or "url" for "URL"."""
    by_lower = {k.lower(): k for k in known}
    if word.lower() in by_lower:
        return by_lower[word.lower()]
    import difflib   # only for a message: a helper script starts without it
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[close[0]] if close else None


def unknown_key_message(where: str, key: str, known: Iterable[str], what: str = "key") -> str:
    """'<where>: unknown key "Username" (did you mean "UserName"?); known keys: ...'."""
    known = list(known)
    guess = did_you_mean(key, known)
    hint = ' (did you mean "%s"?)' % guess if guess else ""
    return '%s: unknown %s "%s"%s; known %ss: %s' % (where, what, key, hint, what, ", ".join(known))


def type_name(value: Any) -> str:
    """The JSON name of a parsed value's type, for "expected X, got Y" messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def schema_from_json(data: Any, source: str) -> Schema:
    """Check a parsed Schema.json and merge it over the defaults.

    `source` (the file path) starts every error message. Any subset of sections and
    keys may be given; unknown ones are errors with a did-you-mean; values must be
    non-empty strings; within a section, field names and drop-down values must not
    repeat (two fields on one column would silently overwrite each other).
    """
    if not isinstance(data, dict):
        raise UsageError("%s: expected a JSON object with sections %s, got %s"
                         % (source, ", ".join(_SECTIONS), type_name(data)))
    parts = {}
    for name, data_part in data.items():
        if name not in _SECTIONS:
            raise UsageError(unknown_key_message(source, name, _SECTIONS, what="section"))
        parts[name] = _section(data_part, _SECTIONS[name], "%s: %s" % (source, name))
    return Schema(**{name: parts.get(name, cls()) for name, cls in _SECTIONS.items()})


def _section(data: Any, cls: type, where: str) -> Any:
    if not isinstance(data, dict):
        raise UsageError("%s: expected an object, got %s" % (where, type_name(data)))
    known = [f.name for f in dataclasses.fields(cls)]
    for key, value in data.items():
        if key not in known:
            raise UsageError(unknown_key_message(where, key, known))
        if key in _LIMIT_KEYS:
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise UsageError("%s.%s: expected a whole number of characters (2 or more), got %s"
                                 % (where, key, json.dumps(value)))
            continue
        if not isinstance(value, str):
            raise UsageError("%s.%s: expected a string, got %s" % (where, key, type_name(value)))
        if not value.strip():
            raise UsageError("%s.%s: must not be empty" % (where, key))
    part = cls(**data)
    _check_distinct(part, where)
    return part


def _check_distinct(part: Any, where: str) -> None:
    section = where.rsplit(": ", 1)[-1]
    values = _VALUE_KEYS.get(section, ())
    groups = {"field": [(k, v) for k, v in _items(part)
                        if k != "trackor_type" and k not in values and k not in _LIMIT_KEYS],
              "drop-down value": [(k, getattr(part, k)) for k in values]}
    for kind, pairs in groups.items():
        seen = {}
        for key, value in pairs:
            if value in seen:
                raise UsageError('%s: %s and %s both give the %s "%s"; each needs its own'
                                 % (where, seen[value], key, kind, value))
            seen[value] = key


def load_schema(path: Optional[str]) -> Schema:
    """Read Schema.json and merge it over the defaults; None gives DEFAULT_SCHEMA."""
    if path is None:
        return DEFAULT_SCHEMA
    return schema_from_json(read_json(path), path)


# Configuration files are a few kilobytes; anything this big is the wrong file
# (a log, a dump) and reading it whole would only waste memory.
MAX_FILE_BYTES = 10 * 1024 * 1024


class _DuplicateKey(Exception):
    pass


def _no_duplicates(pairs: list) -> dict:
    # json.loads silently keeps the last of two equal keys; in a hand-edited file
    # that hides a mistake (which "Password" is used?), so it is an error here.
    result = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def read_json(path: str, secret: bool = False) -> Any:
    """Read and parse one JSON file; every failure is a UsageError starting with `path`.

    `secret=True` (Passwords.json) keeps even the parser's view of the text out of
    messages: they give line and column only.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise UsageError("%s: no such file" % path) from None
    except OSError as exc:
        raise UsageError("%s: cannot read it (%s)" % (path, exc.strerror)) from None
    if stat.S_ISDIR(info.st_mode):
        raise UsageError("%s: is a directory, expected a JSON file" % path)
    if not stat.S_ISREG(info.st_mode):
        # A FIFO or a device could block or never end.
        raise UsageError("%s: is not a regular file" % path)
    if info.st_size > MAX_FILE_BYTES:
        raise UsageError("%s: is %d bytes, more than the %d a configuration file may have"
                         % (path, info.st_size, MAX_FILE_BYTES))
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except PermissionError:
        raise UsageError("%s: cannot read it (permission denied)" % path) from None
    except OSError as exc:
        raise UsageError("%s: cannot read it (%s)" % (path, exc.strerror)) from None
    try:
        text = raw.decode("utf-8-sig")  # -sig: tolerate the BOM some editors write
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise UsageError("%s: is not UTF-8 text (bad byte at line %d)" % (path, line)) from None
    if not text.strip():
        raise UsageError("%s: is empty, expected JSON" % path)
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        detail = "" if secret else ": %s" % exc.msg
        raise UsageError("%s: not valid JSON at line %d, column %d%s"
                         % (path, exc.lineno, exc.colno, detail)) from None
    except _DuplicateKey as exc:
        raise UsageError('%s: key "%s" appears twice in one object' % (path, exc.args[0])) from None
    except RecursionError:
        raise UsageError("%s: JSON nested too deeply" % path) from None
