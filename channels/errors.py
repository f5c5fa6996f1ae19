"""Errors of the channel layer.

Provider answers are not exceptions here: they become :class:`channels.base.Result` values.
What remains are content the provider would refuse (caught before the call) and configuration
mistakes, which are kept apart so that no retry policy can silence them.
"""


class InvalidMessage(ValueError):
    """The message breaks a documented provider rule (size, types, format); permanent.

    Attributes:
        reason: a machine-readable code, e.g. ``payload_too_large`` or ``invalid_token``.
    """

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class ChannelConfigurationError(RuntimeError):
    """A channel is missing a credential or endpoint; raised at client construction."""
