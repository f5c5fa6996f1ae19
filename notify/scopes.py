"""The scopes of an API key: what it may do. The one list of them; the model field
(notify.models.AppAPIKey.scopes), the API's permission check (notify.api.permissions), the
admin's checkboxes and the OpenAPI schema all read it.

Each API view names the one scope it needs in ``required_scope`` (a name below); ``admin``
grants every scope.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError

SEND = "send"
RECIPIENTS = "recipients"
TEMPLATES = "templates"
ANALYTICS = "analytics"
ADMIN = "admin"

#: name → what it allows, in the order the admin and the README show them.
SCOPES = {
    SEND: "send notifications (one, a batch or a bulk call, a broadcast), read and cancel them, report a delivery opened",
    RECIPIENTS: "manage and erase recipients, their devices and preferences; make preference links",
    TEMPLATES: "manage templates, their versions and previews, and categories",
    ANALYTICS: "read analytics (JSON or CSV)",
    ADMIN: "everything, the other scopes included, and the app's own provider credentials",
}

#: What a key gets unless given its scopes: everything but ``admin``.
DEFAULT = [name for name in SCOPES if name != ADMIN]


def default() -> list[str]:
    """The scopes of a new key (a fresh list: the model field's callable default)."""
    return list(DEFAULT)


def validate(scopes) -> None:
    """Raise django's ValidationError unless ``scopes`` is a list of distinct names of SCOPES."""
    if not isinstance(scopes, (list, tuple)):
        raise ValidationError("scopes must be a list of scope names", code="invalid")
    unknown = [name for name in scopes if name not in SCOPES]
    if unknown:
        raise ValidationError(f"unknown scopes: {', '.join(map(str, unknown))} (known: {', '.join(SCOPES)})",
                              code="invalid_choice")
    if len(set(scopes)) != len(scopes):
        raise ValidationError("a scope is listed twice", code="duplicate")


def grants(held, needed: str) -> bool:
    """Whether a key holding the scopes ``held`` may do what needs ``needed``."""
    return needed in held or ADMIN in held
