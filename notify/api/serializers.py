"""Request and response shapes of the REST API."""

from __future__ import annotations

import copy
import datetime as dt

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework import serializers

from channels import registry
from channels.base import AddressKind, InvalidAddress

from .. import policy, providers, validators
from ..accept import fallback_steps
from ..models import REACHED_PROVIDER, DeliveryStatus, Device, Preference, Recipient

CHANNEL_CHOICES = list(registry.channels())
#: A preference may name a content group (``push``) for all of its channels.
PREFERENCE_CHOICES = CHANNEL_CHOICES + [g for g in registry.content_groups() if g not in CHANNEL_CHOICES]


class StrictSerializer(serializers.Serializer):
    """Rejects unknown fields, so a typo is a 400 and not a silently ignored option."""

    def to_internal_value(self, data):
        # Checked here rather than in validate() so nested and listed serializers check too.
        if isinstance(data, dict):
            unknown = set(data) - set(self.fields)
            if unknown:
                # Escaped: a name with a lone surrogate, echoed as is, made the answer unencodable (a 500).
                raise serializers.ValidationError({validators.escaped(str(name)): ["unknown field"]
                                                   for name in sorted(unknown)})
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """A JSON ``true`` or ``false`` only: DRF's BooleanField also takes ``"yes"``, ``"on"``,
    ``1`` and the like, which for a switch such as a broadcast's ``all`` turns a mistyped body
    into a send to everyone."""

    default_error_messages = {"invalid": "must be true or false (a JSON boolean)."}

    def to_internal_value(self, data):
        if data is True or data is False:
            return data
        self.fail("invalid")


class VerbatimCharField(serializers.CharField):
    """A string kept exactly as sent: DRF's CharField strips leading and trailing whitespace,
    which changed what a product team wrote (an SMS's indented line or trailing newline) and let
    ``" u-1"`` on a send reach the recipient ``u-1`` while ``PUT /recipients/ u-1`` had created
    another. Whitespace alone is still blank, as trimming made it: ``""`` with ``allow_blank``
    (so push content of spaces is still ``empty_content``), else refused."""

    def __init__(self, **kwargs):
        kwargs["trim_whitespace"] = False
        super().__init__(**kwargs)

    def run_validation(self, data=serializers.empty):
        if isinstance(data, str) and not data.strip():
            data = ""
        return super().run_validation(data)


def external_id_field(**kwargs) -> VerbatimCharField:
    """A recipient's external id as a request names it: matched exactly as stored, 1 to 255
    characters (notify.validators.external_id)."""
    return VerbatimCharField(max_length=255, validators=[validators.external_id], **kwargs)


class StorableJSONObject(serializers.DictField):
    """A free-form JSON object (template data, push data) whose keys and strings, at any depth,
    PostgreSQL can store: a NUL or a lone surrogate is a 400 naming its path (e.g.
    ``data.a.b.0``) instead of a 500 from jsonb or from UTF-8 encoding further on."""

    def to_internal_value(self, data):
        return validators.storable_json(super().to_internal_value(data))


class PushContent(StrictSerializer):
    title = VerbatimCharField(max_length=256, required=False, allow_blank=True)
    body = VerbatimCharField(max_length=4000, required=False, allow_blank=True)
    data = StorableJSONObject(required=False)
    badge = serializers.IntegerField(min_value=0, required=False)
    sound = serializers.CharField(max_length=64, required=False)
    image = serializers.URLField(required=False)
    url = serializers.URLField(required=False)


class SMSContent(StrictSerializer):
    body = VerbatimCharField(max_length=1600)


class EmailContent(StrictSerializer):
    from_name = serializers.CharField(max_length=256, required=False,
                                      help_text="display name of the sender (RFC 2047-encoded when not ASCII)")
    subject = VerbatimCharField(max_length=998)
    text = VerbatimCharField(required=False, allow_blank=True)
    html = VerbatimCharField(required=False, allow_blank=True)


class Content(StrictSerializer):
    push = PushContent(required=False)
    sms = SMSContent(required=False)
    email = EmailContent(required=False)


#: How far ahead a ``send_at`` may be: a notification is for soon, and scheduled rows should not
#: pile up for months.
MAX_SEND_AHEAD = dt.timedelta(days=30)
#: How far in the past a ``send_at`` may be (the caller's clock, the request's transit); an
#: older one is a mistake, not "now".
SEND_AT_TOLERANCE = dt.timedelta(seconds=60)


class AwareDateTimeField(serializers.DateTimeField):
    """An RFC 3339 date-time with its offset (``2026-03-08T09:00:00+09:00``, ``...Z``); a naive
    one is refused, since the server's zone is not the caller's (RFC 3339 section 5.6 makes the
    offset part of a date-time)."""

    default_error_messages = {"naive": "give the offset (RFC 3339), e.g. 2026-03-08T09:00:00+09:00 or "
                                       "2026-03-08T00:00:00Z"}

    def to_internal_value(self, value):
        if isinstance(value, str):
            try:
                parsed = parse_datetime(value)
            except ValueError:
                parsed = None  # the parent names the error
            if parsed is not None and parsed.tzinfo is None:
                self.fail("naive")
        return super().to_internal_value(value)


class SendSerializer(StrictSerializer):
    """``POST /api/v1/notifications``: a template name with data, or explicit content."""

    recipient = external_id_field()
    template = serializers.SlugField(max_length=100, required=False)
    template_version = serializers.IntegerField(min_value=1, required=False,
                                                help_text="a published version to use (default: the latest)")
    data = StorableJSONObject(required=False)
    content = Content(required=False)
    channels = serializers.ListField(child=serializers.ChoiceField(CHANNEL_CHOICES), required=False,
                                     allow_empty=False, max_length=len(CHANNEL_CHOICES))
    category = serializers.SlugField(max_length=64, required=False)
    priority = serializers.ChoiceField(["high", "normal"], required=False)
    ttl = serializers.IntegerField(min_value=1, max_value=28 * 24 * 3600, required=False)  # FCM's maximum
    event_id = VerbatimCharField(max_length=255, required=False)
    send_at = AwareDateTimeField(
        required=False, help_text=f"when to send (RFC 3339 with an offset), up to {MAX_SEND_AHEAD.days} days "
                                  "ahead; its deliveries are `scheduled` until then (cancel with DELETE)")
    fallback = serializers.ListField(
        child=serializers.ChoiceField(PREFERENCE_CHOICES), required=False, min_length=2,
        max_length=len(PREFERENCE_CHOICES),
        help_text="channels or content groups (`push`: all push channels) tried in this order: the next one only "
                  "when every delivery of the one before ended without being sent (no device or address, opted "
                  "out, a dead token, ...); not together with `channels`")

    def validate_send_at(self, value):
        now = timezone.now()
        if value < now - SEND_AT_TOLERANCE:
            raise serializers.ValidationError("in the past")
        if value > now + MAX_SEND_AHEAD:
            raise serializers.ValidationError(f"more than {MAX_SEND_AHEAD.days} days ahead")
        return value

    def validate(self, attrs):
        if "fallback" in attrs:
            if "channels" in attrs:
                message = "give either channels or fallback"
                raise serializers.ValidationError({"channels": [message], "fallback": [message]})
            try:
                fallback_steps(attrs["fallback"])
            except ValueError as exc:
                raise serializers.ValidationError({"fallback": [str(exc)]}) from None
        if bool(attrs.get("template")) == bool(attrs.get("content")):
            raise serializers.ValidationError({"template": ["give either template (with data) or content"]})
        if "template_version" in attrs and not attrs.get("template"):
            raise serializers.ValidationError({"template_version": ["only with template"]})
        if "channels" in attrs and len(set(attrs["channels"])) != len(attrs["channels"]):
            raise serializers.ValidationError({"channels": ["duplicate channel"]})
        return attrs


class BatchSerializer(StrictSerializer):
    """``POST /api/v1/notifications/batch``: up to 500 send requests, each with its own
    ``event_id`` as idempotency key."""

    notifications = SendSerializer(many=True, allow_empty=False, max_length=settings.NOTIFY_BATCH_MAX_ITEMS)


class BulkItemSerializer(StrictSerializer):
    """One item of a bulk call: the recipient, its data and its idempotency key, by the same
    field rules as a single send's (SendSerializer)."""

    recipient = copy.deepcopy(SendSerializer._declared_fields["recipient"])
    data = copy.deepcopy(SendSerializer._declared_fields["data"])
    event_id = copy.deepcopy(SendSerializer._declared_fields["event_id"])


class BulkSerializer(SendSerializer):
    """``POST /api/v1/notifications/bulk``: one template to up to NOTIFY_BULK_MAX_RECIPIENTS
    recipients, with a single send's shared fields (SendSerializer's rules). ``recipients`` is
    checked item by item by :func:`bulk_item`, so that one bad item is named by its index and,
    with ``on_invalid: skip``, does not refuse the others."""

    recipient = None
    data = None
    content = None
    event_id = None
    template = serializers.SlugField(max_length=100)
    recipients = serializers.ListField(
        child=serializers.JSONField(), allow_empty=False, max_length=settings.NOTIFY_BULK_MAX_RECIPIENTS,
        help_text=f"up to {settings.NOTIFY_BULK_MAX_RECIPIENTS} items `{{\"recipient\": external id, \"data\": "
                  "{...}, \"event_id\": idempotency key}` (data and event_id optional)")
    on_invalid = serializers.ChoiceField(
        ["reject_all", "skip"], default="reject_all",
        help_text="`reject_all`: one refused item refuses the call (400 `bulk_rejected`, nothing written); "
                  "`skip`: the valid items are accepted and the refused ones listed by index")


_BULK_ITEM = BulkItemSerializer()


def bulk_item(raw) -> dict:
    """Validate one item of a bulk call (one serializer instance for all items: building one
    per item would cost more than the checks).

    Raises:
        ValidationError: the item's errors by field.
    """
    return _BULK_ITEM.run_validation(raw)


class RecipientSerializer(serializers.ModelSerializer):
    email = serializers.CharField(required=False, allow_blank=True, max_length=320)
    phone = serializers.CharField(required=False, allow_blank=True, max_length=16)
    muted = serializers.BooleanField(required=False, help_text="pause every notification except required "
                                                               "categories; false ends a pause")
    muted_until = AwareDateTimeField(required=False, allow_null=True,
                                     help_text="RFC 3339 with offset, in the future: the pause ends then "
                                               "(null: until `muted` is false); implies `muted: true`")
    tags = serializers.ListField(child=serializers.CharField(), required=False,
                                 help_text="labels for broadcast segments: at most 32 slugs (lower-case letters, "
                                           "digits, `-`, `_`; 1-32 characters each); replaces the list")

    class Meta:
        model = Recipient
        fields = ["external_id", "name", "locale", "timezone", "email", "phone", "muted", "muted_until",
                  "quiet_hours", "tags", "created_at", "updated_at"]
        read_only_fields = ["external_id", "created_at", "updated_at"]

    def validate_email(self, value):
        return validators.email_address(value) if value else ""

    def validate_phone(self, value):
        return validators.e164(value) if value else ""

    def validate_timezone(self, value):
        return validators.timezone_name(value)

    def validate_tags(self, value):
        return validators.tags(value)

    def validate_quiet_hours(self, value):
        """``"HH:MM-HH:MM"`` on the recipient's clock, ``"none"`` (never, whatever the category's or
        app's), or ``""`` (theirs); notify.policy.parse_quiet_hours."""
        try:
            policy.parse_quiet_hours(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None
        return value

    def validate_muted_until(self, value):
        if value is not None and value <= timezone.now():
            raise serializers.ValidationError("must be in the future", code="not_future")
        return value

    def validate(self, attrs):
        unknown = set(getattr(self, "initial_data", {}) or {}) - set(self.fields)
        if unknown:
            raise serializers.ValidationError({name: ["unknown field"] for name in sorted(unknown)})
        # One change of the pause: an end time pauses; unpausing forgets the end time.
        if attrs.get("muted_until") is not None:
            if attrs.get("muted") is False:
                raise serializers.ValidationError({"muted_until": ["only with muted true"]})
            attrs["muted"] = True
        elif attrs.get("muted") is False:
            attrs["muted_until"] = None
        return attrs


#: Longest Web Push endpoint accepted, in UTF-8 bytes. Endpoints of the push services are well
#: under 1 KB; the bound keeps (app, platform, token) under the unique index's 2704-byte row limit.
MAX_ENDPOINT_BYTES = 2048


def _address_errors(exc: InvalidAddress) -> list | dict:
    """An adapter's InvalidAddress as DRF error detail: one message per problem, each with the
    adapter's reason as its code (``error.reasons``), under the part of the address it names
    (``subscription.keys.p256dh``), or on the address itself."""
    whole = [serializers.ErrorDetail(str(p), code=p.reason) for p in exc.problems if not p.field]
    if whole:
        return whole
    parts: dict[str, list] = {}
    for problem in exc.problems:
        parts.setdefault(problem.field, []).append(serializers.ErrorDetail(str(problem), code=problem.reason))
    return parts


class DeviceSerializer(serializers.ModelSerializer):
    """A device of one of the platforms the device channels declare. Subscription channels
    (Web Push) take ``subscription``, token channels ``token``; the channel's adapter validates
    it (channels.base.Channel.validate_address)."""

    platform = serializers.ChoiceField(list(registry.device_platforms()))
    # APNs tokens are 64 characters and FCM tokens ~160; 1024 leaves room for format changes while
    # keeping the token under the unique index's 2704-byte row limit (a longer one was a 500).
    token = serializers.CharField(required=False, max_length=1024)
    subscription = serializers.JSONField(required=False)

    class Meta:
        model = Device
        fields = ["id", "platform", "token", "subscription", "active", "created_at"]
        read_only_fields = ["id", "active", "created_at"]

    def validate(self, attrs):
        channel = registry.device_platforms()[attrs["platform"]]
        cls = registry.channel_class(channel)
        field = "subscription" if cls.address_kind is AddressKind.SUBSCRIPTION else "token"
        value = attrs.get(field)
        if not value:
            raise serializers.ValidationError({field: [f"required for platform {attrs['platform']}"]})
        if field == "subscription":
            try:
                validators.storable_json(value)
            except serializers.ValidationError as exc:
                raise serializers.ValidationError({"subscription": exc.detail}) from None
        try:
            # The channel's primary provider's configuration decides (e.g. which private push
            # services are allowed).
            value = cls.validate_address(value, providers.config_for(settings.NOTIFY_CHANNEL_PROVIDERS[channel][0]))
        except InvalidAddress as exc:
            raise serializers.ValidationError({field: _address_errors(exc)}) from None
        if field == "subscription":
            if len(value["endpoint"].encode()) > MAX_ENDPOINT_BYTES:
                raise serializers.ValidationError(
                    {"subscription": {"endpoint": [f"longer than {MAX_ENDPOINT_BYTES} bytes"]}})
            attrs["subscription"], attrs["token"] = value, value["endpoint"]
        else:
            attrs["token"], attrs["subscription"] = value, None
        return attrs


class PreferenceSerializer(StrictSerializer):
    """One opt-in/opt-out; ``channel`` may name a content group (``push``) for all its channels."""

    channel = serializers.ChoiceField(PREFERENCE_CHOICES)
    category = serializers.SlugField(max_length=64, required=False, allow_blank=True, default="")
    enabled = serializers.BooleanField()


class PreferenceListSerializer(StrictSerializer):
    preferences = PreferenceSerializer(many=True)


class DeliveryEventOut(serializers.Serializer):
    kind = serializers.CharField(help_text="delivered, undelivered, bounced, complained, opened, clicked, "
                                           "unsubscribed (or the provider's own sent)")
    occurred_at = serializers.DateTimeField(help_text="the provider's time of the event")
    reason = serializers.CharField(help_text="the provider's error code or bounce type, when it gave one")


class DeliveryOut(serializers.Serializer):
    id = serializers.UUIDField()
    channel = serializers.CharField()
    to = serializers.CharField(source="address")
    status = serializers.CharField()
    reason = serializers.CharField()
    attempts = serializers.IntegerField()
    provider_message_id = serializers.CharField()
    sent_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    step = serializers.IntegerField(help_text="its place in the notification's fallback (0 without one)")
    events = DeliveryEventOut(many=True, help_text="what its provider and its recipient reported after it was "
                                                   "sent, in the provider's order")
    scheduled_for = serializers.SerializerMethodField(
        help_text="while `scheduled`: the instant it is released (its send_at, the end of quiet hours)")

    def get_scheduled_for(self, delivery) -> dt.datetime | None:
        return delivery.next_attempt_at if delivery.status == DeliveryStatus.SCHEDULED else None


class NotificationOut(serializers.Serializer):
    id = serializers.UUIDField()
    event_id = serializers.CharField(source="idempotency_key", allow_null=True,
                                     help_text="its idempotency key (`Idempotency-Key` or `event_id`); null "
                                               "without one")
    recipient = serializers.CharField(source="recipient.external_id")
    category = serializers.CharField()
    priority = serializers.CharField()
    ttl = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    send_at = serializers.DateTimeField(allow_null=True, help_text="when it was scheduled for, if it was")
    cancelled_at = serializers.DateTimeField(allow_null=True,
                                             help_text="when a DELETE cancelled what of it had not started")
    fallback = serializers.ListField(child=serializers.ListField(child=serializers.CharField()),
                                     help_text="the fallback's steps, each a list of channels; empty without one")
    delivered_by = serializers.SerializerMethodField(
        help_text="the channel of the first delivery sent, or null while none is (with a fallback: the channel "
                  "that delivered)")
    deliveries = DeliveryOut(many=True)

    def get_delivered_by(self, notification) -> str | None:
        sent = [d for d in notification.deliveries.all() if d.status in REACHED_PROVIDER]
        return min(sent, key=lambda d: (d.sent_at, d.step)).channel if sent else None


def preferences_out(recipient: Recipient) -> list[dict]:
    return [{"channel": p.channel, "category": p.category, "enabled": p.enabled, "source": p.source}
            for p in Preference.objects.filter(recipient=recipient).order_by("channel", "category")]
