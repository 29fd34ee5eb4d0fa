"""Strict fields and forms that every endpoint shares: JSON types as the schema states them, no unknown fields."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver
from rest_framework import serializers
from rest_framework.utils.serializer_helpers import BindingDict

from tasks.models import Task
from tasks.registry import registered_names

REASON_MAX_LENGTH = 500


_TASK_FIELD_NAMES = frozenset(f.name for f in Task._meta.get_fields()) | {"payload", "owner_id", "is_deleted"}


class StrictCharField(serializers.CharField):
    """JSON strings only, stored as sent: a number is not turned into text, whitespace is not trimmed."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """JSON ``true`` or ``false`` only (not "yes", 1 or "true")."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class StrictIntegerField(serializers.IntegerField):
    """JSON integers only (not "5", 5.0 or true)."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class QueryBooleanField(serializers.BooleanField):
    """``true`` or ``false`` exactly, as written in a query string."""

    def to_internal_value(self, data: Any) -> bool:
        if isinstance(data, bool):  # the parameter was left out: DRF passes the field's default
            return data
        if data not in ("true", "false"):
            self.fail("invalid")
        return data == "true"


def refuse_null_characters(value: Any) -> None:
    """PostgreSQL stores no NUL in text or jsonb: refuse it anywhere in a JSON document (400, not 500)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise serializers.ValidationError("Null characters are not allowed.")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            refuse_null_characters(key)
            refuse_null_characters(item)
    elif isinstance(value, list):
        for item in value:
            refuse_null_characters(item)


def json_object(**kwargs: Any) -> serializers.DictField:
    """A JSON object of any content, without NUL characters."""
    return serializers.DictField(validators=[refuse_null_characters], **kwargs)


_STRICT = {
    serializers.CharField: StrictCharField,
    serializers.BooleanField: StrictBooleanField,
    serializers.IntegerField: StrictIntegerField,
}


def handler_field(**kwargs: Any) -> serializers.ChoiceField:
    """The registered handlers, read from settings when the serializer is built (schema and validation)."""
    return serializers.ChoiceField(choices=registered_names(), help_text="A handler named in TASK_HANDLERS.", **kwargs)


_SHARED_FIELDS: dict[type, BindingDict] = {}


@receiver(setting_changed, dispatch_uid="tasks.api.serializers.shared_fields")
def _forget_shared_fields(**kwargs: Any) -> None:
    """Fields read settings when built (TASK_HANDLERS' choices): rebuild them when a setting changes."""
    _SHARED_FIELDS.clear()


class SharedFieldsMixin(serializers.Serializer):
    """Build a serializer's fields once per class and share them between its instances.

    ModelSerializer introspects the model again for every instance: about a
    millisecond for Task, more than validating and rendering a task together.
    The fields of these serializers keep no per-request state and never read the
    serializer's context or instance, so one set, bound to a bare prototype, serves
    every instance (DRF fields that need the context, such as hyperlinks or
    ``CurrentUserDefault``, must not be used on a serializer with this mixin).
    """

    @property
    def fields(self) -> BindingDict:
        cls = type(self)
        shared = _SHARED_FIELDS.get(cls)
        if shared is None:
            prototype = cls()
            shared = _SHARED_FIELDS[cls] = BindingDict(prototype)
            for name, field in prototype.get_fields().items():
                shared[name] = field
        return shared


class RejectUnknownFieldsMixin(serializers.Serializer):
    """Answer 400 for fields a client may not write, instead of silently ignoring them."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            refused = sorted(str(name) for name in set(data) - writable)
            if refused:
                raise serializers.ValidationError(
                    {
                        name: [
                            "This field is read-only: the server sets it."
                            if name in self.fields or name in _TASK_FIELD_NAMES
                            else "Unknown field."
                        ]
                        for name in refused
                    }
                )
        return super().to_internal_value(data)


class StrictModelSerializer(SharedFieldsMixin, RejectUnknownFieldsMixin, serializers.ModelSerializer):
    """Writes take JSON types as the schema states them, and refuse fields that are not writable."""

    serializer_field_mapping = {
        model_field: _STRICT.get(field, field)
        for model_field, field in serializers.ModelSerializer.serializer_field_mapping.items()
    }


class ReasonSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    reason = StrictCharField(
        max_length=REASON_MAX_LENGTH, required=False, help_text="Why; recorded in the task's history."
    )


class ConfirmSerializer(serializers.Serializer):
    """Query parameters of destructive requests: an explicit ``confirm=true``."""

    confirm = QueryBooleanField(
        required=False, default=False, help_text="Must be `true`: the request changes the task for good."
    )

    def validate_confirm(self, value: bool) -> bool:
        if not value:
            raise serializers.ValidationError(self.context.get("confirm_message", "Repeat with confirm=true."))
        return value
