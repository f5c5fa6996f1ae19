"""Django admin: apps and keys, categories with their rules, recipients with devices,
preferences (opt-outs), pause and quiet hours, erasure of personal data, templates
with their versions (add a draft, publish it, archive; a preview page per template),
read-only notifications and deliveries, and dead-letter replay."""

import re
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Max, Q
from django.forms.formsets import DELETION_FIELD_NAME
from django.forms.models import BaseInlineFormSet
from django.http import Http404, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from rest_framework import serializers as drf_serializers
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey

from channels import registry

from . import admin_analytics, deadletters, privacy
from . import scopes as scope_list
from .admin_preview import PreviewForm, PrettyJSONField, columns, initial_data, json_textarea
from .models import App, AppAPIKey, Category, Delivery, DeliveryLog, Device, Notification, Preference, Recipient, \
    Template, TemplateVersion
from .api.categories import check_defaults, check_quiet_hours, check_rate_limits
from .api.errors import flatten
from .api.template_serializers import VersionIn


@admin.register(App)
class AppAdmin(admin.ModelAdmin):
    list_display = ["name", "created_at"]


class AppAPIKeyForm(forms.ModelForm):
    """A key's scopes as checkboxes (notify.scopes: one per scope, with what it allows)."""

    scopes = forms.TypedMultipleChoiceField(
        choices=[(name, f"{name}: {meaning}") for name, meaning in scope_list.SCOPES.items()],
        widget=forms.CheckboxSelectMultiple, required=False, initial=scope_list.default,
        help_text="What the key may do; takes effect on the key's next request.")

    class Meta:
        model = AppAPIKey
        fields = ["name", "app", "scopes", "expiry_date", "revoked"]


# The library's own key model is not used: keys belong to apps (AppAPIKey). Its admin page would
# make keys that every request refuses. (Its admin module registers first: INSTALLED_APPS order.)
if admin.site.is_registered(APIKey):
    admin.site.unregister(APIKey)


@admin.register(AppAPIKey)
class AppAPIKeyAdmin(APIKeyModelAdmin):
    """djangorestframework-api-key's admin: the key is shown once, in a message after it is
    created (only its hash is stored); here with its app and scopes."""

    form = AppAPIKeyForm
    list_display = [*APIKeyModelAdmin.list_display, "app", "scope_list"]

    @admin.display(description="scopes")
    def scope_list(self, obj: AppAPIKey) -> str:
        return ", ".join(obj.scopes) or "none"


class DeviceInline(admin.TabularInline):
    model = Device
    fields = ["platform", "token", "active", "deactivated_reason", "last_seen_at"]
    readonly_fields = ["last_seen_at"]
    extra = 0


def _form_errors(check, value):
    """Run an API field rule (notify.api.categories.check_*) for a form field: its messages,
    with their paths (``sms: must be true or false``), as the form's error."""
    try:
        return check(value)
    except drf_serializers.ValidationError as exc:
        raise forms.ValidationError([f"{path}: {message}" if path != "non_field_errors" else message
                                     for path, messages_ in flatten(exc.detail).items() for message in messages_])


class CategoryForm(forms.ModelForm):
    """A category's rules, checked by the same rules as ``PUT /api/v1/categories/<name>``."""

    defaults = PrettyJSONField(required=False, widget=json_textarea(4),
                               help_text='<code>{"&lt;channel or content group&gt;": true|false}</code>: whether a '
                                         "recipient who never chose gets it there (absent: true).")
    rate_limits = PrettyJSONField(required=False, widget=json_textarea(4),
                                  help_text='<code>{"&lt;channel, content group or *&gt;": "3/hour;10/day"}</code> '
                                            "per recipient and channel; absent: NOTIFY_RATE_LIMIT.")

    class Meta:
        model = Category
        fields = ["app", "name", "label", "description", "required", "defaults", "rate_limits", "over_limit",
                  "quiet_hours", "tracking"]

    def clean_defaults(self):
        return _form_errors(check_defaults, self.cleaned_data["defaults"] or {})

    def clean_rate_limits(self):
        return _form_errors(check_rate_limits, self.cleaned_data["rate_limits"] or {})

    def clean_quiet_hours(self):
        return _form_errors(check_quiet_hours, self.cleaned_data["quiet_hours"])


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    """An app's categories; a change applies to the next send and to deliveries already queued
    (the worker's claim reads the row)."""

    form = CategoryForm
    list_display = ["name", "app", "label", "required", "over_limit", "quiet_hours", "updated_at"]
    list_filter = ["app", "required"]
    search_fields = ["name", "label"]


class PreferenceForm(forms.ModelForm):
    """One opt-in/opt-out; a required category of the recipient's app cannot be switched off
    (as in the API)."""

    channel = forms.ChoiceField(choices=lambda: [(c, c) for c in registry.channels()])

    class Meta:
        model = Preference
        fields = ["recipient", "channel", "category", "enabled"]

    def clean(self):
        cleaned = super().clean()
        recipient = cleaned.get("recipient") or (
            Recipient.objects.filter(pk=self.instance.recipient_id).first() if self.instance.recipient_id else None)
        category = cleaned.get("category")
        if recipient is not None and category and cleaned.get("enabled") is False and Category.objects.filter(
                app_id=recipient.app_id, name=category, required=True).exists():
            raise forms.ValidationError({"enabled": f"{category!r} is a required category: recipients cannot opt out."})
        return cleaned


class PreferenceInline(admin.TabularInline):
    model = Preference
    form = PreferenceForm
    fields = ["channel", "category", "enabled", "source", "updated_at"]
    readonly_fields = ["source", "updated_at"]
    extra = 0


class RecipientForm(forms.ModelForm):
    class Meta:
        model = Recipient
        fields = "__all__"

    def clean_quiet_hours(self):
        return _form_errors(check_quiet_hours, self.cleaned_data["quiet_hours"])

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("muted_until") and not cleaned.get("muted"):
            raise forms.ValidationError({"muted": "Tick it for the pause to end at “muted until”."})
        return cleaned


@admin.register(Recipient)
class RecipientAdmin(admin.ModelAdmin):
    """Recipients with their devices and preferences; the pause ("muted", until "muted until"
    or until unticked) and quiet hours hold every category but the required ones. Saving clears
    the cached profile (notify.cache signals), so the next send and queued deliveries see it."""

    form = RecipientForm
    list_display = ["external_id", "app", "name", "email", "phone", "locale", "muted"]
    list_filter = ["app", "muted"]
    search_fields = ["external_id", "email", "phone"]
    inlines = [DeviceInline, PreferenceInline]
    actions = ["erase_personal_data"]

    @admin.action(description="Erase personal data", permissions=["delete"])
    def erase_personal_data(self, request, queryset):
        """Erase each chosen recipient (notify.privacy.erase_recipient, each in its own
        transaction), after a confirmation page."""
        if request.POST.get("post") != "yes":
            return TemplateResponse(request, "admin/notify/recipient/erase_confirmation.html", {
                **self.admin_site.each_context(request), "title": "Erase personal data", "subtitle": None,
                "opts": self.opts, "recipients": queryset.select_related("app").order_by("pk"),
                "action_checkbox_name": ACTION_CHECKBOX_NAME, "media": self.media})
        done = [e for e in map(privacy.erase_recipient, queryset.order_by("pk").values_list("pk", flat=True)) if e]
        self.message_user(request, f"Personal data of {len(done)} recipient(s) erased: "
                                   f"{sum(e.devices for e in done)} device(s) and {sum(e.preferences for e in done)} "
                                   f"preference(s) deleted, {sum(e.deliveries for e in done)} deliveries kept without "
                                   f"addresses, {sum(len(e.cancelled) for e in done)} cancelled.", messages.SUCCESS)

    def save_formset(self, request, form, formset, change):
        if formset.model is Preference:
            for inline_form in formset.forms:
                if inline_form.has_changed():
                    inline_form.instance.source = "admin"
        super().save_formset(request, form, formset, change)


@admin.register(Preference)
class PreferenceAdmin(admin.ModelAdmin):
    form = PreferenceForm
    list_display = ["recipient", "channel", "category", "enabled", "source", "updated_at"]
    list_filter = ["channel", "enabled", "source"]
    search_fields = ["recipient__external_id"]
    readonly_fields = ["source"]

    def save_model(self, request, obj, form, change):
        obj.source = "admin"
        super().save_model(request, obj, form, change)


def version_errors(content: Any, variants: Any, default_locale: str | None) -> list[str]:
    """What is wrong with a version's ``content`` and ``variants``, one message per problem, by
    the same rules as the API (``notify.api.template_serializers.VersionIn``: shape, locale tags,
    the template's default locale among them, content groups and their fields, variants, and
    parts that do not compile in the rendering sandbox)."""
    if not default_locale:
        default_locale = next(iter(content), "") if isinstance(content, dict) else ""
    serializer = VersionIn(data={"content": content, "variants": variants or [], "publish": False},
                           context={"default_locale": default_locale})
    if serializer.is_valid():
        return []
    return [f"{path}: {message}" for path, messages in flatten(serializer.errors).items() for message in messages]


#: A delivery keeps its variant's name in ``Delivery.variant``.
VARIANT_NAME_MAX = Delivery._meta.get_field("variant").max_length

#: What the form for a template's first version starts with (remove the groups it does not use).
CONTENT_SKELETON = {"en": {"push": {"title": "", "body": ""}, "sms": {"body": ""},
                           "email": {"subject": "", "text": "", "html": ""}}}


class TemplateVersionForm(forms.ModelForm):
    """A version's content and variants; a published version's are shown disabled (a disabled
    field ignores what is posted), a draft's can be edited, and the empty form at the end adds
    a new draft version."""

    content = PrettyJSONField(widget=json_textarea(16),
                              help_text='Per locale and content group: <code>{"en": {"push": {"title", "body", '
                                        '"data"}, "sms": {"body"}, "email": {"subject", "text", "html", '
                                        '"from_name"}}}</code>; Jinja2 in every string.')
    variants = PrettyJSONField(required=False, widget=json_textarea(4),
                               help_text='Optional A/B variants: <code>[{"name": "a", "weight": 50, '
                                         '"content": {...}}]</code>.')

    class Meta:
        model = TemplateVersion
        fields = ["content", "variants"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.published:
            for name in ("content", "variants"):
                self.fields[name].disabled = True
                self.fields[name].help_text = ""

    @property
    def published(self) -> bool:
        return bool(self.instance.pk and self.instance.published_at)

    def _default_locale(self) -> str | None:
        # The template as posted with this form (its default locale may change in the same save).
        template = getattr(self, "parent_template", None)
        return template.default_locale if template is not None else None

    def clean_content(self):
        content = self.cleaned_data["content"]
        return content

    def clean_variants(self):
        variants = self.cleaned_data["variants"]
        if variants is None:
            variants = []
        return variants

    def clean(self):
        cleaned = super().clean()
        if not self.published and "content" in cleaned:
            errors = version_errors(cleaned["content"], cleaned.get("variants"), self._default_locale())
            if errors:
                raise forms.ValidationError(errors)
        if (self.instance.pk and not self.published and self.has_changed()
                and TemplateVersion.objects.filter(pk=self.instance.pk, published_at__isnull=False).exists()):
            raise forms.ValidationError(f"v{self.instance.number} was published meanwhile and can no longer change; "
                                        "reload the page and add a new version instead.")
        return cleaned


class TemplateVersionFormSet(BaseInlineFormSet):
    def add_fields(self, form, index):
        super().add_fields(form, index)
        form.parent_template = self.instance
        # A published version is never deleted here either (sends name it in template_version).
        if form.instance.pk and form.instance.published_at and DELETION_FIELD_NAME in form.fields:
            form.fields[DELETION_FIELD_NAME].disabled = True


class TemplateVersionInline(admin.StackedInline):
    """Every version of the template, oldest first: published ones read-only, drafts editable
    (and deletable), and one empty form, filled with the latest version's content, that saves
    as the next version (a draft: publish it with "Publish latest draft")."""

    model = TemplateVersion
    form = TemplateVersionForm
    formset = TemplateVersionFormSet
    fields = ["number", "state", "content", "variants", "preview_link"]
    readonly_fields = ["number", "state", "preview_link"]
    extra = 1
    verbose_name = "version"

    @admin.display(description="status")
    def state(self, obj):
        if not obj.pk:
            return "new draft: edit the content to save it as the next version"
        if obj.published_at:
            return format_html("published {} UTC (read-only)", f"{obj.published_at:%Y-%m-%d %H:%M:%S}")
        return "draft (editable; publish it with “Publish latest draft”)"

    @admin.display(description="preview")
    def preview_link(self, obj):
        if not obj.pk:
            return "-"
        url = reverse(f"{self.admin_site.name}:{obj._meta.app_label}_template_preview", args=[obj.template_id])
        return format_html('<a href="{}?version={}">Preview v{}</a>', url, obj.number, obj.number)


class ArchivedFilter(admin.SimpleListFilter):
    title = "archived"
    parameter_name = "archived"

    def lookups(self, request, model_admin):
        return [("no", "No"), ("yes", "Yes")]

    def queryset(self, request, queryset):
        if self.value() == "no":
            return queryset.filter(archived_at__isnull=True)
        if self.value() == "yes":
            return queryset.filter(archived_at__isnull=False)
        return queryset


def latest_draft(template: Template) -> TemplateVersion | None:
    """The newest draft of ``template`` if it is newer than every published version."""
    newest = template.versions.order_by("-number").first()
    return newest if newest is not None and newest.published_at is None else None


def publish_draft(template: Template) -> tuple[int, str]:
    """Publish ``template``'s latest draft: from the commit on, sends without a pinned version
    use it. Returns the message level and text for the operator."""
    with transaction.atomic():
        Template.objects.select_for_update().filter(pk=template.pk).first()  # one publisher at a time
        draft = latest_draft(template)
        if draft is None:
            newest = template.versions.order_by("-number").first()
            detail = f"v{newest.number} is already published" if newest else "it has no version"
            return messages.WARNING, f"{template.name}: no draft to publish ({detail})."
        errors = version_errors(draft.content, draft.variants, template.default_locale)
        if errors:
            return messages.ERROR, f"{template.name}: v{draft.number} not published: {'; '.join(errors)}"
        draft.published_at = timezone.now()
        draft.save(update_fields=["published_at"])
    return messages.SUCCESS, f"{template.name}: v{draft.number} published; sends use it from now on."


@admin.register(Template)
class TemplateAdmin(admin.ModelAdmin):
    """Templates with their versions. Editing content adds a version (the empty version form
    at the end of the change page); "Publish latest draft" (action, or the button on the change
    page) makes sends use it; "Preview" renders any version for any data, per channel;
    "Analytics" shows its counts and rates over time and compares its A/B variants."""

    list_display = ["name", "app", "category", "default_locale", "latest_published", "unpublished_draft",
                    "archived"]
    list_filter = ["app", "category", ArchivedFilter]
    search_fields = ["name"]
    fields = ["app", "name", "category", "default_locale", "truncate_push", "archived_at"]
    readonly_fields = ["archived_at"]
    inlines = [TemplateVersionInline]
    actions = ["publish_latest_draft", "archive", "unarchive"]

    class Media:
        css = {"all": ["notify/admin/templates.css"]}

    def get_queryset(self, request):
        published = Q(versions__published_at__isnull=False)
        return super().get_queryset(request).select_related("app").annotate(
            _latest_published=Max("versions__number", filter=published), _latest=Max("versions__number"))

    @admin.display(description="latest published version", ordering="_latest_published")
    def latest_published(self, obj):
        return f"v{obj._latest_published}" if obj._latest_published else "-"

    @admin.display(description="unpublished draft")
    def unpublished_draft(self, obj):
        if obj._latest and obj._latest != obj._latest_published:
            return f"v{obj._latest}"
        return "-"

    @admin.display(description="archived", boolean=True, ordering="archived_at")
    def archived(self, obj):
        return obj.archived_at is not None

    def get_formset_kwargs(self, request, obj, inline, prefix):
        kwargs = super().get_formset_kwargs(request, obj, inline, prefix)
        if isinstance(inline, TemplateVersionInline):
            newest = obj.versions.order_by("-number").first() if obj is not None and obj.pk else None
            # The new-version form starts as a copy of the latest version: editing it is editing
            # the template; left unchanged, nothing is saved.
            kwargs["initial"] = [{"content": newest.content if newest else CONTENT_SKELETON,
                                  "variants": newest.variants if newest else []}]
        return kwargs

    def save_formset(self, request, form, formset, change):
        if formset.model is not TemplateVersion:
            return super().save_formset(request, form, formset, change)
        template = form.instance
        Template.objects.select_for_update().filter(pk=template.pk).first()  # numbers are taken one at a time
        instances = formset.save(commit=False)
        for version in formset.deleted_objects:
            if version.published_at is None:
                version.delete()
        number = (template.versions.aggregate(n=Max("number"))["n"] or 0)
        for version in instances:
            if version.pk is None:
                number += 1
                version.number = number
                version.template = template
            version.save()
        formset.save_m2m()

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        context["latest_draft"] = latest_draft(obj) if obj is not None and obj.pk else None
        return super().render_change_form(request, context, add, change, form_url, obj)

    @admin.action(description="Publish latest draft", permissions=["change"])
    def publish_latest_draft(self, request, queryset):
        for template in queryset:
            level, text = publish_draft(template)
            self.message_user(request, text, level)

    @admin.action(description="Archive (sends naming it are refused)", permissions=["change"])
    def archive(self, request, queryset):
        count = 0
        for template in queryset.filter(archived_at__isnull=True):
            template.archived_at = timezone.now()
            template.save(update_fields=["archived_at", "updated_at"])  # the signal forgets its cache entries
            count += 1
        self.message_user(request, f"{count} template(s) archived; sends naming them get template_not_found.",
                          messages.SUCCESS)

    @admin.action(description="Unarchive", permissions=["change"])
    def unarchive(self, request, queryset):
        count = 0
        for template in queryset.filter(archived_at__isnull=False):
            template.archived_at = None
            template.save(update_fields=["archived_at", "updated_at"])
            count += 1
        self.message_user(request, f"{count} template(s) unarchived.", messages.SUCCESS)

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path("<path:object_id>/preview/", self.admin_site.admin_view(self.preview_view),
                 name="%s_%s_preview" % info),
            path("<path:object_id>/publish/", self.admin_site.admin_view(self.publish_view),
                 name="%s_%s_publish" % info),
            path("<path:object_id>/analytics/", self.admin_site.admin_view(self.analytics_view),
                 name="%s_%s_analytics" % info),
        ] + super().get_urls()

    def analytics_view(self, request, object_id):
        """The template's analytics: charts per metric over time, totals and rates, its variants
        compared (notify.admin_analytics)."""
        template = self.get_object(request, unquote(object_id))
        if template is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_permission(request, template):
            raise PermissionDenied
        context = {**self.admin_site.each_context(request), "title": f"Analytics of {template.name}",
                   "subtitle": None, "opts": self.opts, "original": template,
                   **admin_analytics.page(template, request.GET)}
        return TemplateResponse(request, "admin/notify/template/analytics.html", context)

    def publish_view(self, request, object_id):
        """POST only: publish the template's latest draft (the change page's button)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        template = self.get_object(request, unquote(object_id))
        if template is None:
            raise Http404
        if not self.has_change_permission(request, template):
            raise PermissionDenied
        level, text = publish_draft(template)
        self.message_user(request, text, level)
        return redirect(reverse(f"{self.admin_site.name}:notify_template_change", args=[template.pk]))

    def preview_view(self, request, object_id):
        """A template version rendered per channel for a recipient and data, without sending."""
        template = self.get_object(request, unquote(object_id))
        if template is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_permission(request, template):
            raise PermissionDenied
        result = None
        if request.method == "POST":
            form = PreviewForm(template, request.POST)
            result = form.run()
        else:
            versions = template.versions.order_by("-number")
            wanted = request.GET.get("version", "")
            chosen = (versions.filter(number=int(wanted)).first() if re.fullmatch(r"[0-9]{1,9}", wanted) else None) or versions.first()
            form = PreviewForm(template, initial={"version": chosen.number if chosen else None,
                                                  "data": initial_data(chosen)})
        context = {
            **self.admin_site.each_context(request),
            "title": f"Preview {template.name}",
            "subtitle": None,
            "opts": self.opts,
            "original": template,
            "form": form,
            "result": result,
            "columns": columns(result) if result else [],
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/notify/template/preview.html", context)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class DeliveryInline(admin.TabularInline):
    model = Delivery
    fields = ["channel", "address", "status", "reason", "attempts", "provider_message_id", "sent_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ["id", "app", "recipient", "category", "priority", "created_at"]
    list_filter = ["app", "category"]
    search_fields = ["id", "idempotency_key", "recipient__external_id"]
    inlines = [DeliveryInline]


class DeliveryLogInline(admin.TabularInline):
    model = DeliveryLog
    fields = ["at", "from_status", "to_status", "attempt", "reason", "provider_status", "duration_ms"]
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = ["id", "channel", "status", "reason", "attempts", "created_at", "sent_at"]
    list_filter = ["channel", "status"]
    search_fields = ["id", "provider_message_id", "address"]
    inlines = [DeliveryLogInline]
    actions = ["replay_dead_letters"]

    @admin.action(description="Replay selected dead-lettered deliveries")
    def replay_dead_letters(self, request, queryset):
        count = deadletters.replay([str(i) for i in queryset.values_list("id", flat=True)])
        self.message_user(request, f"{count} dead-lettered deliveries replayed", messages.SUCCESS)


# Registered in their own module; imported here so that admin autodiscovery finds them.
from . import admin_suppressions  # noqa: E402,F401
from . import admin_credentials  # noqa: E402,F401
from . import admin_oauth  # noqa: E402,F401
from . import admin_broadcasts  # noqa: E402,F401
