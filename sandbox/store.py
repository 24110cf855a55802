"""The sandbox's data: one SQLite connection, guarded by one lock, holding schema, trackors, files.

Tables: ``types`` and ``fields`` (the schema, so a file database keeps runtime-added types),
``trackors`` (id, type, key, parent, server-side creation time; UNIQUE(type, key) is what refuses a
duplicate key), one ``data_<type>`` table per trackor type with a TEXT column per field, and
``blobs`` for electronic files. One connection behind one lock keeps 20 concurrent writers safe
and simple; each write is one short transaction, so a create costs well under a millisecond.

The schema served is the configured one (``base``, kept in the database) with the settings of
sandbox.variants applied (``types``; a sandbox whose schema is wrong in chosen ways).

The page's data access (integrations, their runs, a run's logs) is at the bottom, as plain functions.
"""

from __future__ import annotations

import base64
import contextlib
import json
import sqlite3
import threading

from sandbox import query, schema, variants
from sandbox.schema import SandboxError, bad, not_found
from sandbox.writes import WritesMixin

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS types (lname TEXT PRIMARY KEY, name TEXT, parent TEXT, pos INTEGER,
    label TEXT, prefix TEXT, autogen TEXT);
CREATE TABLE IF NOT EXISTS fields (ltype TEXT, name TEXT, ftype TEXT, vals TEXT, max_length INTEGER,
    pos INTEGER, label TEXT, required INTEGER DEFAULT 0, PRIMARY KEY (ltype, name));
CREATE TABLE IF NOT EXISTS trackors (id INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL,
    key TEXT, parent_id INTEGER, created_at REAL NOT NULL, UNIQUE (type, key));
CREATE INDEX IF NOT EXISTS trackors_parent ON trackors (parent_id);
CREATE TABLE IF NOT EXISTS blobs (id INTEGER PRIMARY KEY AUTOINCREMENT, trackor_id INTEGER,
    field TEXT, file_name TEXT, data BLOB, created_at REAL);
"""


_ADDED_COLUMNS = (("types", "label", "TEXT"), ("types", "prefix", "TEXT"), ("types", "autogen", "TEXT"),
                  ("fields", "label", "TEXT"), ("fields", "required", "INTEGER DEFAULT 0"))


class Store(WritesMixin):
    """All data operations. Every public method takes the lock; names match case-insensitively."""

    def __init__(self, path: str = ":memory:", integrations_path=None, variant=None):
        self.path = path
        self.integrations_path = integrations_path
        self.lock = threading.RLock()
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        if path != ":memory:":
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
        self.base, self.types = {}, {}
        self.variant = variants.Variant()
        with self.lock:
            self.db.executescript(_TABLES)
            self._migrate()
            self._load_schema()
            if not self.base:
                self._seed()
            self.set_variant(variant or {})

    # -- schema ---------------------------------------------------------------------------
    def _migrate(self):
        """Columns a database written by an older sandbox lacks."""
        for table, column, declaration in _ADDED_COLUMNS:
            if column.upper() not in self._columns(table):
                self.db.execute("ALTER TABLE %s ADD COLUMN %s %s" % (table, column, declaration))

    def _columns(self, table) -> set:
        return {row[1].upper() for row in self.db.execute("PRAGMA table_info(%s)" % table)}

    def _load_schema(self):
        self.base = {}
        for rowid, lname, name, parent, label, prefix, autogen in self.db.execute(
                "SELECT rowid, lname, name, parent, label, prefix, autogen FROM types ORDER BY pos"):
            rows = self.db.execute("SELECT rowid, name, ftype, vals, max_length, label, required "
                                   "FROM fields WHERE ltype = ? ORDER BY pos", (lname,))
            fields = []
            for field_id, n, t, v, m, field_label, required in rows:
                fields.append(schema.Field(n, t, json.loads(v), m, field_label, required))
                fields[-1].id = field_id
            self.base[lname] = schema.TrackorType(name, parent, fields, label, prefix, autogen)
            self.base[lname].id = rowid

    def set_variant(self, settings: dict) -> dict:
        """Change the schema settings (sandbox.variants; the keys given, the others kept) and serve
        the schema they make; all or nothing (400 naming the setting). The settings in force."""
        with self.lock:
            variant = self.variant.copy()
            variant.update(settings)
            self._serve(variant)
            return variant.settings()

    def clear_variant(self) -> dict:
        with self.lock:
            self._serve(variants.Variant())
            return self.variant.settings()

    def _serve(self, variant):
        types, added = variant.apply(self.base)
        for ttype, field in added:
            self._ensure_column(ttype, field)
        self.variant, self.types = variant, types

    def _ensure_column(self, ttype, field):
        if field.name not in self._columns(ttype.table):
            default = " DEFAULT '0'" if field.ftype == "checkbox" else ""
            self.db.execute('ALTER TABLE %s ADD COLUMN "%s"%s' % (ttype.table, field.name, default))

    def _seed(self):
        with self._transaction():
            for ttype in schema.default_types():
                self._add_type(ttype.name, ttype.parent, list(ttype.fields.values()), ttype.label,
                               ttype.prefix)
        self.types = self.base  # until the settings are applied: the seed writes through the API's checks
        for number, name in enumerate(_integration_names(self.integrations_path), start=1):
            self.create("Integration", {
                "TRACKOR_KEY": "INT-%d" % number, "INT_NAME": name, "INT_ENABLED": 1,
                "INT_READ_FROM_STDOUT": 1, "INT_CONTROL_PROCESS": "examples",
                "INT_DIRECTIONALITY": "Inward",
                "INT_DESCRIPTION": "Seeded by the sandbox from Integration.example.json"}, [])

    def get_type(self, name) -> schema.TrackorType:
        ttype = self.types.get(str(name).lower())
        if ttype is None:
            raise not_found("Unknown trackor type: %s" % name)
        return ttype

    def chain(self, name) -> list:
        """[type, parent type, grandparent type, ...]."""
        chain = [self.get_type(name)]
        while chain[-1].parent and len(chain) < 20:
            chain.append(self.get_type(chain[-1].parent))
        return chain

    def add_type(self, name, parent, fields, label=None, prefix=None) -> schema.TrackorType:
        """Add a trackor type, or add missing fields to an existing one (same parent required), to
        the configured schema; the type as served."""
        with self.lock:
            with self._transaction():
                ttype = self._add_type(name, parent, fields, label, prefix)
            self._serve(self.variant)
            return self.types.get(ttype.name.lower(), ttype)

    def _add_type(self, name, parent, fields, label=None, prefix=None):
        if parent is not None:
            parent = self._base_type(parent).name
        ttype = self.base.get(name.lower())
        if ttype is None:
            ttype = schema.TrackorType(name, parent, (), label, prefix)
            cursor = self.db.execute("INSERT INTO types (lname, name, parent, pos, label, prefix) "
                                     "VALUES (?, ?, ?, ?, ?, ?)", (name.lower(), name, parent,
                                                                   len(self.base), ttype.label, ttype.prefix))
            ttype.id = cursor.lastrowid
            self.db.execute("CREATE TABLE IF NOT EXISTS %s (trackor_id INTEGER PRIMARY KEY)" % ttype.table)
            self.base[name.lower()] = ttype
        elif (ttype.parent or "").lower() != (parent or "").lower():
            raise bad("Trackor type %s exists with parent %s" % (ttype.name, ttype.parent))
        for field in fields:
            if ttype.field(field.name):
                continue
            self._ensure_column(ttype, field)
            cursor = self.db.execute(
                "INSERT INTO fields (ltype, name, ftype, vals, max_length, pos, label, required) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (ttype.name.lower(), field.name, field.ftype, json.dumps(field.values), field.max_length,
                 len(ttype.fields), field.label, int(field.required)))
            field.id = cursor.lastrowid
            ttype.fields[field.name] = field
        return ttype

    def _base_type(self, name) -> schema.TrackorType:
        ttype = self.base.get(str(name).lower())
        if ttype is None:
            raise not_found("Unknown trackor type: %s" % name)
        return ttype

    def close(self):
        """Close the database (after the server stopped; later calls fail)."""
        with self.lock:
            self.db.close()

    def describe(self) -> list:
        """The schema as served (settings applied)."""
        with self.lock:
            return [t.describe() for t in self.types.values()]

    def served_types(self) -> list:
        """The served TrackorType objects, parents before children (do not change them)."""
        with self.lock:
            return list(self.types.values())

    def reset(self):
        """Wipe everything and seed again, as on a first start (the schema settings stay)."""
        with self.lock:
            for ttype in self.base.values():
                self.db.execute("DROP TABLE IF EXISTS %s" % ttype.table)
            for table in ("meta", "types", "fields", "trackors", "blobs"):
                self.db.execute("DROP TABLE IF EXISTS %s" % table)
            self.db.execute("DELETE FROM sqlite_sequence")
            self.db.executescript(_TABLES)
            self.base = {}
            self._seed()
            self._serve(self.variant)

    @contextlib.contextmanager
    def _transaction(self):
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    # -- reads ----------------------------------------------------------------------------
    def read(self, type_name, params: dict):
        """(rows, total before paging) for GET .../trackors with parsed query ``params``."""
        filters, fields, sort, page, per_page = query.split_params(params)
        with self.lock:
            return self._select(self.chain(type_name), filters, fields, sort, page, per_page)

    def read_one(self, trackor_id: int, fields: list) -> dict:
        with self.lock:
            ttype, _ = self._type_of(trackor_id)
            rows, _ = self._select(self.chain(ttype.name), [("TRACKOR_ID", str(trackor_id))],
                                   fields, None, 1, 1)
            return rows[0]

    def _type_of(self, trackor_id):
        row = self.db.execute("SELECT type, key FROM trackors WHERE id = ?", (trackor_id,)).fetchone()
        if row is None:
            raise not_found("Trackor %s not found" % trackor_id)
        return self.get_type(row[0]), row[1]

    def _select(self, chain, filters, fields, sort, page, per_page):
        select, count, params, paging, refs = query.build_select(
            chain, filters, fields, sort, page, per_page)
        total = self.db.execute(count, params).fetchone()[0]
        rows = []
        for record in self.db.execute(select, params + paging).fetchall():
            row = {"TRACKOR_ID": record[0], "TRACKOR_KEY": record[1]}
            for ref, value in zip(refs, record[2:]):
                row[ref.output_key] = self._output(ref, value)
            rows.append(row)
        return rows, total

    def _output(self, ref, value):
        if ref.field is None or value is None:
            return value
        if ref.field.ftype == "efile":
            name, data = self.blob(value)
            return {"file_name": name, "data": base64.b64encode(data).decode("ascii")}
        return schema.to_output(ref.field, value)

    # -- files ----------------------------------------------------------------------------
    def upload(self, trackor_id: int, field_name: str, file_name: str, data: bytes) -> int:
        """Store ``data`` in an electronic-file field; the new blob id."""
        with self.lock:
            ttype, _ = self._type_of(trackor_id)
            field = self._efile_field(ttype, field_name)
            with self._transaction():
                blob_id = self._replace_blob(ttype, trackor_id, field,
                                             (schema.safe_file_name(file_name), data))
                self.db.execute('UPDATE %s SET "%s" = ? WHERE trackor_id = ?'
                                % (ttype.table, field.name), (blob_id, trackor_id))
            return blob_id

    def download(self, trackor_id: int, field_name: str):
        """(file name, bytes) of an electronic-file field; 404 when the field is empty."""
        with self.lock:
            ttype, _ = self._type_of(trackor_id)
            field = self._efile_field(ttype, field_name)
            row = self.db.execute('SELECT "%s" FROM %s WHERE trackor_id = ?'
                                  % (field.name, ttype.table), (trackor_id,)).fetchone()
            if row is None or row[0] is None:
                raise not_found("No file in %s of trackor %s" % (field.name, trackor_id))
            return self.blob(row[0])

    def blob(self, blob_id: int):
        with self.lock:
            row = self.db.execute("SELECT file_name, data FROM blobs WHERE id = ?", (blob_id,)).fetchone()
        if row is None:
            raise not_found("File %s not found" % blob_id)
        return row[0], bytes(row[1])

    def _efile_field(self, ttype, field_name):
        field = ttype.field(field_name)
        if field is None:
            raise not_found("Unknown field %s for trackor type %s" % (field_name, ttype.name))
        if field.ftype != "efile":
            raise bad("Field %s is not an electronic file field" % field.name)
        return field

    # -- control API ----------------------------------------------------------------------
    def dump(self, type_name, parent_id=None) -> list:
        """Every trackor of a type with all fields, parent id/key/type and ``_created_at``."""
        with self.lock:
            ttype = self.get_type(type_name)
            names = list(ttype.fields)
            cols = "".join(', d."%s"' % n for n in names)
            sql = ("SELECT t.id, t.key, t.parent_id, p.key, p.type, t.created_at%s FROM trackors t "
                   "JOIN %s d ON d.trackor_id = t.id LEFT JOIN trackors p ON p.id = t.parent_id "
                   "WHERE t.type = ?" % (cols, ttype.table))
            params = [ttype.name.lower()]
            if parent_id is not None:
                sql, params = sql + " AND t.parent_id = ?", params + [parent_id]
            result = []
            for rec in self.db.execute(sql + " ORDER BY t.id", params).fetchall():
                row = {"TRACKOR_ID": rec[0], "TRACKOR_KEY": rec[1], "_parent_id": rec[2],
                       "_parent_key": rec[3],
                       "_parent_type": self.types[rec[4]].name if rec[4] else None,
                       "_created_at": rec[5]}
                for name, value in zip(names, rec[6:]):
                    row[name] = self._file_info(value) if ttype.fields[name].ftype == "efile" \
                        else schema.to_output(ttype.fields[name], value)
                result.append(row)
            return result

    def _file_info(self, blob_id):
        if blob_id is None:
            return None
        row = self.db.execute("SELECT file_name, length(data) FROM blobs WHERE id = ?",
                              (blob_id,)).fetchone()
        return {"file_name": row[0], "size": row[1], "blob_id": blob_id} if row else None


def _integration_names(path) -> list:
    if not path:
        return []
    try:
        with open(path, encoding="utf-8") as handle:
            entries = json.load(handle)
    except (OSError, ValueError):
        return []
    return [e["IntegrationName"] for e in entries if isinstance(e, dict) and "IntegrationName" in e]


# -- data for the web page (sandbox/page.py) ------------------------------------------------
def list_integrations(store: Store, type_name="Integration") -> list:
    """All integrations with all fields, by TRACKOR_ID."""
    return store.dump(type_name)


def list_runs(store: Store, integration_id: int, type_name="IntegrationRun") -> list:
    """The runs of one integration (by its TRACKOR_ID), newest first."""
    return list(reversed(store.dump(type_name, parent_id=integration_id)))


def list_logs(store: Store, run_id: int, type_name="IntegrationLog") -> list:
    """The log records of one run (by its TRACKOR_ID), ordered by TRACKOR_KEY (= output order)."""
    return sorted(store.dump(type_name, parent_id=run_id), key=lambda r: r["TRACKOR_KEY"] or "")


def get_file(store: Store, trackor_id: int, field_name: str):
    """(file name, bytes) of an electronic-file field; raises SandboxError(404) when empty."""
    return store.download(trackor_id, field_name)


__all__ = ["Store", "SandboxError", "list_integrations", "list_runs", "list_logs", "get_file"]
