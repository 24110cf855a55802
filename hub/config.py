"""Passwords.json, Integration.json and Schema.json, read and checked once, at the edge,
into frozen dataclasses (SPEC sections 2-4).

Every problem is a hub.errors.UsageError (exit code 2) whose message starts with the
file's path and names the key; nothing else in the hub re-checks these files.
Messages about Passwords.json never carry its content: not a password, secret key
or access key, and not even the text around a JSON syntax error (line and column only).

The schema dataclasses, `load_schema` and the JSON file reader live in hub.schema
(to keep each module small) and are re-exported here, so callers import everything
configuration-related from hub.config.
"""

from __future__ import annotations

import base64
import datetime
import json
import math
import os
import ssl
import stat
import types
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union
from urllib.parse import urlsplit


from hub.errors import UsageError
from hub.schema import (DEFAULT_SCHEMA, IntegrationSchema, LogSchema, RunSchema,  # noqa: F401
                        Schema, default_schema_json, did_you_mean, load_schema, read_json,
                        type_name, unknown_key_message)

__all__ = ["Installation", "load_passwords", "IntegrationEntry", "load_integrations",
           "IntegrationSchema", "RunSchema", "LogSchema", "Schema", "DEFAULT_SCHEMA",
           "load_schema", "default_schema_json"]

_INSTALLATION_KEYS = ("URL", "UserName", "Password", "AccessKey", "SecretKey",
                      "Timezone", "VerifyTLS", "CABundle")
_ENTRY_KEYS = ("IntegrationName", "ExecutablePath", "ExecutableWorkingDir", "Timeout",
               "Environment", "Shell", "UploadDirs")


# ---------------------------------------------------------------- Passwords.json

@dataclass(frozen=True)
class Installation:
    """Where OneVizion is and how to log in. Secrets are left out of repr()."""

    url: str
    user_name: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    access_key: Optional[str] = field(default=None, repr=False)
    secret_key: Optional[str] = field(default=None, repr=False)
    timezone_name: Optional[str] = None
    verify: Union[bool, str] = True

    def authorization(self) -> str:
        """The Authorization header: Basic for UserName/Password, else `Bearer AccessKey:SecretKey`
        (the header the official client's HTTPBearerAuth sends)."""
        if self.user_name is not None:
            pair = ("%s:%s" % (self.user_name, self.password)).encode("utf-8")
            return "Basic " + base64.b64encode(pair).decode("ascii")
        return "Bearer %s:%s" % (self.access_key, self.secret_key)

    def identity(self) -> str:
        """Which installation and account the journal's rows belong to: the URL and the user
        name or access key, never a secret."""
        if self.user_name is not None:
            return "%s|%s" % (self.url, self.user_name)
        import hashlib
        return "%s|key:%s" % (self.url, hashlib.sha256(self.access_key.encode("utf-8")).hexdigest()[:16])

    def tzinfo(self) -> datetime.tzinfo:
        """The zone named by Timezone, else the machine's local zone."""
        from hub.zones import zone
        named = zone(self.timezone_name)
        if named is not None:
            return named
        from dateutil import tz
        return tz.tzlocal()

    def secrets(self) -> Tuple[str, ...]:
        """Every secret value, so that logs and messages can redact them."""
        return tuple(v for v in (self.password, self.secret_key, self.access_key) if v)


def load_passwords(path: str) -> Tuple[Installation, List[str]]:
    """Read Passwords.json: its `installation` section (other sections are ignored).

    Returns the Installation and warnings for the wrapper's log (a file mode wider
    than 0600). Raises UsageError naming the file and key, never a secret value.
    """
    data = read_json(path, secret=True)
    if not isinstance(data, dict):
        raise UsageError('%s: expected a JSON object with an "installation" section, got %s'
                         % (path, type_name(data)))
    if "installation" not in data:
        guess = did_you_mean("installation", data)
        hint = ' (found "%s": check its spelling)' % guess if guess else ""
        raise UsageError('%s: missing the "installation" section%s' % (path, hint))
    section = data["installation"]
    where = "%s: installation" % path
    if not isinstance(section, dict):
        raise UsageError("%s: expected an object, got %s" % (where, type_name(section)))
    for key in section:
        if key not in _INSTALLATION_KEYS:
            raise UsageError(unknown_key_message(where, key, _INSTALLATION_KEYS))
    values = {key: _opt(section, key, str, where) for key in _INSTALLATION_KEYS if key != "VerifyTLS"}
    verify_tls = _opt(section, "VerifyTLS", bool, where)
    if not values["URL"]:
        raise UsageError('%s: missing "URL"' % where)
    user, token = _credentials(values, where)
    installation = Installation(
        url=_check_url(values["URL"], where),
        user_name=user[0], password=user[1], access_key=token[0], secret_key=token[1],
        timezone_name=_check_timezone(values["Timezone"], where),
        verify=_check_verify(verify_tls, values["CABundle"], path, where))
    return installation, _mode_warnings(path)


def _opt(section: dict, key: str, kind: type, where: str) -> Any:
    """The value of an optional key of type `kind`: None when absent or null;
    strings must not be blank. Secret values never reach the message."""
    value = section.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        expected = "true or false" if kind is bool else "a string"
        raise UsageError("%s.%s: expected %s, got %s" % (where, key, expected, type_name(value)))
    if kind is str and not value.strip():
        raise UsageError("%s.%s: must not be empty" % (where, key))
    return value


def _credentials(values: dict, where: str) -> tuple:
    pairs = [("UserName", "Password"), ("AccessKey", "SecretKey")]
    given = [pair for pair in pairs if values[pair[0]] is not None or values[pair[1]] is not None]
    if not given:
        raise UsageError('%s: missing credentials: give "UserName" and "Password", '
                         'or "AccessKey" and "SecretKey"' % where)
    if len(given) == 2:
        raise UsageError('%s: give either "UserName" and "Password" or "AccessKey" and '
                         '"SecretKey", not both' % where)
    first, second = given[0]
    for key, other in ((first, second), (second, first)):
        if values[key] is None:
            raise UsageError('%s: "%s" is given but "%s" is missing' % (where, other, key))
    pair = (values[first], values[second])
    return (pair, (None, None)) if first == "UserName" else ((None, None), pair)


def _check_url(url: str, where: str) -> str:
    scheme, sep, rest = url.strip().partition("://")
    if sep and scheme.lower() not in ("http", "https"):
        raise UsageError('%s.URL: scheme "%s" is not supported; use https:// or http://'
                         % (where, scheme))
    url = scheme.lower() + sep + rest if sep else scheme
    # Same rule as the official onevizion client: no scheme means https.
    url = (url if sep else "https://" + url).rstrip("/")
    try:
        parts = urlsplit(url)
        parts.port  # raises ValueError for a bad port
    except ValueError:
        raise UsageError("%s.URL: not a valid URL" % where) from None
    if not parts.hostname or any(ch.isspace() for ch in url):
        raise UsageError("%s.URL: not a valid URL (expected e.g. https://example.onevizion.com)"
                         % where)
    if "@" in parts.netloc:
        # Credentials belong in UserName/Password, where they are kept out of logs.
        raise UsageError('%s.URL: must not hold credentials; use "UserName" and "Password"'
                         % where)
    if parts.query or parts.fragment:
        raise UsageError("%s.URL: must not have a query or fragment" % where)
    return url


def _check_timezone(name: Optional[str], where: str) -> Optional[str]:
    if name is None:
        return None
    from hub.zones import known
    if not known(name):   # IANA names only: a file path or a POSIX TZ string is refused too
        guess = _timezone_guess(name)
        hint = ' (did you mean "%s"?)' % guess if guess else ', e.g. "America/New_York"'
        raise UsageError('%s.Timezone: "%s" is not a known IANA time zone%s' % (where, name, hint))
    return name


def _timezone_guess(name: str) -> Optional[str]:
    try:
        import zoneinfo  # Python 3.9+; the list may be empty without system tzdata
        known = zoneinfo.available_timezones()
    except Exception:  # noqa: BLE001 - a hint is optional
        return None
    return did_you_mean(name, sorted(known)) if known else None


def _check_verify(verify_tls: Optional[bool], ca_bundle: Optional[str], path: str,
                  where: str) -> Union[bool, str]:
    if ca_bundle is None:
        return True if verify_tls is None else verify_tls
    if verify_tls is False:
        raise UsageError('%s: "CABundle" and "VerifyTLS": false contradict each other; '
                         'give one' % where)
    # Relative to Passwords.json, not to cron's working directory.
    bundle = os.path.join(os.path.dirname(os.path.abspath(path)), os.path.expanduser(ca_bundle))
    if not os.path.isfile(bundle):
        raise UsageError("%s.CABundle: no such file: %s" % (where, bundle))
    try:
        # Loaded once here: a file that is not a PEM bundle would otherwise fail at the first request.
        ssl.create_default_context(cafile=bundle)
    except (ssl.SSLError, OSError, ValueError):
        raise UsageError("%s.CABundle: %s holds no CA certificate (PEM) that can be loaded" % (where, bundle)) from None
    return bundle


def _mode_warnings(path: str) -> List[str]:
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if not mode & 0o077:
        return []
    how = "readable by others" if mode & 0o044 else "open to others"
    return ["%s is %s (mode %04o); chmod 600 it" % (path, how, mode)]


# ---------------------------------------------------------------- Integration.json

@dataclass(frozen=True)
class IntegrationEntry:
    """One entry of Integration.json. ExecutablePath is kept raw: splitting and
    ${VAR} expansion belong to whoever starts the child."""

    name: str
    executable_path: str
    working_dir: Optional[str] = None
    timeout: Optional[float] = None
    environment: Mapping[str, str] = field(default_factory=lambda: types.MappingProxyType({}))
    shell: bool = False
    # Folders under which a printed file may be uploaded, as written (relative ones are against
    # the working directory: hub.uploads resolves them). None: the default (hub.uploads).
    upload_dirs: Optional[Tuple[str, ...]] = None


def load_integrations(path: str) -> List[IntegrationEntry]:
    """Read Integration.json: a non-empty JSON list of entries (SPEC section 3).

    Errors name the entry (1-based, with its IntegrationName when it has one) and the
    key. Environment values may be strings or numbers (numbers become their JSON text,
    e.g. 8080 -> "8080"); booleans and null are refused as ambiguous. Two entries with
    one IntegrationName are an error: --name and the overlap check select by name.
    """
    data = read_json(path)
    if isinstance(data, dict) and "IntegrationName" in data:
        raise UsageError("%s: expected a JSON list of entries; wrap the object in [ ]" % path)
    if not isinstance(data, list):
        raise UsageError("%s: expected a JSON list of entries, got %s" % (path, type_name(data)))
    if not data:
        raise UsageError("%s: the list is empty; give at least one integration" % path)
    entries, seen = [], {}
    for number, item in enumerate(data, 1):
        entry = _entry(item, "%s: entry #%d" % (path, number))
        if entry.name in seen:
            raise UsageError('%s: entries #%d and #%d both have IntegrationName "%s"'
                             % (path, seen[entry.name], number, entry.name))
        seen[entry.name] = number
        entries.append(entry)
    return entries


def _entry(item: Any, where: str) -> IntegrationEntry:
    if not isinstance(item, dict):
        raise UsageError("%s: expected an object, got %s" % (where, type_name(item)))
    name = item.get("IntegrationName")
    if isinstance(name, str) and name.strip():
        where = '%s ("%s")' % (where, name)
    for key in item:
        if key not in _ENTRY_KEYS:
            raise UsageError(unknown_key_message(where, key, _ENTRY_KEYS))
    for key in ("IntegrationName", "ExecutablePath"):
        if item.get(key) is None:
            raise UsageError('%s: missing "%s"' % (where, key))
    timeout = item.get("Timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not math.isfinite(timeout) or timeout <= 0):
        raise UsageError("%s.Timeout: expected a number of seconds greater than 0, got %s"
                         % (where, json.dumps(timeout)))
    return IntegrationEntry(
        name=_opt(item, "IntegrationName", str, where),
        executable_path=_opt(item, "ExecutablePath", str, where),
        working_dir=_opt(item, "ExecutableWorkingDir", str, where),
        timeout=None if timeout is None else float(timeout),
        environment=_environment(item.get("Environment"), where + ".Environment"),
        shell=bool(_opt(item, "Shell", bool, where)),
        upload_dirs=_upload_dirs(item.get("UploadDirs"), where + ".UploadDirs"))


def _upload_dirs(value: Any, where: str) -> Optional[Tuple[str, ...]]:
    """A list of folder names; an empty list is allowed and means no printed file is uploaded."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise UsageError('%s: expected a list of folders such as ["out", "/var/exports"], got %s'
                         % (where, type_name(value)))
    for number, folder in enumerate(value, 1):
        if not isinstance(folder, str):
            raise UsageError("%s: item %d: expected a string, got %s" % (where, number, type_name(folder)))
        if not folder.strip():
            raise UsageError("%s: item %d: must not be empty" % (where, number))
        if "\0" in folder:
            raise UsageError("%s: item %d: must not contain a NUL character" % (where, number))
    return tuple(value)


def _environment(env: Any, where: str) -> Mapping[str, str]:
    if env is None:
        env = {}
    if not isinstance(env, dict):
        raise UsageError("%s: expected an object of names to strings, got %s" % (where, type_name(env)))
    result: Dict[str, str] = {}
    for name, value in env.items():
        if not name or "=" in name or "\0" in name:
            raise UsageError('%s: "%s" is not a valid variable name' % (where, name))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = json.dumps(value)
        if not isinstance(value, str):
            raise UsageError("%s.%s: expected a string, got %s" % (where, name, type_name(value)))
        if "\0" in value:
            raise UsageError("%s.%s: must not contain a NUL character" % (where, name))
        result[name] = value
    return types.MappingProxyType(result)
