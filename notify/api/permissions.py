"""The API's permission check (``REST_FRAMEWORK["DEFAULT_PERMISSION_CLASSES"]``): the caller's
key must hold the scope its view names in ``required_scope`` (notify.scopes), else 403
``missing_scope`` with ``error.scope`` naming it. A view that names none needs ``admin``, so a
view added without thinking of scopes is closed, not open; public views (the API root, the
schema and its pages) set ``permission_classes = []``. tests/test_scopes.py checks that every
view of notify/api/urls.py is one or the other."""

from __future__ import annotations

from rest_framework import exceptions, permissions

from .. import scopes


class MissingScope(exceptions.PermissionDenied):
    """403: the API key lacks ``scope`` (rendered by notify.api.errors as ``missing_scope``)."""

    default_code = "missing_scope"

    def __init__(self, scope: str):
        self.scope = scope
        super().__init__(f"this API key lacks the '{scope}' scope (or 'admin')", code="missing_scope")


def required_scope(view) -> str:
    """The scope ``view`` (a class or instance) needs: its ``required_scope``, else ``admin``."""
    return getattr(view, "required_scope", None) or scopes.ADMIN


class HasRequiredScope(permissions.BasePermission):
    """Authenticated, through a key holding the view's scope. Unauthenticated: 401 (DRF turns a
    refusal without credentials into NotAuthenticated); without the scope: MissingScope."""

    def has_permission(self, request, view) -> bool:
        principal = request.user
        if not getattr(principal, "is_authenticated", False):
            return False
        needed = required_scope(view)
        if not scopes.grants(getattr(principal, "scopes", ()), needed):
            raise MissingScope(needed)
        return True
