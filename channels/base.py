"""The one interface every channel adapter implements.

A send always runs the same fixed steps (the shape django-anymail uses for its backends):

1. ``build_payload(message)``: turn the provider-neutral :class:`Message` into the provider's
   request body. Raises :class:`~channels.errors.InvalidMessage` for content the provider is
   documented to refuse (too large, wrong types), so it fails before any network call.
2. ``post(message, payload)``: one call through the provider's client library on a client that
   lives for the whole worker process. Never retries by itself: Celery is the only retry layer.
3. ``classify(answer)`` / ``classify_error(exc)``: map the provider's answer to a
   :class:`Result` with one of the :class:`Outcome` values.

Channel modules import no Django models and write nothing: ``notify`` owns the database.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from .errors import ChannelConfigurationError, InvalidMessage


class Outcome(str, enum.Enum):
    """What the provider's answer means for the delivery."""

    SENT = "sent"  #: accepted by the provider
    RETRY = "retry"  #: transient (5xx, 429, timeout, connection error): try again later
    FAILED = "failed"  #: permanent for this message: do not retry
    DEAD_TOKEN = "dead_token"  #: the address is gone for good: deactivate the device


@dataclass(frozen=True)
class Message:
    """One delivery as a channel sees it.

    Attributes:
        delivery_id: the delivery's UUID as a string. Sent to providers where they echo or
            collapse on it (APNs ``apns-id``, collapse keys, Web Push ``Topic``) and in the payload
            as ``notify_delivery_id`` so apps can report opens.
        to: APNs device token (64 hex), FCM registration token, Web Push subscription
            ``{"endpoint", "keys": {"p256dh", "auth"}}``, E.164 phone number or email address.
        content: the rendered content for this channel. Push: ``title``, ``body``, optional
            ``data`` (str → str), ``badge``, ``sound``, ``image``, ``url``. SMS: ``body``. Email:
            ``subject``, ``text``, optional ``html``, ``headers``.
        priority: ``"high"`` or ``"normal"``.
        ttl: seconds the message stays useful, or None for the provider's default.
        collapse_key: replaces an earlier undelivered message with the same key on the device;
            defaults to the delivery id so a resend of the same delivery is shown once.
        options: per-request extras that are not content (e.g. ``status_callback`` URL for SMS,
            ``list_unsubscribe`` URL for email).
    """

    delivery_id: str
    to: Any
    content: Mapping[str, Any]
    priority: str = "normal"
    ttl: int | None = None
    collapse_key: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Result:
    """The normalised answer of one send.

    Attributes:
        outcome: see :class:`Outcome`.
        provider_message_id: the provider's id for the accepted message (APNs ``apns-id``, FCM
            ``projects/…/messages/…``, Twilio ``SM…``, SES ``MessageId``), when sent.
        reason: the provider's own reason code (``Unregistered``, ``UNREGISTERED``, ``21610``,
            ``TooManyRequestsException``, ``timeout``) or None.
        retry_after: seconds the provider asked us to wait (``Retry-After``), or None.
        status: the HTTP status (0 when no answer arrived).
        raw: the provider's answer as received, for the delivery attempt log.
    """

    outcome: Outcome
    provider_message_id: str | None = None
    reason: str | None = None
    retry_after: float | None = None
    status: int = 0
    raw: Mapping[str, Any] = field(default_factory=dict)


class Channel:
    """Base class of the channel adapters.

    Subclasses set ``name`` and ``transport_errors`` and implement ``build_payload``, ``post``
    and ``classify`` (plus ``classify_error`` when their client library reports provider errors
    as exceptions). Instances are built once per worker process by :mod:`channels.registry`
    from a plain settings mapping and must be safe to reuse for many messages.
    """

    name: ClassVar[str]
    #: Config keys that must be present and non-empty; checked by ``__init__``.
    required_config: ClassVar[tuple[str, ...]] = ()
    #: Exceptions meaning "no usable answer arrived" (timeouts, refused connections): RETRY.
    transport_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    #: The subset of ``transport_errors`` that are timeouts: RETRY with reason ``timeout``.
    #: A read timeout means the provider may have acted on the request; the resend is then only
    #: invisible to the user when ``collapses_resends`` is True.
    timeout_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    #: The subset of ``transport_errors`` raised before the request left this host (refused
    #: connection, connect timeout, TLS handshake failure): a resend cannot duplicate anything.
    #: Adapters whose library cannot tell by class override :meth:`request_unsent`.
    unsent_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    #: True when the provider collapses a resend with the same collapse key / id on the device,
    #: so a resend after an unknown outcome (worker died mid-call) cannot show twice.
    collapses_resends: ClassVar[bool] = False

    def __init__(self, config: Mapping[str, Any]):
        """Keep ``config``; ChannelConfigurationError if a ``required_config`` key is empty."""
        missing = [key for key in self.required_config if not config.get(key)]
        if missing:
            raise ChannelConfigurationError(
                f"{type(self).__name__}: missing config key(s): {', '.join(missing)}")
        self.config = config

    def deliver(self, message: Message) -> Result:
        """Send one message and classify the answer. Never raises for provider trouble.

        Returns:
            Result: FAILED for content the provider refuses (before any call); RETRY for
            transport errors, with reason ``timeout`` or ``transport_error`` and
            ``raw["maybe_delivered"]`` False only when the request certainly never left (see
            :meth:`request_unsent`); otherwise what ``classify`` says.
        """
        try:
            payload = self.build_payload(message)
        except InvalidMessage as exc:
            return Result(Outcome.FAILED, reason=exc.reason, raw={"error": str(exc)})
        try:
            answer = self.post(message, payload)
        except self.transport_errors as exc:
            reason = "timeout" if isinstance(exc, self.timeout_errors) else "transport_error"
            return Result(Outcome.RETRY, reason=reason,
                          raw={"error": f"{type(exc).__name__}: {exc}",
                               "maybe_delivered": not self.request_unsent(exc)})
        except Exception as exc:  # noqa: BLE001 - adapters map their library's errors
            return self.classify_error(exc)
        return self.classify(answer)

    def request_unsent(self, exc: BaseException) -> bool:
        """True when transport error ``exc`` proves the provider never received the request."""
        return isinstance(exc, self.unsent_errors)

    def build_payload(self, message: Message) -> Any:
        """Return the provider request body for ``message``; raise InvalidMessage if refused."""
        raise NotImplementedError

    def post(self, message: Message, payload: Any) -> Any:
        """Make the provider call once; return the raw answer (response object or dict)."""
        raise NotImplementedError

    def classify(self, answer: Any) -> Result:
        """Map a provider answer to a Result."""
        raise NotImplementedError

    def classify_error(self, exc: Exception) -> Result:
        """Map an exception from the client library to a Result; unknown ones propagate."""
        raise exc

    def close(self) -> None:
        """Release the long-lived client (worker shutdown)."""
