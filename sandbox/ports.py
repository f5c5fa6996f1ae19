"""Port layout of the sandbox, counted from ``--port-base`` (contract: sandbox/README.md)."""

from __future__ import annotations

from dataclasses import dataclass

HOST = "127.0.0.1"
DEFAULT_PORT_BASE = 9400


@dataclass(frozen=True)
class Ports:
    """TCP ports on 127.0.0.1, one per service.

    Offsets from ``base``: +0 control API (plain HTTP), +1 APNs (h2/TLS), +2 FCM v1 and its OAuth2
    token endpoint (TLS), +3 Web Push (TLS), +4 Twilio (TLS), +5 SES v2 (TLS), +6 SMTP.
    """

    base: int

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

    def https(self, port: int) -> str:
        """``https://127.0.0.1:<port>`` (no trailing slash)."""
        return f"https://{HOST}:{port}"

    def all(self) -> list[int]:
        """Every port, control first."""
        return [self.base + i for i in range(7)]
