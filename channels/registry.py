"""The registry of channel adapters: the one list every other list of channels derives from.

Model choices, API enums, settings, queues, tasks, workers, content checks and webhooks all ask
this module. It holds adapter *classes* (``provider`` name → class) and, per worker process,
one long-lived instance of each adapter in use.

An app (a tenant) with provider settings of its own gets adapter instances of its own, per
process, keyed by a version the caller passes: a new version closes the old instance and builds a
new one (:func:`get_tenant_provider`).

Configuration comes from the deployment's settings (``settings/providers.py`` calls
:func:`configure` once): extra adapter classes (``NOTIFY_EXTRA_PROVIDERS``, ``module:Class``) and
which channels are enabled (``NOTIFY_CHANNELS``). Until then the built-in adapters are
registered, every channel enabled.

Celery's prefork pool forks workers after the parent imported the code, so clients (HTTP/2
connections, requests sessions, boto3 clients, SMTP connections) are created lazily in the child:
the instance cache is keyed by process id so a forked child never reuses its parent's sockets.
"""

from __future__ import annotations

import importlib
import os
import threading
from typing import Any, Callable, Iterable, Mapping

from .base import Channel
from .errors import ChannelConfigurationError

#: The adapters that ship with notify, as ``module:Class``. The first provider of a channel is
#: its default provider.
BUILTIN: tuple[str, ...] = (
    "channels.apns:APNsChannel",
    "channels.fcm:FCMChannel",
    "channels.webpush:WebPushChannel",
    "channels.twilio_sms:TwilioSMSChannel",
    "channels.ses_email:SESEmailChannel",
    "channels.smtp_email:SMTPEmailChannel",
)

_lock = threading.Lock()
_providers: dict[str, type[Channel]] = {}
_channel_classes: dict[str, type[Channel]] = {}  # channel → its default provider's class
_enabled: tuple[str, ...] | None = None
_instances: dict[tuple[int, str], Channel] = {}
#: (process id, provider, tenant) → (version it was built for, instance)
_tenant_instances: dict[tuple[int, str, Any], tuple[Any, Channel]] = {}


def load_class(path: str) -> type[Channel]:
    """Import ``module:Class`` and check it is a complete adapter class.

    Raises:
        ChannelConfigurationError: not importable, not a Channel, or a declaration missing.
    """
    module_name, _, class_name = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ChannelConfigurationError(f"adapter {path!r} cannot be imported: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Channel)):
        raise ChannelConfigurationError(f"{path!r} is not a channels.base.Channel subclass")
    for attribute in ("name", "provider", "content_group", "address_kind"):
        if not getattr(cls, attribute, None):
            raise ChannelConfigurationError(f"{path!r} does not declare {attribute}")
    if cls.address_kind.is_device and not cls.platform:
        raise ChannelConfigurationError(f"{path!r} sends to devices but declares no platform")
    return cls


def configure(extra: Iterable[str] = (), enabled: Iterable[str] | None = None) -> None:
    """Register the built-in adapters and ``extra`` ones; enable ``enabled`` channels (all when
    None). Safe to call again (tests); clears the per-process instances.

    Raises:
        ChannelConfigurationError: a class cannot be loaded, two adapters claim one provider
            name or one device platform, providers of one channel disagree on a channel-level
            declaration, or ``enabled`` names an unknown channel.
    """
    global _enabled
    providers: dict[str, type[Channel]] = {}
    platforms: dict[str, str] = {}
    for path in (*BUILTIN, *extra):
        cls = load_class(path)
        if cls.provider in providers:
            raise ChannelConfigurationError(f"two adapters for provider {cls.provider!r}")
        first = next((p for p in providers.values() if p.name == cls.name), None)
        if first is not None:
            for attribute in Channel.CHANNEL_ATTRIBUTES:
                if getattr(first, attribute) != getattr(cls, attribute):
                    raise ChannelConfigurationError(
                        f"{path}: {attribute} differs from {first.__name__}'s for channel {cls.name!r}")
        elif cls.platform:
            if cls.platform in platforms:
                raise ChannelConfigurationError(
                    f"platform {cls.platform!r} claimed by channels {platforms[cls.platform]!r} and {cls.name!r}")
            platforms[cls.platform] = cls.name
        providers[cls.provider] = cls
    names = tuple(dict.fromkeys(cls.name for cls in providers.values()))
    chosen = names if enabled is None else tuple(dict.fromkeys(enabled))
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        raise ChannelConfigurationError(f"unknown channel(s) {unknown}; known: {list(names)}")
    with _lock:
        _providers.clear()
        _providers.update(providers)
        _channel_classes.clear()
        for cls in providers.values():
            _channel_classes.setdefault(cls.name, cls)
        _enabled = tuple(name for name in names if name in chosen)
        _instances.clear()
        _tenant_instances.clear()


def _ensure() -> None:
    if not _providers:
        configure()


def providers() -> dict[str, type[Channel]]:
    """Provider name → adapter class, every registered one (enabled channels or not)."""
    _ensure()
    return dict(_providers)


def provider_class(provider: str) -> type[Channel]:
    """The adapter class of ``provider``; KeyError if none is registered."""
    _ensure()
    return _providers[provider]


def channels() -> tuple[str, ...]:
    """The enabled channels, in registration order: queues, tasks, workers, API enums."""
    _ensure()
    assert _enabled is not None
    return _enabled


def providers_of(channel: str) -> tuple[str, ...]:
    """The registered providers of ``channel``, the default one first."""
    _ensure()
    return tuple(p for p, cls in _providers.items() if cls.name == channel)


def channel_class(channel: str) -> type[Channel]:
    """The channel's declarations (its default provider's class: providers of one channel agree
    on every channel-level declaration). KeyError for an unknown channel."""
    _ensure()
    return _channel_classes[channel]


def channels_in_group(group: str) -> tuple[str, ...]:
    """The enabled channels that carry content group ``group`` (``push`` → apns, fcm, webpush)."""
    return tuple(c for c in channels() if channel_class(c).content_group == group)


def content_groups() -> tuple[str, ...]:
    """The content groups of the enabled channels, in order."""
    return tuple(dict.fromkeys(channel_class(c).content_group for c in channels()))


def device_platforms() -> dict[str, str]:
    """Device platform → channel, for the enabled device channels."""
    return {channel_class(c).platform: c for c in channels() if channel_class(c).platform}


def get_provider(provider: str, config_for: Callable[[str], Mapping[str, Any]]) -> Channel:
    """Return this process's adapter instance for ``provider``, building it on first use.

    Args:
        provider: a registered provider name.
        config_for: called once with ``provider`` to obtain the adapter's config mapping.
    """
    key = (os.getpid(), provider)
    instance = _instances.get(key)
    if instance is None:
        with _lock:
            instance = _instances.get(key)
            if instance is None:
                instance = provider_class(provider)(config_for(provider))
                _instances[key] = instance
    return instance


def get_tenant_provider(provider: str, tenant: Any, version: Any,
                        config: Callable[[], Mapping[str, Any]]) -> Channel:
    """Return this process's adapter of ``provider`` for ``tenant`` (an app with settings of its
    own) at ``version``: built on first use, and again when ``version`` differs from the one it
    was built for, the previous instance then closed (its client held the old credentials).

    Args:
        config: called (once per build) for the tenant's config mapping.

    Raises:
        ChannelConfigurationError: what the adapter raises for that config (nothing is kept).
    """
    key = (os.getpid(), provider, tenant)
    entry = _tenant_instances.get(key)
    if entry is not None and entry[0] == version:
        return entry[1]
    with _lock:
        entry = _tenant_instances.get(key)
        if entry is not None and entry[0] == version:
            return entry[1]
        instance = provider_class(provider)(config())
        _tenant_instances[key] = (version, instance)
    if entry is not None:
        entry[1].close()
    return instance


def drop_tenant_provider(provider: str, tenant: Any) -> None:
    """Close and forget this process's adapter of ``provider`` for ``tenant``, if any (its own
    settings were deleted: it sends with the shared one again)."""
    entry = _tenant_instances.pop((os.getpid(), provider, tenant), None)
    if entry is not None:
        entry[1].close()


def tenant_versions() -> dict[tuple[str, Any], Any]:
    """(provider, tenant) → the version of each tenant adapter this process holds (tests,
    metrics)."""
    pid = os.getpid()
    return {(provider, tenant): entry[0] for (owner, provider, tenant), entry in list(_tenant_instances.items())
            if owner == pid}


def close_all() -> None:
    """Close every adapter this process built (called on worker shutdown)."""
    pid = os.getpid()
    for (owner, _), instance in list(_instances.items()):
        if owner == pid:
            instance.close()
    for (owner, _, _), (_, instance) in list(_tenant_instances.items()):
        if owner == pid:
            instance.close()
    _instances.clear()
    _tenant_instances.clear()
