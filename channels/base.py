"""The one interface every channel adapter implements, and everything it declares.

**The adapter is the unit of extension.** An adapter class declares all the service needs to know
about its channel and provider, and the rest of the service (model choices, API enums, settings,
content checks at the API, queues, workers, breakers, webhooks) is derived from those
declarations through :mod:`channels.registry`:

==========================  ======================================================================
``name``                    the channel (``apns``, ``sms``, ``email``): its queue, its task, the
                            delivery's ``channel`` column
``provider``                the provider behind it (``twilio``, ``ses``, ``smtp``); one channel
                            may have several, chosen per deployment, with failover
``label``                   what people read in the admin and the docs
``content_group``           which part of a send's content it carries (``push``, ``sms``,
                            ``email``)
``address_kind``            what it sends to (:class:`AddressKind`), and ``platform`` for devices
``collapses_resends``       whether the device shows a resend with the same collapse id once
``settings``                its :class:`Setting` list: keys, environment names, defaults
``retry``                   its :class:`RetryDefaults`
``check_content``           its content limits (asked by the API, so API and worker agree), and
                            what it reports about acceptable content (SMS encoding and
                            segments, push payload size)
``breaker_scope``           what one circuit breaker covers (the provider, or one push service)
``send_concurrency``        how many of its sends one worker process may have in flight at once
``status_callbacks``,       per-request extras it supports: a status webhook URL, an RFC 8058
``one_click_unsubscribe``,  one-click unsubscribe URL, a signed URL the receiver POSTs to when
``open_reports``            the message is opened
``verify_webhook``,         its inbound webhooks: signature check and parsing into
``parse_webhook``           :class:`WebhookEvent` values
``sns_webhook_kinds``       its events published through Amazon SNS (SES's), which the service
                            verifies itself before ``parse_webhook`` reads them
==========================  ======================================================================

A send always runs the same fixed steps (the shape django-anymail uses for its backends):

1. ``build_payload(message)``: turn the provider-neutral :class:`Message` into the provider's
   request body. Raises :class:`~channels.errors.InvalidMessage` for content the provider is
   documented to refuse (too large, wrong types), so it fails before any network call, and
   :class:`InvalidAddress` for an address it can never send to (the device is deactivated).
2. ``post(message, payload)``: one call through the provider's client library on a client that
   lives for the whole worker process. Never retries by itself: the service owns retries.
3. ``classify(answer)`` / ``classify_error(exc)``: map the provider's answer to a
   :class:`Result` with one of the :class:`Outcome` values.

Channel modules import no Django and write nothing: ``notify`` owns the database and reacts to
outcomes, never to a particular provider's module.
"""

from __future__ import annotations

import datetime

import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

from .errors import ChannelConfigurationError, InvalidMessage


class Outcome(str, enum.Enum):
    """What the provider's answer means for the delivery (and what the service does)."""

    SENT = "sent"  #: accepted by the provider
    RETRY = "retry"  #: transient (5xx, 429, timeout, connection error): try again later
    FAILED = "failed"  #: permanent for this message: do not retry
    DEAD_TOKEN = "dead_token"  #: the device address is gone for good: deactivate the device
    #: the recipient refused this channel (a Twilio 21610 "replied STOP", later an email hard
    #: bounce or complaint): opt the recipient out of the channel, fail this message
    RECIPIENT_REFUSED = "recipient_refused"


class AddressKind(str, enum.Enum):
    """What a channel sends to, and where the service finds it on a recipient."""

    DEVICE_TOKEN = "device_token"  #: a registered device's token (``platform`` names which)
    SUBSCRIPTION = "subscription"  #: a registered Web Push subscription object (``platform``)
    PHONE = "phone"  #: the recipient's E.164 phone number
    EMAIL = "email"  #: the recipient's email address

    @property
    def is_device(self) -> bool:
        """True for addresses that are registered devices (refused as ``no_device`` when none)."""
        return self in (AddressKind.DEVICE_TOKEN, AddressKind.SUBSCRIPTION)


@dataclass(frozen=True)
class Setting:
    """One configuration key of an adapter.

    Attributes:
        key: the key in the adapter's config mapping (``url``, ``auth_token``).
        env: the environment variable that sets it (``NOTIFY_TWILIO_AUTH_TOKEN``).
        default: the value when the variable is unset (a string, as the environment gives), or
            None.
        required: the adapter cannot work without it; a production start-up names the variable.
        sandbox: the dotted path of the value in the provider sandbox's ``sandbox.json``, used
            when the embedded sandbox is the deployment's default (``make run``, the tests).
        doc: one line for the README's configuration table.
        secret: the value is a secret (a private key, an auth token, a password): an app's own
            value is stored encrypted and never shown again (API, admin, logs).
        per_app: an app may set its own value over the deployment's (notify.credentials).
            False for what belongs to the deployment: paths of files on its hosts, its CA
            bundle and timeouts, network allowances, limits the API checks with.
        content_of: this setting holds, inline, the content of the file setting of that key
            (the key itself instead of its path: how an app stores its key); when set it wins
            over the file, and it satisfies the file setting's ``required``
            (:meth:`Channel.read_file_setting`).
        group: settings that only work together, as one account's (Twilio's account SID, auth
            token and API key): an app that sets any setting of a group brings the group as a
            whole, and the deployment's values of the group's other settings are not used for it
            (notify.providers.app_config), so an app's account is never sent with the
            deployment's token or key. None: the setting stands alone.
    """

    key: str
    env: str
    default: str | None = None
    required: bool = False
    sandbox: str | None = None
    doc: str = ""
    secret: bool = False
    per_app: bool = True
    content_of: str | None = None
    group: str | None = None


@dataclass(frozen=True)
class RetryDefaults:
    """A channel's retry budget and back-off (each overridable per deployment).

    Attributes:
        max_attempts: provider calls before the delivery is dead-lettered.
        max_age: seconds after the notification was accepted after which no retry is scheduled.
        backoff_base, backoff_max: seconds; exponential back-off with full jitter.
        retry_after_max: seconds; a provider's ``Retry-After`` is clamped to this.
    """

    max_attempts: int = 8
    max_age: int = 6 * 3600
    backoff_base: float = 1.0
    backoff_max: float = 600.0
    retry_after_max: float = 3600.0


@dataclass(frozen=True)
class Message:
    """One delivery as a channel sees it.

    Attributes:
        delivery_id: the delivery's UUID as a string. Sent to providers where they echo or
            collapse on it (APNs ``apns-id``, collapse keys, Web Push ``Topic``) and in the payload
            as ``notify_delivery_id`` so apps can report opens.
        to: APNs device token (64 hex), FCM registration token, Web Push subscription
            ``{"endpoint", "keys": {"p256dh", "auth"}}``, E.164 phone number or email address.
        content: the rendered content of the channel's ``content_group``. Push: ``title``,
            ``body``, optional ``data`` (str → str), ``badge``, ``sound``, ``image``, ``url``.
            SMS: ``body``. Email: ``subject``, ``text``, optional ``html``, ``headers``.
        priority: ``"high"`` or ``"normal"``.
        ttl: seconds the message stays useful, or None for the provider's default.
        collapse_key: replaces an earlier undelivered message with the same key on the device;
            defaults to the delivery id so a resend of the same delivery is shown once.
        status_callback: where the provider should POST status updates of this message (only
            for adapters that declare ``status_callbacks``), or None.
        unsubscribe_url: the https one-click unsubscribe URL (RFC 8058) of this message (only
            for adapters that declare ``one_click_unsubscribe``), or None.
        preferences_url: the recipient's hosted preference page, shown next to the unsubscribe
            (only for adapters that declare ``one_click_unsubscribe``; an email adds it as a
            footer line), or None (a required category: a sign-in code carries neither).
        preferences_label: the text of that footer's link, in the recipient's language (the
            service words it, notify.preferences.label); None shows the URL itself.
        open_url: a signed URL the receiver (a Web Push service worker) POSTs to, without a
            body or an API key, when the recipient opens the message (only for adapters that
            declare ``open_reports``), or None.
    """

    delivery_id: str
    to: Any
    content: Mapping[str, Any]
    priority: str = "normal"
    ttl: int | None = None
    collapse_key: str | None = None
    status_callback: str | None = None
    unsubscribe_url: str | None = None
    preferences_url: str | None = None
    preferences_label: str | None = None
    open_url: str | None = None


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
        status: the HTTP status (0 when no answer arrived; the SMTP reply code for SMTP).
        maybe_delivered: on RETRY, True when the provider may have acted on the request (no
            answer after it left, or an ambiguous 5xx): resending can then double-send on a
            channel that does not collapse resends.
        raw: the provider's answer as received, for the delivery attempt log.
    """

    outcome: Outcome
    provider_message_id: str | None = None
    reason: str | None = None
    retry_after: float | None = None
    status: int = 0
    maybe_delivered: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WebhookEvent:
    """What an inbound provider webhook says, in the service's terms.

    Attributes:
        kind: ``"status"`` (a later status of a message we sent), ``"opt_out"`` or ``"opt_in"``
            (the recipient at ``address`` refused or re-allowed the channel, e.g. SMS STOP/START).
        delivery_id: the delivery the status is about (status events), or None.
        provider_message_id: the provider's id of that message, or None.
        status: the provider's status word (``delivered``, ``undelivered``), or None.
        receipt: what that status is in the service's terms, a delivery event kind of
            ``notify.models.EventKind`` (``sent``, ``delivered``, ``undelivered``, ``opened``...),
            or None for a status that reports nothing new (``queued``, ``sending``).
        occurred_at: the provider's time of the status (aware), or None when it gives none.
        reason: the provider's error code, or None.
        refused: a status event that also means the recipient refused the channel (Twilio
            error 21610): the service opts the recipient out.
        address: the phone number / email address of opt-out and opt-in events.
        raw: the webhook's fields as received.
    """

    kind: str
    delivery_id: str | None = None
    provider_message_id: str | None = None
    status: str | None = None
    receipt: str | None = None
    occurred_at: datetime.datetime | None = None
    reason: str | None = None
    refused: bool = False
    address: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


class InvalidAddress(ValueError):
    """A device token or subscription the channel can never send to.

    Raised by ``validate_address`` (the API refuses the registration with 400, ``error.reasons``
    carrying ``reason`` at ``field``) and by ``build_payload`` for an address stored before a
    rule existed (:meth:`Channel.deliver` answers DEAD_TOKEN: the device is deactivated, as for
    a token the provider reports gone, instead of the message failing on every send).

    Args:
        message: what is wrong, for people.
        reason: machine-readable code (``not_on_curve``, ``private_address``); ``invalid`` when
            the adapter gives none.
        field: the part of the address at fault, a dotted path inside it (``keys.p256dh``), or
            ``""`` for the address as a whole.

    Attributes:
        problems: every problem found, one InvalidAddress each (see :meth:`combine`); just this
            one by default.
    """

    def __init__(self, message: str, reason: str = "invalid", field: str = ""):
        super().__init__(message)
        self.reason = reason
        self.field = field
        self.problems: tuple[InvalidAddress, ...] = (self,)

    @classmethod
    def combine(cls, problems: Sequence["InvalidAddress"]) -> "InvalidAddress":
        """One error carrying several (one per part of the address), so a client can fix them
        all at once; its message joins theirs, its ``reason`` and ``field`` are the first's."""
        combined = cls("; ".join(str(p) for p in problems), problems[0].reason, problems[0].field)
        combined.problems = tuple(problems)
        return combined

    @property
    def code(self) -> str:
        """The delivery's reason when a send meets it: ``invalid_address[:<field>]:<reason>``
        of the first problem (e.g. ``invalid_address:keys.p256dh:not_on_curve``)."""
        return ":".join(part for part in ("invalid_address", self.field, self.reason) if part)


def common_settings(prefix: str, timeout: str = "10") -> tuple[Setting, ...]:
    """The ``ca_file`` and ``timeout`` settings every HTTP adapter shares.

    Args:
        prefix: the adapter's environment prefix, e.g. ``NOTIFY_APNS`` → ``NOTIFY_APNS_TIMEOUT``.
    """
    return (
        Setting("ca_file", "NOTIFY_PROVIDER_CA_FILE", sandbox="ca_file", per_app=False,
                doc="CA bundle to verify providers with (the sandbox's CA by default; unset for the real ones)"),
        Setting("timeout", f"{prefix}_TIMEOUT", default=timeout, per_app=False,
                doc="seconds for connect and read"),
    )


class Channel:
    """Base class of the channel adapters (see the module docstring for the declarations).

    Subclasses set the declarations and implement ``build_payload``, ``post`` and ``classify``
    (plus ``classify_error`` when their client library reports provider errors as exceptions).
    Instances are built once per worker process by :mod:`channels.registry` from a plain config
    mapping (keys of ``settings``) and must be safe to reuse for many messages.
    """

    name: ClassVar[str]
    provider: ClassVar[str]
    label: ClassVar[str] = ""
    content_group: ClassVar[str]
    address_kind: ClassVar[AddressKind]
    #: The device platform (``ios``, ``android``, ``web``) of device and subscription channels.
    platform: ClassVar[str | None] = None
    settings: ClassVar[tuple[Setting, ...]] = ()
    retry: ClassVar[RetryDefaults] = RetryDefaults()
    #: True when the provider collapses a resend with the same collapse key / id on the device,
    #: so a resend after an unknown outcome (worker died mid-call) cannot show twice.
    collapses_resends: ClassVar[bool] = False
    #: True when the adapter passes ``Message.status_callback`` to its provider.
    status_callbacks: ClassVar[bool] = False
    #: True when the adapter puts ``Message.unsubscribe_url`` in the message (RFC 8058).
    one_click_unsubscribe: ClassVar[bool] = False
    #: True when the adapter puts ``Message.open_url`` in the payload, for the receiver to report
    #: the message opened.
    open_reports: ClassVar[bool] = False

    #: How many sends of this provider one worker process may have in flight at once
    #: (notify.send runs a batch's sends on a thread pool, at most this many per provider). The
    #: adapter knows what its client allows: 1 unless ``deliver`` is safe to call from several
    #: threads at once on one instance. ``NOTIFY_SEND_CONCURRENCY`` overrides it per deployment.
    send_concurrency: ClassVar[int] = 1

    #: Exceptions meaning "no usable answer arrived" (timeouts, refused connections): RETRY.
    transport_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    #: The subset of ``transport_errors`` that are timeouts: RETRY with reason ``timeout``.
    timeout_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    #: The subset of ``transport_errors`` raised before the request left this host (refused
    #: connection, connect timeout, TLS handshake failure): a resend cannot duplicate anything.
    #: Adapters whose library cannot tell by class override :meth:`request_unsent`.
    unsent_errors: ClassVar[tuple[type[BaseException], ...]] = ()

    #: Channel-level declarations: every provider of one channel must agree on these.
    CHANNEL_ATTRIBUTES: ClassVar[tuple[str, ...]] = (
        "label", "content_group", "address_kind", "platform", "collapses_resends", "retry")

    def __init__(self, config: Mapping[str, Any]):
        """Keep ``config``; ChannelConfigurationError if a required setting is empty."""
        missing = [s.key for s in self.missing_config(config)]
        if missing:
            raise ChannelConfigurationError(
                f"{type(self).__name__}: missing config key(s): {', '.join(missing)}")
        self.config = config

    # -- declarations the service asks about -----------------------------------------------------
    @classmethod
    def required_config(cls) -> tuple[str, ...]:
        """Config keys that must be present and non-empty."""
        return tuple(s.key for s in cls.settings if s.required)

    @classmethod
    def missing_config(cls, config: Mapping[str, Any]) -> tuple[Setting, ...]:
        """The required settings ``config`` leaves empty: neither the setting nor a setting
        holding its content inline (``content_of``) has a value."""
        return tuple(s for s in cls.settings if s.required and not config.get(s.key)
                     and not any(config.get(a.key) for a in cls.inline_alternatives(s.key)))

    @classmethod
    def inline_alternatives(cls, key: str) -> tuple[Setting, ...]:
        """The settings holding the content of file setting ``key`` inline (``content_of``)."""
        return tuple(s for s in cls.settings if s.content_of == key)

    @classmethod
    def app_settings(cls) -> tuple[Setting, ...]:
        """The settings an app may set its own value of (``per_app``), in declaration order."""
        return tuple(s for s in cls.settings if s.per_app)

    def read_file_setting(self, key: str) -> tuple[bytes, str]:
        """The content of file setting ``key``, and how to name it in an error message without
        showing it: the inline alternative's value when set (``content_of``, what an app stores;
        it wins over a file the deployment sets), else the named file's bytes. The one copy of
        the rule, for every adapter that reads a key or credentials file.

        Raises:
            ChannelConfigurationError: neither is set, or the file cannot be read.
        """
        for alternative in self.inline_alternatives(key):
            value = self.config.get(alternative.key)
            if value:
                return (value.encode() if isinstance(value, str) else bytes(value)), f"{alternative.key} (inline)"
        path = self.config.get(key)
        try:
            with open(path or "", "rb") as fh:
                return fh.read(), f"{key} {path!r}"
        except OSError as exc:
            raise ChannelConfigurationError(f"{key} {path!r} does not exist ({exc.strerror})") from None

    @classmethod
    def check_content(cls, content: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Raise InvalidMessage if the provider is documented to refuse ``content`` whatever the
        address (size, types, header injection); otherwise return what is worth reporting about
        it in the send answer (SMS encoding and segments, push payload bytes; empty by default),
        computed in the same pass. The API asks this before writing anything and
        ``build_payload`` applies the same rules, so the two can never disagree. ``config`` is
        the adapter's config mapping, for limits a deployment sets (None: the defaults)."""
        return {}

    @classmethod
    def validate_address(cls, value: Any, config: Mapping[str, Any]) -> Any:
        """Return a device token or subscription normalised for storage.

        Only device channels (``address_kind.is_device``) are asked; ``config`` is the
        adapter's config mapping (for rules that depend on the deployment).

        Raises:
            InvalidAddress: the channel could never send to it.
        """
        return value

    @classmethod
    def breaker_scope(cls, to: Any) -> str:
        """What one circuit breaker covers for a message to ``to``: the provider by default."""
        return cls.provider

    # -- webhooks --------------------------------------------------------------------------------
    #: Kinds of inbound webhook this provider calls (``/webhooks/<provider>/<kind>``).
    webhook_kinds: ClassVar[tuple[str, ...]] = ()
    #: Kinds of inbound webhook the provider publishes through an Amazon SNS topic with an
    #: HTTP(S) subscription (``/webhooks/<provider>/<kind>`` too): SNS signs them, not the
    #: provider, so the service verifies them itself (notify.webhooks.sns) and hands each
    #: notification's ``Message``, parsed from JSON, to :meth:`parse_webhook` as ``params``.
    sns_webhook_kinds: ClassVar[tuple[str, ...]] = ()

    def verify_webhook(self, url: str, params: Mapping[str, str], headers: Mapping[str, str]) -> bool:
        """True when a webhook call to ``url`` with form ``params`` is signed by the provider."""
        return False

    def parse_webhook(self, kind: str, params: Mapping[str, str],
                      query: Mapping[str, str]) -> Sequence[WebhookEvent]:
        """The events a verified webhook call of ``kind`` carries (``params``: its form fields,
        or for :attr:`sns_webhook_kinds` the SNS message's parsed ``Message``; ``query``: the
        query string of the URL it was sent to)."""
        return ()

    # -- the send --------------------------------------------------------------------------------
    def deliver(self, message: Message) -> Result:
        """Send one message and classify the answer. Never raises for provider trouble.

        Returns:
            Result: FAILED for content the provider refuses (before any call); DEAD_TOKEN,
            reason :attr:`InvalidAddress.code`, for an address ``build_payload`` finds unusable
            (before any call); RETRY for transport errors, with reason ``timeout`` or
            ``transport_error`` and ``maybe_delivered`` False only when the request certainly
            never left (see :meth:`request_unsent`); otherwise what ``classify`` says.
        """
        try:
            payload = self.build_payload(message)
        except InvalidMessage as exc:
            return Result(Outcome.FAILED, reason=exc.reason, raw={"error": str(exc)})
        except InvalidAddress as exc:
            # No later attempt can succeed either: the address is what is wrong, not the message.
            return Result(Outcome.DEAD_TOKEN, reason=exc.code, raw={"error": str(exc)})
        try:
            answer = self.post(message, payload)
        except self.transport_errors as exc:
            reason = "timeout" if isinstance(exc, self.timeout_errors) else "transport_error"
            return Result(Outcome.RETRY, reason=reason,
                          maybe_delivered=not self.request_unsent(exc),
                          raw={"error": f"{type(exc).__name__}: {exc}"})
        except Exception as exc:  # noqa: BLE001 - adapters map their library's errors
            return self.classify_error(exc)
        return self.classify(answer)

    def request_unsent(self, exc: BaseException) -> bool:
        """True when transport error ``exc`` proves the provider never received the request."""
        return isinstance(exc, self.unsent_errors)

    def build_payload(self, message: Message) -> Any:
        """Return the provider request body for ``message``; raise InvalidMessage if the content
        is refused, InvalidAddress if the address is unusable."""
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
