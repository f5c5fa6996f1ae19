"""Port layout of the sandbox, counted from ``--port-base`` (contract: sandbox/README.md), and the
host names it binds (``--host``) and advertises (``--public-host``)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

HOST = "127.0.0.1"
DEFAULT_PORT_BASE = 9400

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
                       r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$")


def normalize_host(host: str) -> str:
    """``host`` without surrounding blanks or IPv6 brackets; DNS names lower-cased.

    Raises:
        ValueError: not an IP address nor a DNS host name (no scheme, port or path allowed).
    """
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if not _HOSTNAME.match(text):
        raise ValueError(f"not an IP address or host name: {host!r}")
    return text.lower()


def url_host(host: str) -> str:
    """``host`` as written in a URL authority: IPv6 literals in brackets."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def connect_host(bind_host: str) -> str:
    """Where to connect to reach a server bound to ``bind_host`` from this machine (the wildcard
    addresses ``0.0.0.0`` / ``::`` are reached through loopback)."""
    if bind_host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if bind_host == "::":
        return "::1"
    return bind_host


@dataclass(frozen=True)
class Ports:
    """TCP ports, one per service, and the host name clients use to reach them.

    Offsets from ``base``: +0 control API (plain HTTP), +1 APNs (h2/TLS), +2 FCM v1 and its OAuth2
    token endpoint (TLS), +3 Web Push (TLS), +4 Twilio (TLS), +5 SES v2 (TLS), +6 SMTP, +7 SNS
    (TLS: signing certificate, subscription confirmation).
    ``public_host`` (``--public-host``, default 127.0.0.1) is the host written into every URL the
    sandbox advertises (sandbox.json / sandbox.env, FCM ``token_uri``, Web Push endpoints).
    """

    base: int
    public_host: str = HOST

    @property
    def control(self) -> int:
        return self.base

    @property
    def apns(self) -> int:
        return self.base + 1

    @property
    def fcm(self) -> int:
        return self.base + 2

    @property
    def webpush(self) -> int:
        return self.base + 3

    @property
    def twilio(self) -> int:
        return self.base + 4

    @property
    def ses(self) -> int:
        return self.base + 5

    @property
    def smtp(self) -> int:
        return self.base + 6

    @property
    def sns(self) -> int:
        return self.base + 7

    def https(self, port: int) -> str:
        """``https://<public host>:<port>`` (no trailing slash)."""
        return f"https://{url_host(self.public_host)}:{port}"

    def http(self, port: int) -> str:
        """``http://<public host>:<port>`` (no trailing slash)."""
        return f"http://{url_host(self.public_host)}:{port}"

    def all(self) -> list[int]:
        """Every port, control first."""
        return [self.base + i for i in range(8)]
