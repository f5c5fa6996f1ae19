"""Redis cache in front of the look-ups on the API path.

What is cached: a recipient's send profile (its row, active devices and preferences in one entry),
each template with its latest published version (and each version a send pins), and each API key's stored hash and scopes (looked up by the key's public prefix). Entries
are deleted by model signals on every save or delete (and, for API keys, on every
``QuerySet.update``: notify.models.apps.api_keys_updated), so a change made through the API, the
Django admin or the ORM takes effect on the very next request; the TTL only bounds memory (and
changes made in raw SQL).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver

from .models import AddressSuppression, App, AppAPIKey, Category, Device, Preference, Recipient, Template, TemplateVersion
from .models.apps import api_keys_updated

PROFILE_TTL = 300  # seconds
TEMPLATE_TTL = 300
#: Short, because raw SQL bypasses the signals that delete the entry; a revocation, expiry or
#: scope change through the admin, ``save()`` or ``QuerySet.update`` applies from its commit on.
API_KEY_TTL = 30


def redis_key(*parts: object) -> str:
    """A key for raw Redis commands (breakers, rate limits, webhook replays), under the same
    prefix as the cache's own keys (``NOTIFY_CACHE_PREFIX``)."""
    return ":".join([settings.CACHES["default"].get("KEY_PREFIX", ""), *map(str, parts)])


def profile_key(app_id: int, external_id: str) -> str:
    return f"recipient:{app_id}:{external_id}"


def template_key(app_id: int, name: str, version: int | None = None) -> str:
    return f"template:{app_id}:{name}:{version or 'latest'}"


def load_profile(app_id: int, external_id: str) -> dict | None:
    """Return the send profile of a recipient, or None if there is no such recipient.

    Shape: ``{"id", "external_id", "name", "locale", "timezone", "email", "phone", "quiet_hours",
    "muted", "muted_until" (epoch seconds or None), "devices": [{"id", "platform", "token", "subscription"}], "preferences": {"<channel>|<category>": bool},
    "suppressed": {"<channel>": reason}}``. A miss costs four queries (recipient, devices,
    preferences, suppressions of its addresses).
    """
    profile = cache.get(profile_key(app_id, external_id))
    return profile if profile is not None else _read_profile(app_id, external_id)


def _read_profile(app_id: int, external_id: str) -> dict | None:
    """:func:`load_profile` from PostgreSQL, cached on the way (four queries)."""
    recipient = (
        Recipient.objects.filter(app_id=app_id, external_id=external_id)
        .prefetch_related("devices", "preferences")
        .first()
    )
    if recipient is None:
        return None
    profile = _profile_of(recipient, _suppressed(app_id, recipient))
    cache.set(profile_key(app_id, external_id), profile, PROFILE_TTL)
    return profile


def _profile_of(recipient: Recipient, suppressed: dict[str, str]) -> dict:
    """The profile of :func:`load_profile` from a recipient row with its devices and
    preferences prefetched, and the suppressions of its addresses (``{"<channel>": reason}``)."""
    return {
        "id": recipient.id,
        "external_id": recipient.external_id,
        "name": recipient.name,
        "locale": recipient.locale,
        "timezone": recipient.timezone,
        "email": recipient.email,
        "phone": recipient.phone,
        "quiet_hours": recipient.quiet_hours,
        "muted": recipient.muted,
        "muted_until": recipient.muted_until.timestamp() if recipient.muted_until else None,
        "devices": [
            {"id": d.id, "platform": d.platform, "token": d.token, "subscription": d.subscription}
            for d in recipient.devices.all()
            if d.active
        ],
        "preferences": {f"{p.channel}|{p.category}": p.enabled for p in recipient.preferences.all()},
        "suppressed": suppressed,
    }


def _own_addresses(recipient: Recipient) -> list[str]:
    """The addresses of a recipient a suppression is recorded under (email lowercased, phone)."""
    return [a for a in ((recipient.email or "").lower(), recipient.phone) if a]


def _suppressed(app_id: int, recipient: Recipient) -> dict[str, str]:
    """``{"<channel>": reason}``: the app's suppressions of the recipient's own addresses
    (notify.models.AddressSuppression; notify.store.suppress_address clears the profile)."""
    addresses = _own_addresses(recipient)
    if not addresses:
        return {}
    return dict(AddressSuppression.objects.filter(app_id=app_id, address__in=addresses)
                .values_list("channel", "reason"))


def categories_key(app_id: int) -> str:
    return f"categories:{app_id}"


def load_categories(app_id: int) -> dict:
    """The app's categories and its quiet hours, as the policy reads them (notify.policy).

    Shape: ``{"quiet_hours": "HH:MM-HH:MM" or "", "categories": {"<name>": {"required",
    "defaults", "rate_limits", "over_limit", "quiet_hours"}}}``. A miss costs two queries.
    """
    entry = cache.get(categories_key(app_id))
    return entry if entry is not None else _read_categories(app_id)


def _read_categories(app_id: int) -> dict:
    """:func:`load_categories` from PostgreSQL, cached on the way (two queries)."""
    rows = Category.objects.filter(app_id=app_id).values(
        "name", "required", "defaults", "rate_limits", "over_limit", "quiet_hours")
    entry = {"quiet_hours": App.objects.filter(pk=app_id).values_list("quiet_hours", flat=True).first() or "",
             "categories": {row.pop("name"): row for row in rows}}
    cache.set(categories_key(app_id), entry, TEMPLATE_TTL)
    return entry


def forget_categories(app_id: int) -> None:
    key = categories_key(app_id)
    cache.delete(key)
    transaction.on_commit(lambda: cache.delete(key))


@receiver([post_save, post_delete], sender=Category)
def _category_changed(sender, instance: Category, **kwargs):
    forget_categories(instance.app_id)


@receiver([post_save, post_delete], sender=App)
def _app_changed(sender, instance: App, **kwargs):
    forget_categories(instance.pk)


def load_template(app_id: int, name: str, version: int | None = None) -> dict | None:
    """Return a template with one of its published versions, or None if there is no such
    template.

    Shape: ``{"id", "name", "category", "default_locale", "truncate_push", "archived",
    "version", "content", "variants"}``: ``version`` (with ``content`` and ``variants``) is the
    pinned one, or the latest published when ``version`` is None; ``version`` None when there is
    no such published version. A miss costs two queries.
    """
    entry = cache.get(template_key(app_id, name, version))
    return entry if entry is not None else _read_template(app_id, name, version)


def _read_template(app_id: int, name: str, version: int | None) -> dict | None:
    """:func:`load_template` from PostgreSQL, cached on the way (two queries)."""
    template = Template.objects.filter(app_id=app_id, name=name).first()
    if template is None:
        return None
    published = template.versions.filter(published_at__isnull=False)
    chosen = published.filter(number=version).first() if version else published.order_by("-number").first()
    entry = {"id": template.id, "name": template.name, "category": template.category,
             "default_locale": template.default_locale, "truncate_push": template.truncate_push,
             "archived": template.archived_at is not None,
             "version": chosen.number if chosen else None,
             "content": chosen.content if chosen else {}, "variants": chosen.variants if chosen else []}
    cache.set(template_key(app_id, name, version), entry, TEMPLATE_TTL)
    return entry


@dataclass(frozen=True)
class SendContext:
    """What accepting a send reads: the recipient's profile (None: no such recipient), the
    template (None: none named, or no such template) and the app's categories, in the shapes of
    :func:`load_profile`, :func:`load_template` and :func:`load_categories`."""

    profile: dict | None
    template: dict | None
    categories: dict


def load_send_context(app_id: int, external_id: str, template: str | None,
                      version: int | None = None) -> SendContext:
    """The three look-ups of a send in one Redis round trip (MGET); each entry missing from the
    cache is read from PostgreSQL and cached, as its own loader does."""
    keys = {"profile": profile_key(app_id, external_id), "categories": categories_key(app_id)}
    if template:
        keys["template"] = template_key(app_id, template, version)
    found = cache.get_many(list(keys.values()))
    profile = found.get(keys["profile"])
    if profile is None:
        profile = _read_profile(app_id, external_id)
    categories = found.get(keys["categories"])
    if categories is None:
        categories = _read_categories(app_id)
    entry = None
    if template:
        entry = found.get(keys["template"])
        if entry is None:
            entry = _read_template(app_id, template, version)
    return SendContext(profile, entry, categories)


def api_key_key(prefix: str) -> str:
    return f"apikey:{prefix}"


def load_api_key(prefix: str) -> dict | None:
    """Return ``{"id", "app_id", "hashed_key", "revoked", "expiry_date", "scopes"}`` of the API
    key with this public prefix (``scopes``: a list of notify.scopes names), or None. The caller
    verifies the secret against ``hashed_key``."""
    key = api_key_key(prefix)
    entry = cache.get(key)
    # An entry without "scopes" was written by a release before scopes: read the row again.
    if entry is None or (entry and "scopes" not in entry):
        entry = AppAPIKey.objects.filter(prefix=prefix).values(
            "id", "app_id", "hashed_key", "revoked", "expiry_date", "scopes").first() or {}
        # Unknown prefixes are cached too, so guessing keys costs Redis, not PostgreSQL.
        cache.set(key, entry, API_KEY_TTL)
    return entry or None


def forget_recipient(app_id: int, external_id: str) -> None:
    key = profile_key(app_id, external_id)
    cache.delete(key)
    # Again after the commit: a send between this delete and the commit (an admin save, the
    # preference page) would otherwise cache the profile as it was until PROFILE_TTL.
    transaction.on_commit(lambda: cache.delete(key))


@receiver([post_save, post_delete], sender=Recipient)
def _recipient_changed(sender, instance: Recipient, **kwargs):
    forget_recipient(instance.app_id, instance.external_id)


@receiver(pre_save, sender=Device)
def _device_moving(sender, instance: Device, **kwargs):
    # A token re-registered by another user moves the device: the previous owner's cached
    # profile must forget it too, or that owner's next push would reach the new owner's phone.
    if instance.pk:
        instance._previous_recipient_id = Device.objects.filter(pk=instance.pk).values_list(
            "recipient_id", flat=True).first()


@receiver([post_save, post_delete], sender=Device)
@receiver([post_save, post_delete], sender=Preference)
def _recipient_part_changed(sender, instance, **kwargs):
    owners = {instance.recipient_id, getattr(instance, "_previous_recipient_id", None)} - {None}
    for recipient in Recipient.objects.filter(pk__in=owners).values("app_id", "external_id"):
        forget_recipient(recipient["app_id"], recipient["external_id"])


def forget_template(template: Template) -> None:
    """Drop every cached entry of ``template`` (its latest and each pinned version)."""
    numbers = list(TemplateVersion.objects.filter(template_id=template.pk).values_list("number", flat=True))
    keys = [template_key(template.app_id, template.name)] + [
        template_key(template.app_id, template.name, n) for n in numbers]
    cache.delete_many(keys)
    transaction.on_commit(lambda: cache.delete_many(keys))


@receiver([post_save, post_delete], sender=Template)
def _template_changed(sender, instance: Template, **kwargs):
    forget_template(instance)


@receiver([post_save, post_delete], sender=TemplateVersion)
def _template_version_changed(sender, instance: TemplateVersion, **kwargs):
    template = Template.objects.filter(pk=instance.template_id).first()
    if template is not None:
        forget_template(template)


def forget_api_keys(prefixes) -> None:
    keys = [api_key_key(prefix) for prefix in prefixes]
    if not keys:
        return
    cache.delete_many(keys)
    # Again after the commit: a request between this delete and the commit would otherwise
    # cache the row as it was (a revoked key working for another API_KEY_TTL seconds).
    transaction.on_commit(lambda: cache.delete_many(keys))


@receiver([post_save, post_delete], sender=AppAPIKey)
def _api_key_changed(sender, instance: AppAPIKey, **kwargs):
    forget_api_keys([instance.prefix])


@receiver(api_keys_updated, sender=AppAPIKey)
def _api_keys_updated(sender, prefixes, **kwargs):
    forget_api_keys(prefixes)


def _read_profiles(app_id: int, external_ids: list[str]) -> dict[str, dict]:
    """:func:`_read_profile` for many recipients in a fixed number of queries (recipients,
    devices, preferences, suppressions), whatever their count; cached on the way (one Redis
    round trip). Unknown ids are absent from the result."""
    if not external_ids:
        return {}
    recipients = list(Recipient.objects.filter(app_id=app_id, external_id__in=external_ids)
                      .prefetch_related("devices", "preferences"))
    wanted = {a for r in recipients for a in _own_addresses(r)}
    suppressions: dict[str, dict[str, str]] = {}
    if wanted:
        for address, channel, reason in AddressSuppression.objects.filter(
                app_id=app_id, address__in=wanted).values_list("address", "channel", "reason"):
            suppressions.setdefault(address, {})[channel] = reason
    profiles = {}
    for recipient in recipients:
        suppressed: dict[str, str] = {}
        for address in _own_addresses(recipient):
            suppressed.update(suppressions.get(address, {}))
        profiles[recipient.external_id] = _profile_of(recipient, suppressed)
    cache.set_many({profile_key(app_id, eid): profile for eid, profile in profiles.items()}, PROFILE_TTL)
    return profiles


@dataclass(frozen=True)
class BulkSendContext:
    """What accepting a bulk send reads: ``profiles`` external id → profile (unknown ids
    absent), the template and the categories, in the shapes of :func:`load_send_context`."""

    profiles: dict[str, dict]
    template: dict | None
    categories: dict


def load_bulk_send_context(app_id: int, external_ids: list[str], template: str | None,
                           version: int | None = None) -> BulkSendContext:
    """:func:`load_send_context` for many recipients: one Redis MGET for every entry, then the
    missing profiles in four queries at most (:func:`_read_profiles`), and the categories and
    template as their loaders read them: a fixed number of round trips whatever the count."""
    ids = list(dict.fromkeys(external_ids))
    keys = [profile_key(app_id, eid) for eid in ids] + [categories_key(app_id)]
    if template:
        keys.append(template_key(app_id, template, version))
    found = cache.get_many(keys)
    profiles = {eid: found[key] for eid, key in zip(ids, keys) if key in found}
    profiles.update(_read_profiles(app_id, [eid for eid in ids if eid not in profiles]))
    categories = found.get(categories_key(app_id))
    if categories is None:
        categories = _read_categories(app_id)
    entry = None
    if template:
        entry = found.get(template_key(app_id, template, version))
        if entry is None:
            entry = _read_template(app_id, template, version)
    return BulkSendContext(profiles, entry, categories)
