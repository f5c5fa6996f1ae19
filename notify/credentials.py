"""An app's own provider settings (credentials, sender, topic...): which it may set, the checks
they pass before anything is written, how they are stored, and what may be shown of them.

The rules come from the adapter's declarations (``channels.base.Setting``): an app may set the
settings its adapter declares ``per_app`` (its keys, account, sender; not the deployment's file
paths, CA bundle, timeouts or network allowances), and a setting declared ``secret`` is never
shown again once stored: the API, the admin and the logs see only that it is set. No provider
is named here.

Stored values overlay the deployment's config (notify.providers.app_config): a key the app does
not set keeps the deployment's value. Every write goes through :func:`save` (sealed with
notify.sealing, ``version`` bumped), every read of the values through :func:`values_of`.
"""

from __future__ import annotations

from typing import Any, Mapping

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from channels import registry
from channels.base import Setting
from channels.errors import ChannelConfigurationError

from . import providers, sealing, validators
from .errors import SendRejected
from .models import ProviderCredential

#: Longest value taken (characters): a service-account JSON key is about 2,400.
MAX_VALUE_CHARS = 20_000


class CredentialsRefused(SendRejected):
    """Settings the provider's adapter refuses to be built with (``invalid_credentials``, 400),
    or a provider no adapter is registered for (``unknown_provider``, 404)."""


def adapter_class(provider: str):
    """The adapter class of ``provider``.

    Raises:
        CredentialsRefused: ``unknown_provider`` (404).
    """
    try:
        return registry.provider_class(provider)
    except KeyError:
        known = ", ".join(registry.providers())
        raise CredentialsRefused("unknown_provider", f"no provider named {provider!r}; known: {known}",
                                 status=404, fields={"provider": [f"one of {known}"]}) from None


def app_settings(provider: str) -> tuple[Setting, ...]:
    """The settings an app may set for ``provider`` (CredentialsRefused for an unknown one)."""
    return adapter_class(provider).app_settings()


def secret_keys() -> frozenset[str]:
    """Keys of every registered adapter's secret settings (notify.logmask masks fields so named)."""
    return frozenset(s.key for cls in registry.providers().values() for s in cls.settings if s.secret)


def check_values(provider: str, values: Any) -> dict[str, str]:
    """``values`` (setting key → text) checked against ``provider``'s declarations.

    Raises:
        ValidationError: a dict of field → errors with codes: ``unknown_setting`` (no such
            setting), ``not_per_app`` (the deployment's alone), ``invalid`` (not text), ``blank``
            (leave it out to use the deployment's), ``max_length``; ``required`` under
            ``non_field_errors`` for no value at all.
        CredentialsRefused: ``unknown_provider``.
    """
    declared = {s.key: s for s in adapter_class(provider).settings}
    if not isinstance(values, dict):
        raise ValidationError({"non_field_errors": [ValidationError(
            "a JSON object of setting → value", code="invalid")]})
    if not values:
        raise ValidationError({"non_field_errors": [ValidationError(
            "no setting given: DELETE the provider's credentials to send with the deployment's", code="required")]})
    errors: dict[str, list[ValidationError]] = {}
    for key, value in values.items():
        setting = declared.get(key)
        if setting is None:
            problem = ValidationError(f"not a setting of {provider}; an app may set: "
                                      f"{', '.join(s.key for s in app_settings(provider))}", code="unknown_setting")
        elif not setting.per_app:
            problem = ValidationError("the deployment's setting: an app cannot set its own", code="not_per_app")
        elif not isinstance(value, str):
            problem = ValidationError("must be a string", code="invalid")
        elif not value.strip():
            problem = ValidationError("empty: leave it out to use the deployment's value", code="blank")
        elif len(value) > MAX_VALUE_CHARS:
            problem = ValidationError(f"at most {MAX_VALUE_CHARS} characters", code="max_length")
        elif validators.UNSTORABLE.search(value):
            problem = ValidationError("holds a NUL or a lone surrogate: not text", code="invalid")
        else:
            continue
        # Escaped: a name with a lone surrogate, echoed as is, would make the answer unencodable.
        errors[validators.escaped(str(key))] = [problem]
    if errors:
        raise ValidationError(errors)
    return dict(values)


def check_adapter(provider: str, values: Mapping[str, str]) -> None:
    """Build ``provider``'s adapter with ``values`` over the deployment's config and close it, as
    a worker would (no network): keys that do not parse, combinations the adapter refuses.

    Raises:
        CredentialsRefused: ``invalid_credentials``, with the adapter's reason (its messages
            name settings and files, never a value).
    """
    try:
        adapter_class(provider)(providers.app_config(provider, values)).close()
    except ChannelConfigurationError as exc:
        raise CredentialsRefused("invalid_credentials", f"the {provider} adapter refuses these settings: {exc}",
                                 fields={"non_field_errors": [str(exc)]}) from None
    except (ValueError, TypeError) as exc:
        # A client library refusing a value: its message may quote the value, so only its kind.
        raise CredentialsRefused("invalid_credentials", f"the {provider} adapter refuses these settings "
                                                        f"({type(exc).__name__})") from None


def save(app_id: int, provider: str, values: Mapping[str, str]) -> tuple[ProviderCredential, bool]:
    """Store ``values`` (already checked) as the app's own settings of ``provider``, replacing
    any earlier ones; ``version`` is 1 for a new row and bumped on a change, so workers rebuild
    the app's adapter on their next send (the same values again change nothing). Returns (row,
    created)."""
    sealed = sealing.seal(values)
    for _ in range(2):
        try:
            with transaction.atomic():
                row = ProviderCredential.objects.select_for_update().filter(app_id=app_id, provider=provider).first()
                if row is None:
                    return ProviderCredential.objects.create(app_id=app_id, provider=provider, sealed=sealed), True
                try:
                    if values_of(row) == dict(values):
                        return row, False
                except sealing.SealError:
                    pass  # unreadable: replaced
                row.sealed, row.version = sealed, row.version + 1
                row.save(update_fields=["sealed", "version", "updated_at"])
                return row, False
        except IntegrityError:
            continue  # a concurrent first write created the row: this one is its update
    raise RuntimeError("provider credentials changed concurrently twice")  # pragma: no cover


def reseal_all(batch: int = 100, progress=None) -> dict[str, int]:
    """Re-encrypt every row with the first key of NOTIFY_CREDENTIAL_KEYS (key rotation), in
    batches of ``batch`` rows, each batch one short transaction holding only its rows' locks: the
    API and the workers keep going, and every row opens with either key meanwhile. Values and
    ``version`` stay (workers keep their clients). Safe to run again: rows already sealed with
    the first key are left as they are. ``progress(counts)`` is called after each batch.

    Returns:
        ``{"resealed", "current", "unreadable"}``: rows re-encrypted, rows already under the
        first key, rows no configured key opens (left as they are; they need their old key
        back, or to be set again).
    """
    counts = {"resealed": 0, "current": 0, "unreadable": 0}
    last = 0
    while True:
        with transaction.atomic():
            rows = list(ProviderCredential.objects.select_for_update().filter(pk__gt=last).order_by("pk")[:batch])
            for row in rows:
                if sealing.is_current(row.sealed):
                    counts["current"] += 1
                    continue
                try:
                    sealed = sealing.reseal(row.sealed)
                except sealing.SealError:
                    counts["unreadable"] += 1
                    continue
                # A queryset update: updated_at stays (the values did not change).
                ProviderCredential.objects.filter(pk=row.pk).update(sealed=sealed)
                counts["resealed"] += 1
        if not rows:
            return counts
        last = rows[-1].pk
        if progress is not None:
            progress(dict(counts))


def values_of(row: ProviderCredential) -> dict[str, str]:
    """The stored values of ``row``, in clear (for building its adapter; never for showing).

    Raises:
        sealing.SealError: no configured key opens them.
    """
    return sealing.unseal(row.sealed)


def stored_values(app_id: int, provider: str) -> dict[str, str] | None:
    """App ``app_id``'s own values of ``provider`` in clear (one query), None when it has none.

    Raises:
        sealing.SealError: no configured key opens them.
    """
    row = ProviderCredential.objects.filter(app_id=app_id, provider=provider).only("sealed").first()
    return values_of(row) if row is not None else None


def current_version(app_id: int, provider: str) -> int | None:
    """The version of app ``app_id``'s own settings of ``provider`` now, None when it has none."""
    return ProviderCredential.objects.filter(app_id=app_id, provider=provider).values_list(
        "version", flat=True).first()


def describe(row: ProviderCredential) -> dict[str, Any]:
    """What may be shown of ``row``: its non-secret values, the keys of the secrets it sets
    (never their values), its version and when it changed; ``readable`` False when no
    configured key opens it (then nothing else of it is known).
    """
    cls = registry.providers().get(row.provider)
    # An adapter no longer registered declares nothing: then nothing of it is shown as a value.
    secret = {s.key for s in cls.settings if s.secret} if cls else None
    try:
        values = values_of(row)
    except sealing.SealError:
        values, readable = {}, False
    else:
        readable = True
    return {"provider": row.provider, "channel": cls.name if cls else None,
            "values": {k: v for k, v in sorted(values.items()) if secret is not None and k not in secret},
            "secrets": sorted(k for k in values if secret is None or k in secret),
            "version": row.version, "updated_at": row.updated_at, "readable": readable}
