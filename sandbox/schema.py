"""Trackor types, their fields, and the value rules of each field type.

A value goes in through ``to_stored`` (checked, 400 naming the field when wrong) and comes back out
through ``to_output``. Types and fields carry what the schema endpoints show (sandbox.metadata): ids,
labels, prefixes, key generation, ``required``; OneVizion's own type labels ("Text", "Date/Time",
"Drop-Down", ...) are accepted wherever a field type is given. Everything is kept as TEXT in SQLite, except electronic files, whose column
holds the id of a row in the ``blobs`` table.

Choices where onevizion-api.md says "unknown":
- checkboxes read back as the strings "1" / "0" (a new trackor's checkbox is "0", not null);
- text fields hold at most 255 characters unless the field says otherwise, memo fields 65,000;
- numbers written to text fields are accepted and stored as their string; booleans are refused;
- an empty string is stored as null (empty values read back as null).
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

FIELD_TYPES = ("text", "memo", "dropdown", "checkbox", "date", "datetime", "efile", "number")
# OneVizion's labels (GET /api/v3/schema/fields "type") and constants (GET /api/v3/trackor_types/T
# "data_type") of the field types the sandbox knows.
TYPE_LABELS = {"text": "Text", "memo": "Memo", "dropdown": "Drop-Down", "checkbox": "Checkbox",
               "date": "Date", "datetime": "Date/Time", "efile": "Electronic File", "number": "Number"}
DATA_TYPES = {"text": "TEXT", "memo": "MEMO", "dropdown": "DROP_DOWN", "checkbox": "CHECKBOX",
              "date": "DATE", "datetime": "DATE_TIME", "efile": "ELECTRONIC_FILE", "number": "NUMBER"}
TYPE_ALIASES = {"drop-down": "dropdown", "drop_down": "dropdown", "date-time": "datetime",
                "date/time": "datetime", "date_time": "datetime", "electronic file": "efile",
                "file": "efile", "electronic_file": "efile", "wiki": "memo"}
DEFAULT_MAX = {"text": 255, "memo": 65000}


def field_type(name) -> str:
    """The sandbox's name of a field type given as its name, OneVizion's label or constant."""
    lower = str(name).strip().lower()
    return TYPE_ALIASES.get(lower, lower)


class SandboxError(Exception):
    """An answer other than success: HTTP status plus a text/plain message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def bad(message: str) -> SandboxError:
    return SandboxError(400, message)


def not_found(message: str) -> SandboxError:
    return SandboxError(404, message)


class Field:
    """One configured field: canonical (upper-case) name, type, drop-down values, max length, label,
    required; ``id`` is set by the store."""

    def __init__(self, name: str, ftype: str, values=(), max_length=None, label=None, required=False):
        ftype = field_type(ftype)
        if not NAME_RE.match(name or ""):
            raise bad("Invalid field name: %r" % (name,))
        if ftype not in FIELD_TYPES:
            raise bad("Invalid field type %r for %s (one of %s)"
                      % (ftype, name, ", ".join(TYPE_LABELS.values())))
        if ftype == "dropdown" and not values:
            raise bad("Drop-down field %s needs values" % name)
        self.name = name.upper()
        self.ftype = ftype
        self.values = tuple(str(v) for v in values)
        self.max_length = int(max_length) if max_length else DEFAULT_MAX.get(ftype)
        self.label = label or field_label(self.name)
        self.required = bool(required)
        self.id = None

    def copy(self) -> "Field":
        twin = Field.__new__(Field)
        twin.__dict__.update(self.__dict__)
        return twin

    def describe(self) -> dict:
        return {"type": self.ftype, "values": list(self.values), "max_length": self.max_length,
                "label": self.label, "required": self.required}


class TrackorType:
    """A trackor type: canonical name as configured, optional parent type name, ordered fields,
    label, prefix, and ``autogen`` (the prefix of generated keys, or None: keys are given)."""

    def __init__(self, name: str, parent=None, fields=(), label=None, prefix=None, autogen=None):
        if not NAME_RE.match(name or ""):
            raise bad("Invalid trackor type name: %r" % (name,))
        self.name = name
        self.parent = parent
        self.fields = {}
        for field in fields:
            self.fields[field.name] = field
        self.label = label or type_label(name)
        self.prefix = prefix or "".join(ch for ch in name if ch.isupper())[:4] + ":"
        self.autogen = autogen
        self.id = None

    @property
    def table(self) -> str:
        # Names are checked against NAME_RE, so this identifier is safe to splice into SQL.
        return "data_" + self.name.lower()

    def field(self, name: str):
        return self.fields.get(str(name).upper())

    def copy(self) -> "TrackorType":
        twin = TrackorType.__new__(TrackorType)
        twin.__dict__.update(self.__dict__)
        twin.fields = {name: field.copy() for name, field in self.fields.items()}
        return twin

    def describe(self) -> dict:
        return {"name": self.name, "parent": self.parent, "label": self.label, "prefix": self.prefix,
                "autogen": self.autogen,
                "fields": {f.name: f.describe() for f in self.fields.values()}}


def type_label(name: str) -> str:
    """A label for a type configured without one: ``MyRun`` -> ``My Run``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).replace("_", " ")


def field_label(name: str) -> str:
    """A label for a field configured without one: ``MR_LAST_STATE`` -> ``Last State``."""
    words = name.split("_")
    words = words[1:] if len(words) > 1 else words
    return " ".join(word.capitalize() for word in words)


def default_types() -> list:
    """The default schema of SPEC section 4, parents before children, with the SPEC's labels."""
    return [
        TrackorType("Integration", None, [
            Field("INT_NAME", "text", label="Integration Name"),
            Field("INT_CONTROL_PROCESS", "text", label="Control Process"),
            Field("INT_DIRECTIONALITY", "dropdown", ["Outward", "Inward", "Bi-Directional"],
                  label="Directionality"),
            Field("INT_ENABLED", "checkbox", label="Enabled"),
            Field("INT_LAST_RUN", "datetime", label="Last Run"),
            Field("INT_EXTERNAL_SYSTEM", "text", label="External System"),
            Field("INT_LAST_MODIFIED_DATE", "datetime", label="Last Modified Date"),
            Field("INT_DESCRIPTION", "memo", label="Description"),
            Field("INT_READ_FROM_STDOUT", "checkbox", label="Read From STDOUT")],
            label="Integration", prefix="INT:"),
        TrackorType("IntegrationRun", "Integration", [
            Field("IR_STATUS", "dropdown",
                  ["Running", "Executed without Warnings", "Executed with Warnings"], label="Status"),
            Field("IR_START", "datetime", label="Start"), Field("IR_FINISH", "datetime", label="Finish"),
            Field("IR_FILE", "efile", label="File")],
            label="Integration Run", prefix="IR:"),
        TrackorType("IntegrationLog", "IntegrationRun", [
            Field("IL_DATE_TIME", "datetime", label="Date Time"),
            Field("IL_MESSAGE_TYPE", "dropdown", ["Info", "Warning", "Error"], label="Message Type"),
            Field("IL_MESSAGE", "text", max_length=255, label="Message"),
            Field("IL_DESCRIPTION", "memo", max_length=65000, label="Description"),
            Field("IL_FILE", "efile", label="File")],
            label="Log", prefix="IL:"),
    ]


def parse_fields_spec(spec) -> list:
    """Fields from the control API's {"NAME": {"type": ..., "values": [...], "max_length": n,
    "label": ..., "required": bool}} (or {"NAME": "type"})."""
    if not isinstance(spec, dict):
        raise bad("'fields' must be an object")
    fields = []
    for name, info in spec.items():
        if isinstance(info, str):
            info = {"type": info}
        if not isinstance(info, dict):
            raise bad("Field %s: expected an object" % name)
        unknown = set(info) - {"type", "values", "max_length", "label", "required"}
        if unknown:
            raise bad("Field %s: unknown key(s) %s" % (name, ", ".join(sorted(map(str, unknown)))))
        fields.append(Field(name, info.get("type", "text"), info.get("values") or (),
                            info.get("max_length"), info.get("label"), info.get("required", False)))
    return fields


def to_stored(field: Field, value):
    """Check a written value; return what the column stores.

    For electronic files the result is None (clear) or a (file_name, bytes) pair for the store to
    turn into a blob.
    """
    if value is None or (isinstance(value, str) and value == "" and field.ftype != "efile"):
        return "0" if field.ftype == "checkbox" else None
    checker = _CHECKERS[field.ftype]
    return checker(field, value)


def _text(field, value):
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise bad("Field %s: expected a string" % field.name)
    value = str(value)
    if field.max_length and len(value) > field.max_length:
        raise bad("Field %s: value is %d characters long, at most %d allowed"
                  % (field.name, len(value), field.max_length))
    return value


def _dropdown(field, value):
    if not isinstance(value, str) or value not in field.values:
        raise bad("Field %s: %r is not one of its values (%s)"
                  % (field.name, value, ", ".join(field.values)))
    return value


def _checkbox(field, value):
    normal = checkbox_value(value)
    if normal is None:
        raise bad("Field %s: a checkbox takes 1 or 0, not %r" % (field.name, value))
    return normal


def checkbox_value(value):
    """"1" / "0" for the spellings a checkbox accepts (1, 0, "1", "0", true, false), else None."""
    if value is True or value == 1 and not isinstance(value, str):
        return "1"
    if value is False or value == 0 and not isinstance(value, str):
        return "0"
    if isinstance(value, str) and value.strip().lower() in ("1", "0", "true", "false"):
        return "1" if value.strip().lower() in ("1", "true") else "0"
    return None


def _datetime(field, value):
    return _dated(field, value, DATETIME_RE, "%Y-%m-%dT%H:%M:%S", "YYYY-MM-DDTHH:MM:SS")


def _date(field, value):
    return _dated(field, value, DATE_RE, "%Y-%m-%d", "YYYY-MM-DD")


def _dated(field, value, pattern, fmt, shown):
    if not isinstance(value, str) or not pattern.match(value):
        raise bad("Field %s: %r is not a %s value" % (field.name, value, shown))
    try:
        datetime.strptime(value, fmt)
    except ValueError:
        raise bad("Field %s: %r is not a valid date" % (field.name, value)) from None
    return value


def _number(field, value):
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise bad("Field %s: %r is not a number" % (field.name, value)) from None
    return repr(int(number)) if number.is_integer() else repr(number)


def _efile(field, value):
    if not isinstance(value, dict) or not isinstance(value.get("file_name"), str) \
            or not isinstance(value.get("data"), str):
        raise bad("Field %s: an electronic file is {\"file_name\": ..., \"data\": <base64>}"
                  % field.name)
    try:
        data = base64.b64decode(value["data"], validate=True)
    except (binascii.Error, ValueError):
        raise bad("Field %s: 'data' is not valid base64" % field.name) from None
    return (safe_file_name(value["file_name"]), data)


_CHECKERS = {"text": _text, "memo": _text, "dropdown": _dropdown, "checkbox": _checkbox,
             "datetime": _datetime, "date": _date, "number": _number, "efile": _efile}


def safe_file_name(name: str) -> str:
    """The plain base name of a client-given file name: no directories, no control characters."""
    name = str(name).replace("\\", "/").split("/")[-1]
    name = "".join(ch for ch in name if ch >= " " and ch != "\x7f").strip()
    return name if name not in ("", ".", "..") else "file"


def to_output(field: Field, stored):
    """What a read returns for a stored (non-file) value."""
    if stored is None:
        return None
    if field.ftype == "number":
        number = float(stored)
        return int(number) if number.is_integer() else number
    return stored
