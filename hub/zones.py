"""Date-times as OneVizion takes them: `YYYY-MM-DDTHH:MM:SS`, no zone, in the installation's
time zone (SPEC §4). The zone is looked up once per name; dateutil is imported only when a
date-time is first written."""

from __future__ import annotations

from datetime import datetime
from typing import Dict, Optional

_zones: Dict[Optional[str], object] = {}


def zone(name: Optional[str]):
    """The tzinfo of an IANA name; None: the machine's local zone."""
    if name not in _zones:
        from dateutil import tz
        _zones[name] = tz.gettz(name) if name else tz.tzlocal()
    return _zones[name]


def format_time(at: float, tz) -> str:
    """OneVizion's date-time format for an epoch time, in the zone `tz` (a tzinfo)."""
    return datetime.fromtimestamp(at, tz).strftime("%Y-%m-%dT%H:%M:%S")
