"""Typed readers for environment variables (one place, so every setting parses alike)."""

import os


def env(name: str, default: str = "") -> str:
    """Return ``$name`` or ``default`` (empty values count as unset)."""
    value = os.environ.get(name, "")
    return value if value != "" else default


def env_int(name: str, default: int) -> int:
    """Return ``$name`` as an int; ValueError names the variable if it is not one."""
    raw = env(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def env_float(name: str, default: float) -> float:
    """Return ``$name`` as a float; ValueError names the variable if it is not one."""
    raw = env(name, str(default))
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


def env_bool(name: str, default: bool) -> bool:
    """Return ``$name`` as a bool: 1/true/yes/on are true, 0/false/no/off are false."""
    raw = env(name, "").lower()
    if raw == "":
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{name} must be a boolean, got {raw!r}")


def env_rate_limit(name: str, default: str) -> str:
    """Return ``$name`` as per-recipient rate limits (notify.ratelimit.parse_limits: the
    ``limits`` syntax, ``"100/hour"``, ``"3/hour;10/day"``, or ``"none"``).

    Raises:
        ImproperlyConfigured: naming the variable, if it is not one.
    """
    from django.core.exceptions import ImproperlyConfigured

    # notify.ratelimit holds the one copy of the syntax; it is imported only here, at load.
    from notify.ratelimit import parse_limits

    raw = env(name, default)
    try:
        parse_limits(raw)
    except ValueError as error:
        raise ImproperlyConfigured(f"{name}: {error}") from None
    return raw


def env_list(name: str) -> list[str]:
    """Return ``$name`` split at commas, blanks dropped (``"a, b,"`` → ``["a", "b"]``)."""
    return [item.strip() for item in env(name).split(",") if item.strip()]
