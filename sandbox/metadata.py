"""The read-only schema and system endpoints (what a preflight check reads), from the served schema.

Shapes as onevizion-api.md ("Schema and system endpoints") and OneVizion's OpenAPI document give
them; names in paths and parameters match case-insensitively, answers carry the canonical names.

    GET /api/authorize                       text/plain "Authorization succeeded" (401 says why)
    GET /api/v3/schema/trackor_types         [{id, name, label, prefix, autogen_trackor_key?,
                                               relations: {children: [names], parents: [names]}}]
    GET /api/v3/schema/fields?trackor_types=A&trackor_types=B[&fields=F1,F2]
                                             [{id, name, label, type, required,
                                               field_trackor_type: {id, name}, dropdown_values?}]
    GET /api/v3/trackor_types                [{id, name, label, prefix}]
    GET /api/v3/trackor_types/T              [{name, label, data_type, mandatory}]
    GET /api/v3/trackor_types/T/parents      [{trackor_type_id, relation_type_id, name, label, prefix,
        /api/v3/trackor_types/T/children       relation_type, children}]
    GET /api/v3/params/system/NAME           {name, data_type, value, description, group}

Choices where the sources are silent: TRACKOR_ID and TRACKOR_KEY are not listed among the fields
(they are every trackor's, not configured fields); ``trackor_types`` is repeated, as the OpenAPI
default says: a comma list is taken as one (unknown) type name, 404, so a client relying on commas is
caught; without ``trackor_types`` the answer is 400; ``fields=`` (repeated or comma-separated) keeps
only the fields named, and a name not among them is simply absent; ``autogen_trackor_key`` is the
sandbox's own notation, e.g. ``IR-{TRACKOR_ID:06}``; every relation is ONE_TO_MANY; a node's
``children`` holds the tree further away from the type asked (its children's children for
/children, its parents' parents for /parents). The only system parameter is PrimaryTimezone.
"""

from __future__ import annotations

from sandbox.schema import DATA_TYPES, TYPE_LABELS, bad, not_found

TEXT_TYPE = "text/plain;charset=UTF-8"


# sandbox.api imports this module for its routes, so its answer types are imported at call time.

def authorize(store, request):
    """200 text/plain once the server's auth check has let the request through."""
    from sandbox.api import Response
    return Response(200, b"Authorization succeeded", TEXT_TYPE)


def schema_trackor_types(store, request):
    types = store.served_types()
    return _json([_type_schema(t, types) for t in types])


def _type_schema(ttype, types):
    result = {"id": ttype.id, "name": ttype.name, "label": ttype.label, "prefix": ttype.prefix}
    if ttype.autogen is not None:
        result["autogen_trackor_key"] = "%s{TRACKOR_ID:06}" % ttype.autogen
    result["relations"] = {"children": [t.name for t in _children(ttype, types)],
                           "parents": [ttype.parent] if ttype.parent else []}
    return result


def schema_fields(store, request):
    names = _values(request, "trackor_types", split=False)
    if not names:
        raise bad("Parameter 'trackor_types' is required (repeat it for several types)")
    wanted = {name.upper() for name in _values(request, "fields", split=True)}
    result = []
    for name in names:
        ttype = store.get_type(name)
        for field in ttype.fields.values():
            if wanted and field.name not in wanted:
                continue
            spec = {"id": field.id, "name": field.name, "label": field.label,
                    "type": TYPE_LABELS[field.ftype], "required": field.required,
                    "field_trackor_type": {"id": ttype.id, "name": ttype.name}}
            if field.ftype == "dropdown":
                spec["dropdown_values"] = [{"value": v, "label": v} for v in field.values]
            result.append(spec)
    return _json(result)


def trackor_types(store, request):
    return _json([{"id": t.id, "name": t.name, "label": t.label, "prefix": t.prefix}
                  for t in store.served_types()])


def trackor_type(store, request, type_name):
    ttype = store.get_type(type_name)
    return _json([{"name": f.name, "label": f.label, "data_type": DATA_TYPES[f.ftype],
                   "mandatory": f.required} for f in ttype.fields.values()])


def parents(store, request, type_name):
    ttype, types = store.get_type(type_name), store.served_types()
    return _json([_node(p, ttype, types, upward=True) for p in _parents(ttype, types)])


def children(store, request, type_name):
    ttype, types = store.get_type(type_name), store.served_types()
    return _json([_node(c, c, types, upward=False) for c in _children(ttype, types)])


def _node(ttype, child, types, upward, depth=0):
    """A tree node for ``ttype``; ``child`` is the child side of the relation it stands for."""
    further = _parents(ttype, types) if upward else _children(ttype, types)
    return {"trackor_type_id": ttype.id, "relation_type_id": 10000 + child.id, "name": ttype.name,
            "label": ttype.label, "prefix": ttype.prefix, "relation_type": "ONE_TO_MANY",
            "children": [_node(t, ttype if upward else t, types, upward, depth + 1)
                         for t in further] if depth < 20 else []}


def _children(ttype, types):
    return [t for t in types if (t.parent or "").lower() == ttype.name.lower()]


def _parents(ttype, types):
    return [t for t in types if ttype.parent and t.name.lower() == ttype.parent.lower()]


SYSTEM_PARAMS = {
    "primarytimezone": ("PrimaryTimezone", "TEXT", "Primary time zone of the installation", "Localization"),
}


def system_param(store, request, name):
    known = SYSTEM_PARAMS.get(name.lower())
    if known is None:
        raise not_found("Unknown system parameter: %s" % name)
    canonical, data_type, description, group = known
    return _json({"name": canonical, "data_type": data_type, "value": store.variant.timezone,
                  "description": description, "group": group})


def _values(request, name, split):
    values = [v for key, vs in request.query.items() if key.lower() == name for v in vs]
    if split:
        values = [part for v in values for part in v.split(",")]
    return [v.strip() for v in values if v.strip()]


def _json(data):
    from sandbox.api import json_response
    return json_response(data)

