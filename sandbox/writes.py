"""Writes of the sandbox store: create, update (by id or filter), delete, with their checks.

A mixin of sandbox.store.Store (kept apart only to keep modules short): it uses the Store's ``db``,
``lock``, ``chain``, ``_transaction``, ``_select`` and ``_type_of``. Each public method is one
transaction under the store's lock, so a failed check leaves nothing half-written.

Parents (of a create, or of an update by filter) are found by their ``filter`` exactly as a read
filters (sandbox.query): a double-quoted value is an exact match, an unquoted one a case-insensitive
"contains". When the filter matches several trackors, the first by TRACKOR_ID (the oldest) is the
parent, without a word: so an unquoted key ``7`` silently lands under ``17`` when ``17`` is older or
``7`` does not exist -- the quiet misfiling a real installation plausibly does, which is what a
client that forgets the quotes must be caught at.
"""

from __future__ import annotations

import json
import sqlite3
import time

from sandbox import query, schema
from sandbox.schema import bad, not_found


class WritesMixin:
    """create / update_by_id / update_where / delete_where for sandbox.store.Store."""

    def create(self, type_name, fields: dict, parents: list) -> dict:
        """Create one trackor; {"TRACKOR_ID", "TRACKOR_KEY"}.

        A type that generates keys (``autogen``, see sandbox.variants) ignores a given TRACKOR_KEY
        and answers the one it made; a type without gives the TRACKOR_ID as the key when none is
        given. A required field missing or empty is a 400 naming it.
        """
        with self.lock:
            chain = self.chain(type_name)
            ttype = chain[0]
            if not isinstance(fields, dict):
                raise bad("'fields' must be an object")
            _check_required(ttype, fields)
            if ttype.autogen is not None:
                fields = {k: v for k, v in fields.items() if str(k).upper() != "TRACKOR_KEY"}
            parent_id = self._parent_id(chain, parents)
            with self._transaction():
                cursor = self.db.execute(
                    "INSERT INTO trackors (type, key, parent_id, created_at) VALUES (?, NULL, ?, ?)",
                    (ttype.name.lower(), parent_id, time.time()))
                trackor_id = cursor.lastrowid
                self.db.execute("INSERT INTO %s (trackor_id) VALUES (?)" % ttype.table, (trackor_id,))
                key = self._write(ttype, trackor_id, fields)
                if key is None:
                    made = str(trackor_id) if ttype.autogen is None else "%s%06d" % (ttype.autogen, trackor_id)
                    key = self._free_key(ttype, made)
                    self.db.execute("UPDATE trackors SET key = ? WHERE id = ?", (key, trackor_id))
            return {"TRACKOR_ID": trackor_id, "TRACKOR_KEY": key}

    def _free_key(self, ttype, key):
        candidate, suffix = key, 1
        while self.db.execute("SELECT 1 FROM trackors WHERE type = ? AND key = ?",
                              (ttype.name.lower(), candidate)).fetchone():
            candidate, suffix = "%s-%d" % (key, suffix), suffix + 1
        return candidate

    def _parent_id(self, chain, parents):
        if not parents:
            return None
        if len(parents) > 1 or not isinstance(parents[0], dict):
            raise bad("'parents' takes one object with trackor_type and filter")
        wanted = str(parents[0].get("trackor_type", ""))
        if len(chain) < 2 or chain[1].name.lower() != wanted.lower():
            self.get_type(wanted)
            raise bad("%s is not the parent trackor type of %s" % (wanted, chain[0].name))
        flt = parents[0].get("filter")
        if not isinstance(flt, dict) or not flt:
            raise bad("A parent needs a non-empty 'filter' object")
        # Parent filters follow the read filters (sandbox.query): a quoted value is exact, an
        # unquoted one a "contains", so an unquoted key 7 also finds 17.
        filters = [(k, _filter_text(v)) for k, v in flt.items()]
        rows, _ = self._select(chain[1:], filters, [], None, 1, 1)
        if not rows:
            raise not_found("Parent %s not found: %s" % (wanted, json.dumps(flt)))
        return rows[0]["TRACKOR_ID"]

    def _write(self, ttype, trackor_id, fields):
        """Check and store ``fields``; return the TRACKOR_KEY written, if any. Inside a transaction."""
        if not isinstance(fields, dict):
            raise bad("'fields' must be an object")
        key, columns, values = None, [], []
        for name, value in fields.items():
            upper = str(name).upper()
            if upper == "TRACKOR_ID":
                raise bad("TRACKOR_ID cannot be written")
            if upper == "TRACKOR_KEY":
                key = _key_text(value)
                continue
            field = ttype.field(name)
            if field is None:
                raise not_found("Unknown field %s for trackor type %s" % (name, ttype.name))
            if field.required and _empty(value):
                raise bad("Field %s is required for trackor type %s and cannot be empty"
                          % (field.name, ttype.name))
            stored = schema.to_stored(field, value)
            if field.ftype == "efile":
                stored = self._replace_blob(ttype, trackor_id, field, stored)
            columns.append('"%s" = ?' % field.name)
            values.append(stored)
        if columns:
            self.db.execute("UPDATE %s SET %s WHERE trackor_id = ?" % (ttype.table, ", ".join(columns)),
                            values + [trackor_id])
        if key is not None:
            try:
                self.db.execute("UPDATE trackors SET key = ? WHERE id = ?", (key, trackor_id))
            except sqlite3.IntegrityError:
                raise bad("TRACKOR_KEY %s already exists for trackor type %s" % (key, ttype.name)) from None
        return key

    def _replace_blob(self, ttype, trackor_id, field, file_pair):
        old = self.db.execute('SELECT "%s" FROM %s WHERE trackor_id = ?' % (field.name, ttype.table),
                              (trackor_id,)).fetchone()
        if old and old[0] is not None:
            self.db.execute("DELETE FROM blobs WHERE id = ?", (old[0],))
        if file_pair is None:
            return None
        cursor = self.db.execute(
            "INSERT INTO blobs (trackor_id, field, file_name, data, created_at) VALUES (?, ?, ?, ?, ?)",
            (trackor_id, field.name, file_pair[0], sqlite3.Binary(file_pair[1]), time.time()))
        return cursor.lastrowid

    def update_by_id(self, trackor_id: int, fields: dict) -> dict:
        with self.lock:
            ttype, key = self._type_of(trackor_id)
            with self._transaction():
                new_key = self._write(ttype, trackor_id, fields)
            return {"TRACKOR_ID": trackor_id, "TRACKOR_KEY": new_key if new_key is not None else key}

    def update_where(self, type_name, filters, fields, parents) -> list:
        """Update every trackor the filters match; 404 when none does."""
        with self.lock:
            chain = self.chain(type_name)
            matched = self._matching(chain, filters)
            parent_id = self._parent_id(chain, parents) if parents else None
            result = []
            with self._transaction():
                for row in matched:
                    new_key = self._write(chain[0], row["TRACKOR_ID"], fields)
                    if parent_id is not None:
                        self.db.execute("UPDATE trackors SET parent_id = ? WHERE id = ?",
                                        (parent_id, row["TRACKOR_ID"]))
                    result.append({"TRACKOR_ID": row["TRACKOR_ID"],
                                   "TRACKOR_KEY": new_key if new_key is not None else row["TRACKOR_KEY"]})
            return result

    def delete_where(self, type_name, filters) -> int:
        """Delete the matching trackors and, as OneVizion does, their descendants; 404 when none."""
        with self.lock:
            matched = self._matching(self.chain(type_name), filters)
            with self._transaction():
                for row in matched:
                    self._delete_tree(row["TRACKOR_ID"])
            return len(matched)

    def delete_by_id(self, trackor_id: int) -> None:
        """Delete one trackor (any type) and its descendants; 404 when missing."""
        with self.lock:
            self._type_of(trackor_id)
            with self._transaction():
                self._delete_tree(trackor_id)

    def _matching(self, chain, filters):
        if not filters:
            raise bad("A filter is required (for example trackor_id=N)")
        rows, _ = self._select(chain, filters, [], None, 1, query.DEFAULT_PER_PAGE)
        if not rows:
            raise not_found("No %s trackor matches the filter" % chain[0].name)
        return rows

    def _delete_tree(self, trackor_id):
        for (child,) in self.db.execute("SELECT id FROM trackors WHERE parent_id = ?",
                                        (trackor_id,)).fetchall():
            self._delete_tree(child)
        ttype, _ = self._type_of(trackor_id)
        self.db.execute("DELETE FROM %s WHERE trackor_id = ?" % ttype.table, (trackor_id,))
        self.db.execute("DELETE FROM blobs WHERE trackor_id = ?", (trackor_id,))
        self.db.execute("DELETE FROM trackors WHERE id = ?", (trackor_id,))


def _empty(value) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def _check_required(ttype, fields):
    given = {str(name).upper(): value for name, value in fields.items()}
    for field in ttype.fields.values():
        if field.required and _empty(given.get(field.name)):
            raise bad("Field %s is required for trackor type %s (a create must give it)"
                      % (field.name, ttype.name))


def _filter_text(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _key_text(value):
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise bad("TRACKOR_KEY must be a string")
    if len(str(value)) > 255:
        raise bad("TRACKOR_KEY is longer than 255 characters")
    return str(value)
