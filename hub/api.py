"""The only module that talks HTTP to OneVizion (REST API v3).

One `requests.Session` with a small connection pool serves every call, so records
reuse connections. Every call has a timeout. Nothing here retries: retrying is the
journal's and the sender's business, because only they know whether a record is
safe to send again. Nothing here prints or exits, and no message carries a
credential.

From the official `onevizion` client the hub takes what serves: its token header
(`onevizion.HTTPBearerAuth`, through hub.config.Installation.auth) and its URL
scheme rule (in hub.config). Its `Trackor` class is not used for traffic because it
prints on errors, opens a connection per call and waits up to 300 s.

Failures become hub.errors:
    UnreachableError   no answer: refused, DNS, TLS, timeout, dropped connection
                       -- or a 404 from a server whose /api/v3/server_info is not
                       OneVizion's (a wrong URL path in Passwords.json)
    ApiError           an answer with an error status (401, 403, 404, 5xx...) or a
                       body that is not what the API returns (an HTML login page);
                       error bodies are cut short and every credential in them masked
"""

from __future__ import annotations

import json
import warnings
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import quote

import requests
import urllib3
from requests.adapters import HTTPAdapter

from hub.errors import ApiError, UnreachableError

# (connect, read) seconds: long enough for a busy installation, short enough that a
# hung server costs one retry, not a cron slot.
DEFAULT_TIMEOUT = (10.0, 30.0)
# An upload's answer comes after the installation has stored the whole file.
UPLOAD_TIMEOUT = (10.0, 300.0)


def exact(value: Any) -> str:
    """A filter value that matches exactly: OneVizion treats a double-quoted value as exact."""
    return f'"{value}"'


class OneVizion:
    """A connection to one OneVizion installation."""

    def __init__(self, installation, timeout=DEFAULT_TIMEOUT, pool_size: int = 4):
        self.base = installation.url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.auth = installation.auth()
        self.session.verify = installation.verify
        if installation.verify is False:
            # The administrator chose VerifyTLS false; urllib3 would print a warning to stderr on
            # every request, into cron's mail.
            warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
        self.session.headers["Accept"] = "application/json"
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=max(pool_size, 1), max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.host = requests.utils.urlparse(self.base).netloc
        self._masks = _masks(installation, self.session.auth)
        self._is_onevizion: Optional[bool] = None

    def close(self) -> None:
        self.session.close()

    # -- the calls the hub makes ------------------------------------------------------

    def find(self, trackor_type: str, filters: Mapping[str, Any], fields: Sequence[str] = (),
             sort: Optional[str] = None, per_page: Optional[int] = None) -> List[Dict[str, Any]]:
        """Trackors of a type matching every filter (values are sent as given: wrap them
        with `exact()` to match exactly). Returns the JSON list."""
        params: List[Tuple[str, str]] = []
        if fields:
            params.append(("fields", ",".join(fields)))
        params.extend((name, str(value)) for name, value in filters.items())
        if sort:
            params.append(("sort", sort))
        if per_page:
            params.append(("page", "1"))
            params.append(("per_page", str(per_page)))
        data = self._request("GET", f"/api/v3/trackor_types/{_seg(trackor_type)}/trackors", params=params)
        if not isinstance(data, list):
            raise ApiError(f"OneVizion answered a read of {trackor_type} with something other than a list", 200)
        return data

    def create(self, trackor_type: str, fields: Mapping[str, Any],
               parents: Iterable[Tuple[str, str]] = ()) -> Dict[str, Any]:
        """Create one trackor. `parents` are (trackor type, TRACKOR_KEY) pairs.
        Returns {"TRACKOR_ID": ..., "TRACKOR_KEY": ...}."""
        body = {
            "fields": dict(fields),
            "parents": [{"trackor_type": t, "filter": {"TRACKOR_KEY": k}} for t, k in parents],
        }
        data = self._request("POST", f"/api/v3/trackor_types/{_seg(trackor_type)}/trackors", json_body=body)
        if not isinstance(data, dict) or "TRACKOR_ID" not in data:
            raise ApiError(f"OneVizion answered a create of {trackor_type} without a TRACKOR_ID", 200)
        return data

    def update(self, trackor_id: int, fields: Mapping[str, Any]) -> None:
        """Update one trackor by its id (flat body)."""
        self._request("PUT", f"/api/v3/trackors/{int(trackor_id)}", json_body=dict(fields))

    def update_where(self, trackor_type: str, filters: Mapping[str, Any], fields: Mapping[str, Any]) -> None:
        """Update the trackors of a type that match the filters (wrapped body)."""
        params = [(name, str(value)) for name, value in filters.items()]
        self._request("PUT", f"/api/v3/trackor_types/{_seg(trackor_type)}/trackors",
                      params=params, json_body={"fields": dict(fields)})

    def upload(self, trackor_id: int, field: str, file_name: str, stream) -> None:
        """Upload a file (an open binary file) into an electronic-file field."""
        self._request("POST", f"/api/v3/trackor/{int(trackor_id)}/file/{_seg(field)}",
                      params=[("file_name", file_name)], files={"file": (file_name, stream)},
                      expect_json=False, timeout=UPLOAD_TIMEOUT)

    # -- one request, its errors ----------------------------------------------------

    def _request(self, method: str, path: str, params=None, json_body=None, files=None,
                 expect_json: bool = True, timeout=None) -> Any:
        url = self.base + path
        # verify is passed on every call: requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE in the
        # environment override the session's verify, which would silently ignore CABundle and
        # VerifyTLS false on any server that sets them.
        kwargs: Dict[str, Any] = {"params": params, "timeout": timeout or self.timeout, "allow_redirects": False,
                                  "verify": self.session.verify}
        if json_body is not None:
            kwargs["data"] = json.dumps(json_body).encode("utf-8")
            kwargs["headers"] = {"Content-Type": "application/json"}
        if files is not None:
            kwargs["files"] = files
        try:
            response = self.session.request(method, url, **kwargs)
        except requests.exceptions.SSLError:
            raise UnreachableError(
                f"TLS verification failed for {self.host}: give the installation's CA in "
                f"Passwords.json CABundle, or set VerifyTLS false if you trust the network") from None
        except requests.exceptions.Timeout:
            raise UnreachableError(f"OneVizion at {self.host} did not answer in time") from None
        except requests.exceptions.InvalidURL:
            raise UnreachableError(f"the URL in Passwords.json is not a valid address ({self.host})") from None
        except requests.exceptions.RequestException as exc:
            raise UnreachableError(f"cannot reach OneVizion at {self.host}: {_reason(exc)}") from None
        return self._answer(method, path, response, expect_json)

    def _answer(self, method: str, path: str, response, expect_json: bool) -> Any:
        status = response.status_code
        where = f"{method} {path.split('?')[0]}"
        if 300 <= status < 400:
            raise ApiError(f"OneVizion redirected {where} to {response.headers.get('Location', '?')}: "
                           f"is URL in Passwords.json the installation's address?", status)
        if status >= 400:
            body = self._short(response.text)
            if status == 404 and not self._looks_like_onevizion():
                raise UnreachableError(f"{self.base} does not answer like a OneVizion installation (404 to {where}, "
                                       f"and no {SERVER_INFO}): is URL in Passwords.json the installation's address?")
            if status == 401:
                raise ApiError(f"OneVizion at {self.host} refused the credentials in Passwords.json (401)", status, body)
            if status == 403:
                raise ApiError(f"OneVizion refused {where}: this user lacks permission (403): {body}", status, body)
            raise ApiError(f"OneVizion answered {status} to {where}: {body}", status, body)
        if not expect_json:
            return response.text
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            kind = response.headers.get("Content-Type", "no content type")
            raise ApiError(f"OneVizion answered {where} with {kind}, not JSON: is URL in Passwords.json "
                           f"the installation's address?", status, self._short(response.text)) from None

    def _short(self, text: str) -> str:
        """An error body, shortened and with every credential masked: a proxy may echo the request."""
        text = text or ""
        for mask in self._masks:
            text = text.replace(mask, "***")
        return _short(text)

    def _looks_like_onevizion(self) -> bool:
        """Whether the public GET /api/v3/server_info answers with a JSON object: a 404 from a
        OneVizion means a missing trackor type, field or id; from anything else, a wrong URL.
        Only a definite answer is remembered; no answer at all keeps the 404 as OneVizion's."""
        if self._is_onevizion is None:
            try:
                answer = self.session.get(self.base + SERVER_INFO, timeout=self.timeout, allow_redirects=False,
                                          verify=self.session.verify)
            except requests.exceptions.RequestException:
                return True
            try:
                self._is_onevizion = answer.status_code == 200 and isinstance(answer.json(), dict)
            except ValueError:
                self._is_onevizion = False
        return self._is_onevizion


SERVER_INFO = "/api/v3/server_info"


def _masks(installation, auth) -> List[str]:
    """Every text that would give a credential away: the secrets and the Authorization header values."""
    masks = [value for value in getattr(installation, "secrets", lambda: ())() if value]
    probe = requests.Request("GET", "http://localhost/", auth=auth).prepare()
    header = probe.headers.get("Authorization") or ""
    if header:
        masks.append(header)
        masks.append(header.partition(" ")[2])
    return sorted({m for m in masks if len(m) >= 4}, key=len, reverse=True)


def _seg(name: str) -> str:
    return quote(str(name), safe="")


def _short(text: str, limit: int = 300) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _reason(exc: Exception) -> str:
    """The last, most specific cause of a connection error, without URLs that could carry a query."""
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "Temporary failure in name resolution",
                   "Connection reset", "RemoteDisconnected", "Connection aborted", "No route to host"):
        if marker in text:
            return marker.lower()
    return type(exc).__name__
