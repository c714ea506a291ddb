"""Credentials in URLs (`http://user:password@host`) masked wherever a URL is shown: the
settings `hearthbot check` prints, its lines, log lines, error messages, `!status`."""

from __future__ import annotations

import re

MASK = "***"
# scheme://userinfo@ : up to the authority's last "@" (an unescaped one may be in a password);
# the authority ends at "/", "?", "#" or whitespace.
_USERINFO = re.compile(r"([a-z][a-z0-9+.-]*://)[^/?#\s]*@", re.IGNORECASE)


def mask_url(text: str) -> str:
    """`text` (a URL, or any text with URLs in it) with each URL's user and password shown as
    ***: `http://user:pass@gpu-box:8080/v1` → `http://***@gpu-box:8080/v1`."""
    return _USERINFO.sub(lambda m: m.group(1) + MASK + "@", text)
