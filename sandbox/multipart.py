"""A small multipart/form-data parser (the cgi module is gone from newer Pythons).

Only what an upload needs: split the body on the boundary, read each part's Content-Disposition
name and filename, keep the bytes as they are.
"""

from __future__ import annotations

import re
from email.message import Message

from sandbox.schema import bad


def boundary_of(content_type: str) -> bytes:
    """The boundary of a multipart/form-data Content-Type; 400 when it is not one."""
    message = Message()
    message["content-type"] = content_type or ""
    if message.get_content_type() != "multipart/form-data":
        raise bad("Expected multipart/form-data, got %s" % (content_type or "no content type"))
    boundary = message.get_param("boundary")
    if not boundary:
        raise bad("multipart/form-data without a boundary")
    return str(boundary).encode("latin-1")


def parse(body: bytes, content_type: str) -> dict:
    """{part name: (filename or None, bytes)} of a multipart/form-data body."""
    delimiter = b"--" + boundary_of(content_type)
    parts = {}
    chunks = body.split(delimiter)
    if len(chunks) < 3:
        raise bad("Malformed multipart body")
    for chunk in chunks[1:-1]:
        # Each chunk is CRLF, headers, CRLF CRLF, content, CRLF.
        if chunk.startswith(b"\r\n"):
            chunk = chunk[2:]
        head, sep, content = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise bad("Malformed multipart part")
        if content.endswith(b"\r\n"):
            content = content[:-2]
        name, filename = _disposition(head.decode("utf-8", "replace"))
        if name is not None:
            parts[name] = (filename, content)
    return parts


def _disposition(head: str):
    for line in head.split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() == "content-disposition":
            return _param(value, "name"), _param(value, "filename")
    return None, None


def _param(header: str, wanted: str):
    # Quoted values may hold ';'; match name="..." or name=token, but not "filename" for "name".
    match = re.search(r'(?:^|;)\s*%s="((?:[^"\\]|\\.)*)"' % wanted, header) or \
        re.search(r"(?:^|;)\s*%s=([^;\s]*)" % wanted, header)
    return match.group(1).replace('\\"', '"') if match else None
