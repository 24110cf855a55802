"""A sandbox whose schema is wrong in chosen ways (for tests of a preflight check), and its time zone.

The settings below are a layer over the configured schema (the default one, plus types added
through /_sandbox/trackor_types): the store keeps its configured schema and serves the schema these
settings make of it, to the API and the schema endpoints alike. They come from keyword arguments
of ``start_in_thread`` / ``make_server``, flags of ``python -m sandbox``, or POST /_sandbox/schema
(which changes the keys it names and keeps the others; DELETE /_sandbox/schema clears them all).
They are not stored in the database: a restart without them serves the configured schema again.

    drop_fields       ["IL_FILE"]                    these fields do not exist (reads, writes,
                                                     uploads naming them are a 404)
    field_types       {"IL_MESSAGE": "Memo"}         these fields have another type (OneVizion's
                                                     label or the sandbox's name; a Drop-Down only
                                                     for a field that has values); the length
                                                     becomes the new type's default
    drop_values       {"IR_STATUS": ["Executed without Warnings"]}
                                                     these drop-down values do not exist
    mandatory_fields  ["IntegrationRun.IR_APPROVER"] a create must fill these (else 400 naming the
                                                     field), an update cannot empty them; a field
                                                     that does not exist is added as Text
    autogen_keys      ["IntegrationRun"] or {"IntegrationRun": "RUN-"}
                                                     these types generate keys: a create's given
                                                     TRACKOR_KEY is replaced by the prefix (default:
                                                     the type's prefix without its colon, and "-")
                                                     and the TRACKOR_ID in 6 digits, IR-000042
    labels            {"IntegrationRun": "Runs", "IL_MESSAGE": "Text"}
                                                     labels of types or fields
    field_lengths     {"IL_MESSAGE": 100}            most characters of Text and Memo fields
    timezone          "Europe/Berlin"                the installation's PrimaryTimezone (default
                                                     America/New_York, which is not UTC)

A field is named ``FIELD`` (looked for in every type) or ``Type.FIELD``; names match
case-insensitively. A bad setting is refused whole with SandboxError(400) naming the key and the
name it could not place.
"""

from __future__ import annotations

from sandbox import schema
from sandbox.schema import bad

DEFAULT_TIMEZONE = "America/New_York"
KEYS = ("drop_fields", "field_types", "drop_values", "mandatory_fields", "autogen_keys", "labels",
        "field_lengths", "timezone")
ADDED_FIELD_ID = 900000  # ids of fields a setting adds (configured fields have their row id)


class Variant:
    """The settings, checked as given; ``apply`` checks them against a schema."""

    def __init__(self, settings=None):
        self.values = {}
        if settings:
            self.update(settings)

    def update(self, settings: dict):
        """Change the keys given (None or an empty value clears one). Shape errors: 400."""
        if not isinstance(settings, dict):
            raise bad("Schema settings must be a JSON object")
        unknown = sorted(str(k) for k in settings if k not in KEYS)
        if unknown:
            raise bad("Unknown schema setting(s): %s (known: %s)" % (", ".join(unknown), ", ".join(KEYS)))
        checked = {key: _shape(key, value) for key, value in settings.items()}
        for key, value in checked.items():
            if value in (None, [], {}):
                self.values.pop(key, None)
            else:
                self.values[key] = value

    def copy(self) -> "Variant":
        twin = Variant()
        twin.values = dict(self.values)
        return twin

    @property
    def timezone(self) -> str:
        return self.values.get("timezone") or DEFAULT_TIMEZONE

    def settings(self) -> dict:
        result = {key: self.values.get(key) for key in KEYS}
        result["timezone"] = self.timezone
        return result

    def apply(self, base: dict):
        """(types, added) for ``base`` = {lower name: TrackorType}: new TrackorType objects with the
        settings applied (base is left alone), and the [(type, field)] of fields that were added
        (the store gives them a column)."""
        types = {lname: ttype.copy() for lname, ttype in base.items()}
        added = []
        values = self.values
        for ref in values.get("drop_fields", []):
            ttype, field = _field(types, ref, "drop_fields")
            del ttype.fields[field.name]
        for ref, ftype in values.get("field_types", {}).items():
            _, field = _field(types, ref, "field_types")
            new = schema.field_type(ftype)
            if new not in schema.FIELD_TYPES:
                raise bad("Schema setting 'field_types': %r is not a field type (one of %s)"
                          % (ftype, ", ".join(schema.TYPE_LABELS.values())))
            if new == "dropdown" and not field.values:
                raise bad("Schema setting 'field_types': %s has no values to be a Drop-Down" % field.name)
            field.ftype, field.max_length = new, schema.DEFAULT_MAX.get(new)
        for ref, dropped in values.get("drop_values", {}).items():
            _, field = _field(types, ref, "drop_values")
            missing = [v for v in dropped if v not in field.values]
            if field.ftype != "dropdown" or missing:
                raise bad("Schema setting 'drop_values': %s has no value %r"
                          % (field.name, (missing or dropped)[0]))
            field.values = tuple(v for v in field.values if v not in dropped)
        for ref in values.get("mandatory_fields", []):
            found = _find(types, ref)
            if found is None:
                ttype, name = _new_field_place(types, ref)
                field = schema.Field(name, "text", required=True)
                field.id = ADDED_FIELD_ID + len(added) + 1
                ttype.fields[field.name] = field
                added.append((ttype, field))
            else:
                found[1].required = True
        for type_name, prefix in values.get("autogen_keys", {}).items():
            ttype = _type(types, type_name, "autogen_keys")
            ttype.autogen = prefix if prefix is not None else ttype.prefix.rstrip(":") + "-"
        for ref, label in values.get("labels", {}).items():
            target = _type(types, ref, None) if "." not in ref else None
            if target is None:
                target = _find(types, ref)
                if target is None:
                    raise bad("Schema setting 'labels': no trackor type or field %s" % ref)
                target = target[1]
            target.label = label
        for ref, length in values.get("field_lengths", {}).items():
            _, field = _field(types, ref, "field_lengths")
            if field.ftype not in ("text", "memo"):
                raise bad("Schema setting 'field_lengths': %s is not a Text or Memo field" % field.name)
            field.max_length = length
        return types, added


def _shape(key, value):
    """The setting in its normal form (lists of names, dicts of name to value)."""
    if value is None:
        return None
    if key == "timezone":
        return _timezone(value)
    if key in ("drop_fields", "mandatory_fields"):
        return _names(key, value)
    if key == "autogen_keys":
        if isinstance(value, list):
            value = {name: None for name in _names(key, value)}
        return _mapping(key, value, lambda v: v is None or isinstance(v, str) and v != "",
                        "a key prefix (text) or null")
    if key == "drop_values":
        value = _mapping(key, value, lambda v: isinstance(v, (str, list)), "a value or a list of values")
        result = {}
        for name, values in value.items():
            values = [values] if isinstance(values, str) else values
            if not values or not all(isinstance(v, str) for v in values):
                raise bad("Schema setting 'drop_values': %s takes a list of values" % name)
            result[name] = values
        return result
    if key == "field_types":
        return _mapping(key, value, lambda v: isinstance(v, str), "a field type")
    if key == "labels":
        return _mapping(key, value, lambda v: isinstance(v, str) and v.strip() != "", "a label")
    if key == "field_lengths":
        return _mapping(key, value, lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                        "a whole number of at least 1")
    raise AssertionError(key)


def _names(key, value):
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise bad("Schema setting '%s' takes a list of names" % key)
    return [v.strip() for v in value]


def _mapping(key, value, good, what):
    if not isinstance(value, dict):
        raise bad("Schema setting '%s' takes an object of names to values" % key)
    for name, item in value.items():
        if not good(item):
            raise bad("Schema setting '%s': the value for %s must be %s" % (key, name, what))
    return dict(value)


def _timezone(value):
    if not isinstance(value, str) or not value.strip():
        raise bad("Schema setting 'timezone' must be an IANA zone name such as America/New_York")
    try:
        import zoneinfo  # Python 3.9+; imported here, so a start without --timezone does not pay
        zoneinfo.ZoneInfo(value.strip())
    except ImportError:
        pass
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
        raise bad("Schema setting 'timezone': %r is not a known IANA zone name" % value) from None
    return value.strip()


def _type(types, name, key):
    ttype = types.get(str(name).strip().lower())
    if ttype is None and key is not None:
        raise bad("Schema setting '%s': no trackor type %s" % (key, name))
    return ttype


def _find(types, ref):
    """(type, field) for ``FIELD`` or ``Type.FIELD``, or None; ``FIELD`` in two types is a 400."""
    type_name, _, name = str(ref).strip().rpartition(".")
    if type_name:
        ttype = types.get(type_name.lower())
        field = ttype.field(name) if ttype else None
        return (ttype, field) if field else None
    found = [(t, t.field(name)) for t in types.values() if t.field(name)]
    if len(found) > 1:
        raise bad("Field %s is in several trackor types (%s): name it Type.FIELD"
                  % (name, ", ".join(t.name for t, _ in found)))
    return found[0] if found else None


def _field(types, ref, key):
    found = _find(types, ref)
    if found is None:
        raise bad("Schema setting '%s': no field %s" % (key, ref))
    return found


def _new_field_place(types, ref):
    type_name, _, name = str(ref).strip().rpartition(".")
    if not type_name:
        raise bad("Schema setting 'mandatory_fields': no field %s; name a new one Type.FIELD" % ref)
    ttype = _type(types, type_name, "mandatory_fields")
    if not schema.NAME_RE.match(name):
        raise bad("Schema setting 'mandatory_fields': %r is not a field name" % name)
    return ttype, name
