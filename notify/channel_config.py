"""Resolve a channel's settings mapping: environment variable first, then the provider sandbox's
``sandbox.json`` (the embedded default), then the documented default."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from django.conf import settings


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


def config_for(channel: str) -> dict[str, Any]:
    """Return the settings mapping the adapter of ``channel`` is built with.

    Keys per channel are listed in ``settings.NOTIFY_CHANNEL_SETTINGS``; a missing credential is
    left as None, and the adapter raises ChannelConfigurationError for it.
    """
    spec = settings.NOTIFY_CHANNEL_SETTINGS[channel]
    sandbox = _sandbox_file()
    config: dict[str, Any] = {}
    for key, (variable, sandbox_path, default) in spec.items():
        value = os.environ.get(variable) or _lookup(sandbox, sandbox_path)
        config[key] = value if value not in (None, "") else default
    if config.get("timeout") is not None:
        config["timeout"] = float(config["timeout"])
    return config


def reset() -> None:
    """Forget the cached sandbox file (tests that restart the sandbox)."""
    _sandbox_file.cache_clear()
