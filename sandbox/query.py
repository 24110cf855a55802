"""Field references, filters and sort orders of a trackor read, turned into one SQL statement.

A reference is ``FIELD`` (the type's own field), ``TRACKOR_ID`` / ``TRACKOR_KEY``, or
``Ancestor.FIELD`` where Ancestor is the parent type, the grandparent type and so on (the
generic word ``Parent`` means the direct parent too). Names match case-insensitively; anything
unknown is a 404, as in the real API.

Filter values: a value wrapped in double quotes is an exact match on the text inside. An unquoted
value on a text-like field (text, memo, drop-down, date, date-time, TRACKOR_KEY) is the sandbox's
choice, since the real API only promises exactness for quoted values: a case-insensitive "contains"
match, so a client that forgets the quotes sees ``KEY=RUN-1`` also match ``RUN-10`` here, as it
might on a real installation. Unquoted TRACKOR_ID, number and checkbox values match exactly; checkbox
filters accept 1 / 0 / true / false with or without quotes. An empty value matches empty fields.
Filtering on an electronic-file field is refused (400).

Each ancestor level L joins ``trackors tL`` and the type's data table ``dL``; level 0 is the type
read. Only the levels a query mentions are joined.
"""

from __future__ import annotations

from sandbox.schema import SandboxError, bad, checkbox_value, not_found

RESERVED_PARAMS = ("fields", "sort", "page", "per_page")
UNSUPPORTED_PARAMS = ("view", "filter")
DEFAULT_PER_PAGE = 100000


class Ref:
    """A resolved reference: ancestor level, its type, field (None for TRACKOR_ID / _KEY)."""

    def __init__(self, level, ttype, field, special=None):
        self.level, self.ttype, self.field, self.special = level, ttype, field, special

    @property
    def sql(self) -> str:
        if self.special == "TRACKOR_ID":
            return "t%d.id" % self.level
        if self.special == "TRACKOR_KEY":
            return "t%d.key" % self.level
        return 'd%d."%s"' % (self.level, self.field.name)

    @property
    def output_key(self) -> str:
        name = self.special or self.field.name
        return name if self.level == 0 else "%s.%s" % (self.ttype.name, name)


def resolve(chain: list, ref: str) -> Ref:
    """Resolve a reference against ``chain`` = [type, parent type, grandparent type, ...]."""
    text = str(ref).strip()
    level = 0
    if "." in text:
        prefix, text = text.rsplit(".", 1)
        level = _level_of(chain, prefix)
    ttype = chain[level]
    upper = text.upper()
    if upper in ("TRACKOR_ID", "TRACKOR_KEY"):
        return Ref(level, ttype, None, upper)
    field = ttype.field(upper)
    if field is None:
        raise not_found("Unknown field %s for trackor type %s" % (ref, chain[0].name))
    return Ref(level, ttype, field)


def _level_of(chain, prefix):
    wanted = prefix.strip().lower()
    for level, ttype in enumerate(chain):
        if ttype.name.lower() == wanted:
            return level
    if wanted == "parent" and len(chain) > 1:
        return 1
    raise not_found("Unknown trackor type %s in a field of %s" % (prefix, chain[0].name))


def filter_clause(ref: Ref, raw: str):
    """(SQL condition, parameters) for one filter."""
    value = unquote_value(raw)
    quoted = value != str(raw)
    if ref.special == "TRACKOR_ID":
        try:
            return ("%s = ?" % ref.sql, [int(value)])
        except ValueError:
            return ("0 = 1", [])
    if ref.field is not None and ref.field.ftype == "efile":
        raise bad("Filtering on electronic file field %s is not supported" % ref.field.name)
    if value == "":
        return ("(%s IS NULL OR %s = '')" % (ref.sql, ref.sql), [])
    if ref.field is not None and ref.field.ftype == "checkbox":
        normal = checkbox_value(value)
        if normal is None:
            raise bad("Filter on checkbox %s takes 1 or 0" % ref.field.name)
        return ("%s = ?" % ref.sql, [normal])
    if quoted or (ref.field is not None and ref.field.ftype == "number"):
        return ("%s = ?" % ref.sql, [value])
    return ("instr(lower(%s), lower(?)) > 0" % ref.sql, [value])


def exact(value) -> str:
    """A filter value that matches exactly (wrapped in quotes unless it already is)."""
    text = str(value)
    return text if unquote_value(text) != text else '"%s"' % text


def unquote_value(raw) -> str:
    text = str(raw)
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return text[1:-1]
    return text


def build_select(chain, filters, fields, sort, page, per_page):
    """(select sql, count sql, params, output refs) for a read of chain[0].

    ``filters`` is a list of (name, raw value); ``fields`` a list of names; ``sort`` the raw
    ``F:desc,G:asc`` text or None.
    """
    out_refs = [resolve(chain, name) for name in fields]
    where, params, levels = ["t0.type = ?"], [chain[0].name.lower()], {0}
    for name, raw in filters:
        ref = resolve(chain, name)
        clause, extra = filter_clause(ref, raw)
        where.append(clause)
        params.extend(extra)
        levels.add(ref.level)
    order = []
    for ref, direction in parse_sort(chain, sort):
        order.append("%s %s" % (ref.sql, direction))
        levels.add(ref.level)
    order.append("t0.id ASC")
    levels.update(r.level for r in out_refs)
    source = _joins(chain, max(levels))
    columns = ", ".join(["t0.id", "t0.key"] + [r.sql for r in out_refs])
    tail = " WHERE " + " AND ".join(where)
    select = "SELECT %s FROM %s%s ORDER BY %s LIMIT ? OFFSET ?" % (
        columns, source, tail, ", ".join(order))
    count = "SELECT COUNT(*) FROM %s%s" % (source, tail)
    return select, count, params, [per_page, (page - 1) * per_page], out_refs


def _joins(chain, depth):
    parts = ["trackors t0 JOIN %s d0 ON d0.trackor_id = t0.id" % chain[0].table]
    for level in range(1, depth + 1):
        parts.append("LEFT JOIN trackors t%d ON t%d.id = t%d.parent_id" % (level, level, level - 1))
        parts.append("LEFT JOIN %s d%d ON d%d.trackor_id = t%d.id"
                     % (chain[level].table, level, level, level))
    return " ".join(parts)


def parse_sort(chain, sort):
    """[(Ref, "ASC"|"DESC")] from ``F:desc,G:asc`` (a bare F sorts ascending)."""
    result = []
    for part in (sort or "").split(","):
        if not part.strip():
            continue
        name, _, direction = part.partition(":")
        direction = (direction.strip() or "asc").upper()
        if direction not in ("ASC", "DESC"):
            raise bad("Sort direction must be asc or desc: %s" % part)
        result.append((resolve(chain, name), direction))
    return result


def split_params(query: dict):
    """(filters, fields, sort, page, per_page) from parsed query parameters (name -> [values])."""
    filters, fields, sort, page, per_page = [], [], None, 1, DEFAULT_PER_PAGE
    for name, values in query.items():
        lower = name.lower()
        if lower in UNSUPPORTED_PARAMS:
            raise bad("The sandbox does not support '%s='; use field filters" % name)
        if lower == "fields":
            fields = [f.strip() for v in values for f in v.split(",") if f.strip()]
        elif lower == "sort":
            sort = ",".join(values)
        elif lower in ("page", "per_page"):
            number = _positive(name, values[-1])
            page, per_page = (number, per_page) if lower == "page" else (page, number)
        else:
            filters.extend((name, v) for v in values)
    return filters, fields, sort, page, per_page


def _positive(name, text):
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise SandboxError(400, "'%s' must be a positive integer" % name)
    return number
