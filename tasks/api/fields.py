"""What a valid number, string, date and id is, decided once for every endpoint: strict fields and rules shared
by the serializers, the query parameters (filters, paging) and the JSON parser; no unknown fields."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import ISO_8601, serializers
from rest_framework.fields import SkipField, empty
from rest_framework.relations import PKOnlyObject
from rest_framework.settings import api_settings
from rest_framework.utils.serializer_helpers import BindingDict

from tasks.models import Task
from tasks.registry import registered_names
from tasks.selectors import username_column

REASON_MAX_LENGTH = 500

# The widest integer column (a signed 64-bit BIGINT on SQLite and PostgreSQL): no integer input goes beyond it.
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1
# A whole number as text: ASCII digits only, nothing around them. int() also takes "٣" (Arabic-Indic three),
# " 5", "5\n", "+5" and "1_000"; none of these is a number here.
ASCII_INTEGER = re.compile(r"-?[0-9]+")
# An RFC 3339 date-time with its time zone, as OpenAPI's ``date-time`` states, in ASCII digits (``\d`` matches any
# Unicode digit), matched whole (``$`` would let a trailing newline through).
RFC3339_DATETIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
# Characters no text column stores: NUL (PostgreSQL refuses it) and lone UTF-16 surrogates (not Unicode text;
# encoding them to UTF-8 fails, in the database driver or when the answer is rendered).
UNSTORABLE_CHARACTER = re.compile("[\x00\ud800-\udfff]")


def unstorable_text(text: str) -> str | None:
    """Why ``text`` cannot be stored (NUL, lone surrogate), or None if it can."""
    found = UNSTORABLE_CHARACTER.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "Null characters (U+0000) are not allowed."
    return f"Lone surrogate characters are not allowed (U+{ord(found.group()):04X}): send valid Unicode text."


def repeated_parameter(query: Any, name: str) -> bool:
    """True if the query string gives ``name`` more than once (``?limit=5&limit=500``): a scalar parameter is
    refused then, never reduced to one of its values; a list parameter merges them (tasks.api.filters)."""
    return hasattr(query, "getlist") and len(query.getlist(name)) > 1


def repeated_parameter_message(name: str) -> str:
    return f"Give {name} once; this parameter takes one value."


def parse_query_integer(raw: str, *, minimum: int = BIGINT_MIN, maximum: int = BIGINT_MAX) -> int:
    """A whole number from a query string, in ASCII digits and within [minimum, maximum] (ValidationError if not)."""
    if not ASCII_INTEGER.fullmatch(raw):
        raise serializers.ValidationError(f"A whole number in ASCII digits is required, not {raw[:40]!r}.")
    if len(raw.lstrip("-")) > len(str(BIGINT_MAX)):  # never fits 64 bits; int() of thousands of digits is slow
        value = BIGINT_MIN - 1 if raw.startswith("-") else BIGINT_MAX + 1
    else:
        value = int(raw)
    if value < minimum:
        raise serializers.ValidationError(f"Must be at least {minimum}.")
    if value > maximum:
        raise serializers.ValidationError(f"Must be at most {maximum}.")
    return value


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


class Int64Mixin(serializers.IntegerField):
    """Bounded to a 64-bit column unless narrower bounds are given (the schema then states minimum and maximum)."""

    def __init__(self, **kwargs: Any) -> None:
        if kwargs.get("min_value") is None:
            kwargs["min_value"] = BIGINT_MIN
        if kwargs.get("max_value") is None:
            kwargs["max_value"] = BIGINT_MAX
        super().__init__(**kwargs)


class StrictIntegerField(Int64Mixin):
    """JSON integers only (not "5", 5.0 or true), never beyond a 64-bit column (narrower bounds come from the model)."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictFloatField(serializers.FloatField):
    """JSON numbers only (not "1.5" or true), and finite."""

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            self.fail("invalid")
        try:
            value = float(data)
        except OverflowError:  # an integer beyond any float
            self.fail("invalid")
        if not math.isfinite(value):
            self.fail("invalid")
        return value


class StrictDateTimeField(serializers.DateTimeField):
    """An RFC 3339 date-time with its time zone, as OpenAPI's ``date-time`` states (no date-only, no naive time),
    returned in UTC."""

    default_error_messages = {
        "rfc3339": "Enter an RFC 3339 date-time with a time zone, e.g. 2030-01-01T09:00:00Z.",
        "range": "The date-time is out of range in UTC.",
    }

    def to_internal_value(self, value: Any) -> datetime:
        if not isinstance(value, str) or not RFC3339_DATETIME.fullmatch(value):
            self.fail("rfc3339")
        try:
            return super().to_internal_value(value).astimezone(UTC)
        except OverflowError:
            self.fail("range")


_REPEATED = object()


class QueryFieldMixin(serializers.Field):
    """A query parameter given empty (``?limit=``) is a value to validate, not "left out" as in an HTML form."""

    def get_value(self, dictionary: Any) -> Any:
        if repeated_parameter(dictionary, str(self.field_name)):
            return _REPEATED
        return dictionary.get(self.field_name, empty)

    def run_validation(self, data: Any = empty) -> Any:
        if data is _REPEATED:
            raise serializers.ValidationError(repeated_parameter_message(str(self.field_name)))
        return super().run_validation(data)


class QueryIntegerField(QueryFieldMixin, Int64Mixin):
    """A whole number as written in a query string: ASCII digits (parse_query_integer), 64-bit at most."""

    def to_internal_value(self, data: Any) -> int:
        if not isinstance(data, str):
            self.fail("invalid")
        return parse_query_integer(data)


class BlankAsNullChoiceField(serializers.ChoiceField):
    """A choice column that stores "" for none, answered as null: the schema says nullable, never an empty enum."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_null=True, **kwargs)

    def to_representation(self, value: Any) -> Any:
        return None if value in ("", None) else super().to_representation(value)


class QueryBooleanField(QueryFieldMixin, serializers.BooleanField):
    """``true`` or ``false`` exactly, as written in a query string."""

    def to_internal_value(self, data: Any) -> bool:
        if isinstance(data, bool):  # the parameter was left out: DRF passes the field's default
            return data
        if data not in ("true", "false"):
            self.fail("invalid")
        return data == "true"


def json_object(**kwargs: Any) -> serializers.DictField:
    """A JSON object of any content (its text was checked by the parser: tasks.api.parsers)."""
    return serializers.DictField(**kwargs)


_STRICT = {
    serializers.CharField: StrictCharField,
    serializers.BooleanField: StrictBooleanField,
    serializers.IntegerField: StrictIntegerField,
    serializers.BigIntegerField: StrictIntegerField,
    serializers.FloatField: StrictFloatField,
}


def handler_field(**kwargs: Any) -> serializers.ChoiceField:
    """The registered handlers, read from settings when the serializer is built (schema and validation)."""
    return serializers.ChoiceField(choices=registered_names(), help_text="A handler named in TASK_HANDLERS.", **kwargs)


_SHARED_FIELDS: dict[type, BindingDict] = {}
_MISSING = object()
_UTC_ZONES = (UTC, ZoneInfo("UTC"))
_NO_OFFSET = timedelta(0)
# Per class: (name, field, attribute, kept, render) of each readable field; attribute: the one plain attribute it
# reads, else None; kept: the types of value its representation gives back unchanged (``_kept_types``); render: what
# makes the representation of any other value (``_renderer``).
_Reader = tuple[str, serializers.Field, str | None, tuple[type, ...], Callable[[Any], Any]]
_SHARED_READERS: dict[type, list[_Reader]] = {}
# DRF's representations that give a value of exactly these types back as it is: str(value), int(value),
# float(value), a bool's truth, and a JSON field's value (not binary). A subclass of these types (an enum member,
# say) is not one of them: ``type(value)`` is compared, not ``isinstance``.
_UNCHANGED_TYPES: dict[Any, tuple[type, ...]] = {
    serializers.CharField.to_representation: (str,),
    serializers.IntegerField.to_representation: (int,),
    serializers.FloatField.to_representation: (float,),
    serializers.BooleanField.to_representation: (bool,),
}


@receiver(setting_changed, dispatch_uid="tasks.api.serializers.shared_fields")
def _forget_shared_fields(**kwargs: Any) -> None:
    """Fields read settings when built (TASK_HANDLERS' choices): rebuild them when a setting changes."""
    _SHARED_FIELDS.clear()
    _SHARED_READERS.clear()


def _kept_types(field: serializers.Field) -> tuple[type, ...]:
    """The types of value ``field``'s representation gives back unchanged: calling it for them is left out."""
    representation = type(field).to_representation
    if representation is serializers.JSONField.to_representation and not getattr(field, "binary", False):
        return (str, int, float, bool, dict, list)
    return _UNCHANGED_TYPES.get(representation, ())


def _renderer(field: serializers.Field) -> Callable[[Any], Any]:
    """``field.to_representation``; for a time rendered in ISO 8601 in UTC, the same text made without DRF's
    conversion to the zone for a time whose offset is already zero (its time-zone checks and ``astimezone`` were
    half of the 1.7 µs a time took, four or more a task)."""
    iso_8601 = str(getattr(field, "format", api_settings.DATETIME_FORMAT)).lower() == ISO_8601
    if (
        type(field).to_representation is serializers.DateTimeField.to_representation
        and iso_8601
        and getattr(field, "timezone", None) in _UTC_ZONES
    ):
        return partial(_utc_iso_8601, field.to_representation)
    return field.to_representation


def _utc_iso_8601(fallback: Callable[[Any], Any], value: Any) -> Any:
    """DRF's ISO 8601 text of a time in UTC (``Z`` for ``+00:00``), made directly where the offset is zero."""
    if type(value) is datetime and value.utcoffset() == _NO_OFFSET:
        return value.isoformat()[:-6] + "Z"
    return fallback(value)


def _plain_attribute(field: serializers.Field) -> str | None:
    """The attribute ``field`` reads with DRF's generic lookup and nothing else (no dotted source, no ``*``, no
    related-field override), or None."""
    plain = type(field).get_attribute is serializers.Field.get_attribute and len(field.source_attrs) == 1
    return field.source_attrs[0] if plain else None


class SharedFieldsMixin(serializers.Serializer):
    """Build a serializer's fields once per class and share them between its instances.

    ModelSerializer introspects the model again for every instance: about a
    millisecond for Task, more than validating and rendering a task together.
    The fields of these serializers keep no per-request state and never read the
    serializer's context or instance, so one set, bound to a bare prototype, serves
    every instance (DRF fields that need the context, such as hyperlinks or
    ``CurrentUserDefault``, must not be used on a serializer with this mixin).

    Their times are in the default time zone (TIME_ZONE, UTC), resolved when the fields are built and again when
    a setting changes, as DRF's ``default_timezone`` argument does: DRF otherwise looks up the current zone for
    every time it reads or renders, through asgiref's ``Local`` (2.5 of the 4.7 µs a time takes, a fifth of a
    task's rendering in a list). No request activates another zone.
    """

    @property
    def fields(self) -> BindingDict:
        cls = type(self)
        shared = _SHARED_FIELDS.get(cls)
        if shared is None:
            prototype = cls()
            shared = BindingDict(prototype)
            for name, field in prototype.get_fields().items():
                if isinstance(field, serializers.DateTimeField) and settings.USE_TZ and not hasattr(field, "timezone"):
                    field.timezone = timezone.get_default_timezone()
                shared[name] = field
            _SHARED_FIELDS[cls] = shared  # shared once complete: a concurrent request never sees half of them
        return shared

    def to_representation(self, instance: Any) -> dict[str, Any]:
        """Serializer.to_representation, reading a plain attribute of a model instance directly: DRF's generic
        lookup (source paths, mappings, callables, error messages) cost more than most fields' conversion, per
        field and task, in every list. Anything else takes DRF's path. A value the field would give back as it is
        (``_kept_types``: a text, a number) is taken as it is, without the call."""
        if isinstance(instance, Mapping):
            return super().to_representation(instance)
        readers = _SHARED_READERS.get(type(self))
        if readers is None:
            readers = [
                (name, field, _plain_attribute(field), _kept_types(field), _renderer(field))
                for name, field in self.fields.items()
                if not field.write_only
            ]
            _SHARED_READERS[type(self)] = readers
        representation: dict[str, Any] = {}
        for name, field, attribute, kept, render in readers:
            value = _MISSING if attribute is None else getattr(instance, attribute, _MISSING)
            if value is _MISSING or callable(value):
                try:
                    value = field.get_attribute(instance)
                except SkipField:
                    continue
                if isinstance(value, PKOnlyObject) and value.pk is None:
                    value = None
            if value is not None and type(value) not in kept:
                value = render(value)
            representation[name] = value
        return representation


@extend_schema_field({"type": "string", "nullable": True, "readOnly": True})
class UsernameField(serializers.Field):
    """The username of the user a task's ``relation`` (owner, deleted_by) names, or null: from the page's join
    column (``selectors.username_column``) where the task has one, else through the relation."""

    def __init__(self, relation: str, **kwargs: Any) -> None:
        super().__init__(source="*", read_only=True, **kwargs)
        self.relation = relation

    def to_representation(self, task: Task) -> str | None:
        name = task.__dict__.get(username_column(self.relation), _MISSING)
        if name is not _MISSING:
            return name
        user = getattr(task, self.relation)
        return None if user is None else user.get_username()


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


@extend_schema_field({"type": "boolean", "enum": [True]})
class ConfirmField(QueryBooleanField):
    """``confirm=true``, required (the schema says so): missing or false, the 400 says how to confirm.

    The explanation is the serializer context's ``confirm_message``, so each request says what it would do.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(required=True, **kwargs)

    def validate_empty_values(self, data: Any) -> tuple[bool, Any]:
        if data is empty:
            self.refuse()
        return super().validate_empty_values(data)

    def to_internal_value(self, data: Any) -> bool:
        if not super().to_internal_value(data):
            self.refuse()
        return True

    def refuse(self) -> NoReturn:
        raise serializers.ValidationError(self.context.get("confirm_message", "Repeat with confirm=true."))


class ConfirmSerializer(serializers.Serializer):
    """Query parameters of destructive requests: an explicit ``confirm=true``."""

    confirm = ConfirmField(help_text="Must be `true`: the request changes the task for good.")
