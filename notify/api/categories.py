"""The categories API (``/api/v1/categories``): an app's kinds of notification (``security``,
``transactional``, ``marketing``) and the rules its recipients' choices follow (notify.policy):
whether recipients may opt out at all (``required``), the default per channel, rate limits,
what happens over a limit, quiet hours; and whether its emails are tracked (``tracking``).

Every look-up is scoped to the caller's app. Writes go through ``Model.save()``/``delete()``,
whose signals drop the app's cached categories (notify.cache.load_categories), and the
worker's claim reads the row itself, so a change applies to the very next send and to
deliveries already queued. The field rules below are also the admin's (notify.admin).
"""

from __future__ import annotations

from django.db import IntegrityError, transaction
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import policy, ratelimit, scopes
from ..errors import SendRejected
from ..models import Category
from . import serializers as s
from .template_serializers import ApiError

class CategoryRefused(SendRejected):
    """A categories-API request that cannot be served (answered like SendRejected)."""


# --- the field rules (shared with the admin's form) --------------------------------------------

def _object(value, what: str) -> dict:
    if not isinstance(value, dict):
        raise serializers.ValidationError(f"must be a JSON object of {what}")
    return value


def check_defaults(value) -> dict:
    """``{"<channel or content group>": bool}``: whether a recipient who never chose gets the
    category on that channel.

    Raises:
        ValidationError: not an object; a key that is no enabled channel or content group
            (``channels.registry``), by key; a value that is not a boolean, by key.
    """
    value = _object(value, "channel or content group → true/false")
    errors = {}
    for key, enabled in value.items():
        if key not in s.PREFERENCE_CHOICES:
            errors[str(key)] = [f"not a channel or content group: one of {', '.join(s.PREFERENCE_CHOICES)}"]
        elif not isinstance(enabled, bool):
            errors[str(key)] = ["must be true or false"]
    if errors:
        raise serializers.ValidationError(errors)
    return value


def check_rate_limits(value) -> dict:
    """``{"<channel, content group or *>": "3/hour;10/day"}``: limits per recipient and channel
    (notify.ratelimit.check_entry, the one copy of the rule), each entry reported under its key.

    Raises:
        ValidationError: not an object; an unknown key or an unreadable limit, by key.
    """
    value = _object(value, f"channel, content group or {ratelimit.EVERY_CHANNEL!r} → limits such as "
                           '"3/hour;10/day"')
    errors = {}
    for key, limits in value.items():
        try:
            ratelimit.check_entry(key, limits)
        except ValueError as exc:
            errors[str(key)] = [str(exc)]
    if errors:
        raise serializers.ValidationError(errors)
    return value


def check_quiet_hours(value: str) -> str:
    """``"HH:MM-HH:MM"`` (the recipient's wall clock), ``"none"`` or ``""`` (the app's).

    Raises:
        ValidationError: anything else (notify.policy.parse_quiet_hours).
    """
    try:
        policy.parse_quiet_hours(value)
    except ValueError as exc:
        raise serializers.ValidationError(str(exc)) from None
    return value


# --- shapes ------------------------------------------------------------------------------------

class CategoryIn(s.StrictSerializer):
    """``PUT /api/v1/categories/<name>``: creates the category with the given fields (the rest
    take their defaults) or changes only the given fields of an existing one."""

    name = serializers.SlugField(max_length=64, required=False, help_text="optional; must be the URL's name")
    label = serializers.CharField(max_length=100, required=False, allow_blank=True,
                                  help_text="shown to recipients on the preference page")
    description = serializers.CharField(max_length=300, required=False, allow_blank=True)
    required = serializers.BooleanField(required=False, help_text="recipients cannot opt out, mute or rate-limit "
                                                                  "it, and quiet hours do not hold it")
    defaults = serializers.JSONField(required=False, help_text='`{"<channel or content group>": bool}`: whether a '
                                                              "recipient who never chose gets it (absent: true)")
    rate_limits = serializers.JSONField(required=False, help_text='`{"<channel, content group or *>": '
                                                                  '"3/hour;10/day"}` per recipient and channel')
    over_limit = serializers.ChoiceField(Category.OverLimit.values, required=False)
    quiet_hours = serializers.CharField(max_length=16, required=False, allow_blank=True,
                                        help_text='`"HH:MM-HH:MM"` in the recipient\'s time zone, `"none"`, or '
                                                  "empty for the app's")
    tracking = serializers.BooleanField(required=False, help_text="false: its emails get neither the open pixel nor "
                                                                  "click redirects, whatever the app's switches")

    def validate_defaults(self, value):
        return check_defaults(value)

    def validate_rate_limits(self, value):
        return check_rate_limits(value)

    def validate_quiet_hours(self, value):
        return check_quiet_hours(value)


class CategoryOut(serializers.ModelSerializer):
    class Meta:
        model = Category
        fields = ["name", "label", "description", "required", "defaults", "rate_limits", "over_limit", "quiet_hours",
                  "tracking", "created_at", "updated_at"]


INVALID = OpenApiResponse(ApiError, description="`invalid_request`: invalid fields by path (e.g. "
                                                "`defaults.sms`); nothing is written")
NOT_FOUND = OpenApiResponse(ApiError, description="`category_not_found`: no such category in this app")


def _category(request, name: str) -> Category:
    category = Category.objects.filter(app_id=request.user.app_id, name=name).first()
    if category is None:
        raise CategoryRefused("category_not_found", f"no category named {name!r}", status=404,
                              fields={"name": ["not found"]})
    return category


def _name(name: str) -> str:
    """The URL's name, checked as the model's slug (400 naming ``name``)."""
    try:
        return serializers.SlugField(max_length=64).run_validation(name)
    except serializers.ValidationError as exc:
        raise serializers.ValidationError({"name": exc.detail}) from None


# --- views -------------------------------------------------------------------------------------

class CategoryListView(APIView):
    """``GET /api/v1/categories``: the app's categories, by name."""

    required_scope = scopes.TEMPLATES

    @extend_schema(responses={200: CategoryOut(many=True)})
    def get(self, request):
        rows = Category.objects.filter(app_id=request.user.app_id).order_by("name")
        return Response(CategoryOut(rows, many=True).data)


class CategoryDetailView(APIView):
    """``GET``/``PUT``/``DELETE /api/v1/categories/<name>``."""

    required_scope = scopes.TEMPLATES

    @extend_schema(responses={200: CategoryOut, 404: NOT_FOUND})
    def get(self, request, name):
        return Response(CategoryOut(_category(request, name)).data)

    @extend_schema(request=CategoryIn, responses={200: CategoryOut, 201: CategoryOut, 400: INVALID})
    def put(self, request, name):
        name = _name(name)
        serializer = CategoryIn(data=request.data)
        serializer.is_valid(raise_exception=True)
        changes = dict(serializer.validated_data)
        if changes.pop("name", name) != name:
            raise serializers.ValidationError({"name": [f"must be the URL's name, {name!r}"]})
        app_id = request.user.app_id
        try:
            with transaction.atomic():
                category, created = Category.objects.select_for_update().get_or_create(
                    app_id=app_id, name=name, defaults=changes)
                if not created and changes:
                    for field, value in changes.items():
                        setattr(category, field, value)
                    category.save()
        except IntegrityError:
            # A concurrent PUT created it first: apply this one as the update it then is.
            with transaction.atomic():
                category = Category.objects.select_for_update().get(app_id=app_id, name=name)
                for field, value in changes.items():
                    setattr(category, field, value)
                category.save()
            created = False
        return Response(CategoryOut(category).data, status=201 if created else 200)

    @extend_schema(request=None, responses={204: None, 404: NOT_FOUND})
    def delete(self, request, name):
        """Deleting a category leaves its sends to the defaults (opted in everywhere, not
        required); recipients' preference rows for it are kept."""
        _category(request, name).delete()
        return Response(status=204)
