"""Which provider sends a channel's deliveries, and with what configuration.

A channel has a primary provider and optionally a secondary one
(``NOTIFY_<CHANNEL>_PROVIDER``, ``NOTIFY_<CHANNEL>_SECONDARY_PROVIDER``): while the primary's
circuit breaker is open, the secondary takes the channel's deliveries (the way GOV.UK Notify
switches SMS providers), and the first successful probe of the primary brings them back.

An adapter's configuration is resolved per setting: the environment (read in
``settings.NOTIFY_PROVIDER_ENV``), then, with ``NOTIFY_SANDBOX_FALLBACK`` on, the provider
sandbox's ``sandbox.json`` (the embedded default of ``make run`` and the tests; read lazily,
since the sandbox may start after the settings), then the adapter's declared default.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from channels import registry, tokens
from channels.base import Channel
from channels.errors import ChannelConfigurationError

from . import breaker, credentials
from .cache import redis_key


@lru_cache(maxsize=1)
def _sandbox_file() -> dict:
    path = Path(settings.NOTIFY_SANDBOX_DIR) / "sandbox.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}


def _lookup(tree: dict, dotted: str | None) -> Any:
    if not dotted:
        return None
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def config_for(provider: str) -> dict[str, Any]:
    """The config mapping the adapter of ``provider`` is built with (keys of its ``settings``);
    a value found nowhere is its declared default, or None. Plus the shared token store's keys
    (channels.tokens): the service's Redis, so every worker process uses one provider token per
    key (APNs JWT, FCM access token) instead of one each."""
    environment = settings.NOTIFY_PROVIDER_ENV[provider]
    sandbox = _sandbox_file() if settings.NOTIFY_SANDBOX_FALLBACK else {}
    config: dict[str, Any] = {}
    for setting in registry.provider_class(provider).settings:
        value = environment.get(setting.key)
        if value is None and setting.sandbox:
            value = _lookup(sandbox, setting.sandbox)
        config[setting.key] = value if value not in (None, "") else setting.default
    config.update(tokens.store_config(settings.REDIS_URL, redis_key()))
    return config


def check_configuration() -> None:
    """Refuse to start with a provider setting missing (production settings).

    Checks every required setting of every provider in use (primary and secondary of each
    enabled channel). With ``NOTIFY_SANDBOX_FALLBACK`` on, the sandbox supplies them later and
    nothing is checked here.

    Raises:
        ImproperlyConfigured: naming each missing environment variable and its provider.
    """
    if settings.NOTIFY_SANDBOX_FALLBACK:
        return
    missing = []
    for channel, chosen in settings.NOTIFY_CHANNEL_PROVIDERS.items():
        for provider in chosen:
            environment = settings.NOTIFY_PROVIDER_ENV[provider]
            cls = registry.provider_class(provider)
            given = {s.key: environment.get(s.key) or s.default for s in cls.settings}
            for setting in cls.missing_config(given):
                names = " or ".join([setting.env, *(a.env for a in cls.inline_alternatives(setting.key))])
                missing.append(f"{names} ({channel} through {provider})")
    if missing:
        raise ImproperlyConfigured(
            "provider settings missing: " + ", ".join(missing) + ". Set them, choose other "
            "providers (NOTIFY_<CHANNEL>_PROVIDER), leave channels out (NOTIFY_CHANNELS), or use "
            "the provider sandbox (DJANGO_SETTINGS_MODULE=settings.dev).")
    # Build each adapter once (no network): files that do not exist, keys that do not parse and
    # combinations an adapter refuses (a Twilio sender or messaging service) stop the start too.
    for provider in {p for chosen in settings.NOTIFY_CHANNEL_PROVIDERS.values() for p in chosen}:
        try:
            registry.provider_class(provider)(config_for(provider)).close()
        except ChannelConfigurationError as exc:
            raise ImproperlyConfigured(f"provider {provider}: {exc}") from exc


def content_config(channel: str) -> dict[str, Any]:
    """The config the API checks a channel's content with: its primary provider's."""
    return config_for(settings.NOTIFY_CHANNEL_PROVIDERS[channel][0])


def in_use(provider: str) -> bool:
    """True when ``provider`` sends for an enabled channel (as its primary or secondary)."""
    return any(provider in chosen for chosen in settings.NOTIFY_CHANNEL_PROVIDERS.values())


def app_config(provider: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The config an app's adapter of ``provider`` is built with: the app's own ``values``
    (notify.credentials) over the deployment's :func:`config_for`, except that a settings
    ``group`` the app sets any of is the app's alone: the deployment's values of the group's
    other settings fall back to their declared defaults (an app's own account SID with the
    deployment's API key would authenticate as neither)."""
    config = config_for(provider)
    declared = registry.provider_class(provider).settings
    groups = {s.group for s in declared if s.group and s.key in values}
    for setting in declared:
        if setting.group in groups:
            config[setting.key] = setting.default
    return {**config, **values}


def adapter(provider: str, app_id: int | None = None, version: int | None = None) -> Channel:
    """This process's long-lived adapter of ``provider`` for a send of app ``app_id``.

    ``version`` is the version of the app's own settings of the provider (the claim reads it with
    the delivery: notify.store), None when the app has none. None: the one adapter every app
    without settings of its own shares. Otherwise the app's own, kept per process, built on first
    use with one query for its row and again, the previous one closed, when ``version`` changes.

    Raises:
        ChannelConfigurationError, notify.sealing.SealError: the app's stored settings cannot
            build an adapter (no configured key opens them; the deployment's part changed).
    """
    if version is None:
        if app_id is not None:
            registry.drop_tenant_provider(provider, app_id)  # its own settings were deleted
        return registry.get_provider(provider, config_for)
    return registry.get_tenant_provider(provider, app_id, version, lambda: _app_config(provider, app_id))


def adapter_of_app(provider: str, app_id: Any) -> Channel:
    """This process's adapter of ``provider`` for app ``app_id`` (an id as text from a webhook
    URL, or None) at its current settings (one query): the shared one for no app, an unknown app
    or one without settings of its own."""
    try:
        app_id = int(app_id)
    except (TypeError, ValueError):
        return adapter(provider)
    return adapter(provider, app_id, credentials.current_version(app_id, provider))


def _app_config(provider: str, app_id: int) -> dict[str, Any]:
    """The config of app ``app_id``'s adapter of ``provider``, from its row now (the
    deployment's when the row went meanwhile)."""
    return app_config(provider, credentials.stored_values(app_id, provider) or {})


def choose(channel: str, to: Any) -> str | None:
    """The provider that may send a delivery of ``channel`` to ``to`` now: the primary unless its
    breaker refuses the call, then the secondary if its breaker allows; None when neither may be
    called (the delivery waits for the breaker)."""
    for provider in settings.NOTIFY_CHANNEL_PROVIDERS[channel]:
        if breaker.may_call(registry.provider_class(provider).breaker_scope(to)):
            return provider
    return None


def held_channels(channels: Iterable[str]) -> list[str]:
    """The channels of ``channels`` (in their order) whose every provider is tripped as a whole
    (its provider-wide breaker open or half-open): their new deliveries wait instead of being
    queued, and the dispatcher holds their retries. The providers' breakers are read in one
    Redis round trip at most (notify.breaker.states)."""
    chains = {channel: settings.NOTIFY_CHANNEL_PROVIDERS[channel] for channel in channels}
    looked = breaker.states(provider for chain in chains.values() for provider in chain)
    return [channel for channel, chain in chains.items()
            if all(looked[provider] != breaker.CLOSED for provider in chain)]


def reset() -> None:
    """Forget the cached sandbox file (tests that restart the sandbox)."""
    _sandbox_file.cache_clear()
