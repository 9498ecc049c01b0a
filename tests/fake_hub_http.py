"""What the two stand-in hubs (fake_hf_hub.py, fake_modelers_hub.py) answer HTTP with. For tests only."""

from __future__ import annotations

import hashlib

__all__ = ["git_blob_sha1", "send"]


def git_blob_sha1(data: bytes) -> str:
    """The id git gives a file's bytes (what both hubs use as the ETag of a non-LFS file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def send(h, status: int, body: bytes, content_type: str, extra: dict | None = None, cut: int | None = None):
    """Answer the request of handler ``h``; with ``cut``, send only that many bytes of the body and drop
    the connection (an interrupted download)."""
    h.send_response(status)
    h.send_header("Content-Type", content_type)
    h.send_header("Content-Length", str(len(body)))
    for key, value in (extra or {}).items():
        h.send_header(key, value)
    h.end_headers()
    if h.command == "HEAD":
        return
    h.wfile.write(body if cut is None else body[:cut])
    h.wfile.flush()
    if cut is not None:  # promised len(body) bytes, sent `cut`: drop the connection mid-body
        h.close_connection = True
