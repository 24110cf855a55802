"""Date-times as OneVizion takes them: `YYYY-MM-DDTHH:MM:SS`, no zone, in the installation's
time zone (SPEC §4). A zone is looked up once per name: in the standard library's zoneinfo
(the system's zone database, cheap to import: a helper script must start fast), and only when
that does not know it, in dateutil, which carries a database of its own for machines without
one. No name means the machine's local zone."""

from __future__ import annotations

from datetime import datetime
from typing import Dict, Optional

_zones: Dict[str, object] = {}


def _lookup(name: str):
    """The tzinfo of an IANA name, or None when neither database knows it (or it is a file path
    or a POSIX TZ string such as "XYZ3", which dateutil would also take)."""
    if not name or name.startswith(("/", ".")):
        return None
    try:
        import zoneinfo
        return zoneinfo.ZoneInfo(name)
    except Exception:  # noqa: BLE001 - not found, malformed, or no system database: ask dateutil
        pass
    from dateutil import tz
    found = tz.gettz(name)
    return None if found is None or isinstance(found, tz.tzstr) else found


def zone(name: Optional[str]):
    """The tzinfo of an IANA name; None (the machine's local zone) without a name, or when the
    name is not a zone either database knows."""
    if not name:
        return None
    if name not in _zones:
        _zones[name] = _lookup(name)
    return _zones[name]


def known(name: Optional[str]) -> bool:
    """True when `name` is an IANA zone name the hub can write date-times in."""
    return zone(name) is not None


def format_time(at: float, tz) -> str:
    """OneVizion's date-time format for an epoch time, in the zone `tz` (a tzinfo; None: the
    machine's local zone, daylight saving included)."""
    return datetime.fromtimestamp(at, tz).strftime("%Y-%m-%dT%H:%M:%S")
