"""Task records: the only source of truth.

``Task`` refuses every write that would escape the audit trail: a tracked change
saved without an audit context, ``QuerySet.update()`` / ``bulk_update()`` /
``bulk_create()`` on tracked fields, and hard deletes. ``TaskHistory`` is
append-only here and, below the ORM, by database triggers.
"""

from __future__ import annotations

import copy
import json
import math
import re
import uuid
import zlib
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Self, cast

import orjson
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import connections, models, router, transaction
from django.db.models import Transform
from django.db.models.base import ModelState
from django.db.models.constants import OnConflict
from django.db.models.functions import ExtractIsoYear, ExtractYear
from django.db.models.lookups import Exact, GreaterThan, GreaterThanOrEqual, IContains, LessThan, LessThanOrEqual
from django.db.models.signals import post_init, pre_init
from django.db.models.sql import InsertQuery, UpdateQuery
from django.db.transaction import TransactionManagementError
from django.utils import timezone
from django_celery_results.managers import TaskResultManager
from django_celery_results.models import TaskResult

from tasks.audit import SYSTEM_ACTORS, Channel, HistoryEvent, current_context, same_json
from tasks.exceptions import AppendOnlyViolation, HardDeleteRefused, TaskChanged, UntrackedWrite
from tasks.ids import celery_id
from tasks.keys import KEY_ID_MAX_LENGTH
from tasks.redaction import redact_fields
from tasks.states import TaskState, check_state, check_transition

# A task's execution figures (what its handler reports, and the run time), in the order pages show them.
METRIC_FIELDS = (
    "processing_time_seconds",
    "iterations",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "stop_reason",
    "converged",
)
# Live telemetry, execution figures and audit bookkeeping: changing them writes no history row.
UNTRACKED_FIELDS = frozenset(
    {
        "progress",
        "current_phase",
        "partial_results",
        "updated_at",
        "lease_expires_at",
        "heartbeat_at",
        "history_count",
        "history_head",
        "dispatch_epoch",
    }
    | set(METRIC_FIELDS)
)
# Priorities within a queue: higher runs first.
MIN_PRIORITY, DEFAULT_PRIORITY, MAX_PRIORITY = 0, 5, 9
QUEUE_NAME_PATTERN = r"^[A-Za-z0-9._:-]+\Z"
MAX_TIME_LIMIT_SECONDS = 7 * 86400.0
# Large values whose history records a digest instead of the value itself.
DIGESTED_FIELDS = frozenset({"result", "request_payload"})


def _field_name(model: type[models.Model], name: str) -> str:
    return model._meta.get_field(name).name


def finite_number(value: float) -> None:
    """Refuse NaN and infinities, which a float field and the range validators let through."""
    if not math.isfinite(value):
        raise ValidationError("Enter a finite number.", code="not_finite")


# The validators of a task's options, shared by the options a periodic schedule sets for the tasks it submits.
QUEUE_NAME_VALIDATORS = [RegexValidator(QUEUE_NAME_PATTERN, "Use letters, digits, '.', '_', ':' or '-'.")]
PRIORITY_VALIDATORS = [MinValueValidator(MIN_PRIORITY), MaxValueValidator(MAX_PRIORITY)]
TIME_LIMIT_VALIDATORS: list[Callable[[Any], None]] = [
    MinValueValidator(0.001),
    MaxValueValidator(MAX_TIME_LIMIT_SECONDS),
    finite_number,
]


class CompactUUIDField(models.UUIDField):
    """A UUID stored on SQLite as its 16 bytes, not its 32 hex digits: some 225 bytes a completed task over its row,
    its history and outputs and their indexes (PostgreSQL's ``uuid`` is 16 bytes already). Bytes order as the hex
    digits do, so id ranges (a short id's prefix) read the same; the SQLite backend (``crux.db``) reads both forms
    back as a UUID. A foreign key to a model keyed by one stores the same bytes."""

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        value = super().get_db_prep_value(value, connection, prepared)
        return bytes.fromhex(value) if isinstance(value, str) and connection.vendor == "sqlite" else value


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)


def epoch_microseconds(moment: datetime) -> int:
    """Microseconds from the Unix epoch to ``moment``, exact (no float rounding); a naive moment is UTC (Django's
    on SQLite, read raw)."""
    return (moment - (_EPOCH if moment.tzinfo else _NAIVE_EPOCH)) // _MICROSECOND


class CompactDateTimeField(models.DateTimeField):
    """A time stored on SQLite as microseconds since the Unix epoch (UTC) in an integer of up to 8 bytes, not
    Django's 26 characters of text: some 310 bytes a completed task over its row, its history, outputs and the
    indexes that hold a time (PostgreSQL's ``timestamptz`` is 8 bytes already). Integers order as the times do;
    the SQLite backend (``crux.db``) reads both forms back and its date functions in SQL take both. Where the
    connection is not in UTC (a database ``TIME_ZONE``), the time is Django's text, as Django writes it."""

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        if connection.vendor != "sqlite" or connection.timezone_name != "UTC":
            return super().get_db_prep_value(value, connection, prepared)
        if not prepared:
            value = self.get_prep_value(value)
        # A naive time (settings.USE_TZ off) is the connection's: UTC.
        return epoch_microseconds(value) if isinstance(value, datetime) else value


def _year_by_function(extract: type[Transform]) -> type[Transform]:
    """``extract`` (``__year``, ``__iso_year``) whose comparisons call the SQL function that extracts the year
    (which reads an integer time, ``crux.db``): Django's compare the column with the year's first and last
    moment as text instead."""
    by_function = cast("type[Transform]", type(extract.__name__, (extract,), {}))
    for lookup in (Exact, GreaterThan, GreaterThanOrEqual, LessThan, LessThanOrEqual):
        by_function.register_lookup(lookup)
    return by_function


CompactDateTimeField.register_lookup(_year_by_function(ExtractYear))
CompactDateTimeField.register_lookup(_year_by_function(ExtractIsoYear))


class CodedChoiceField(models.CharField):
    """A choice stored as one character, its position in ``codes``, not its name (3 to 11 characters), on the
    engines ``coded_on`` names (SQLite by default; elsewhere the name): some 100 bytes a completed task over its
    history rows' event, states and channel, its outputs' types, and the task's state in its row and its index.
    ``codes`` only ever grows at its end: a code is what a stored row means. A value not in ``codes`` is stored as
    its text and read back as it is; the empty string stays empty. Reads give the name whichever form a row holds."""

    CODE_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    DEFAULT_CODED_ON = ("sqlite",)

    def __init__(
        self, *args: Any, codes: tuple[str, ...] = (), coded_on: tuple[str, ...] = DEFAULT_CODED_ON, **kwargs: Any
    ) -> None:
        if len(codes) > len(self.CODE_DIGITS):
            raise ValueError(f"at most {len(self.CODE_DIGITS)} codes")
        self.codes = tuple(codes)
        self.coded_on = tuple(coded_on)
        self._code_of = {value: self.CODE_DIGITS[index] for index, value in enumerate(self.codes)}
        super().__init__(*args, **kwargs)

    def deconstruct(self) -> Any:
        name, path, args, kwargs = super().deconstruct()
        kwargs["codes"] = self.codes
        if self.coded_on != self.DEFAULT_CODED_ON:
            kwargs["coded_on"] = self.coded_on
        return name, path, args, kwargs

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        value = super().get_db_prep_value(value, connection, prepared)
        if connection.vendor in self.coded_on and isinstance(value, str):
            return self._code_of.get(value, value)
        return value

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if isinstance(value, str) and len(value) == 1:
            index = self.CODE_DIGITS.find(value)
            if 0 <= index < len(self.codes):
                return self.codes[index]
        return value


class CodedNameField(CodedChoiceField):
    """Free text whose frequent values (``codes``: names the code itself writes, such as the worker's actor name)
    are stored as one control character, which no other value can be: a name of one such character is refused.
    Its ``icontains`` finds the coded names too (``_CodedNameIContains``)."""

    CODE_DIGITS = "".join(map(chr, range(1, 32)))

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        if isinstance(value, str) and len(value) == 1 and value in self.CODE_DIGITS:
            raise ValueError(f"{self.name}: {value!r} would read back as a code")
        return super().get_db_prep_value(value, connection, prepared)


@CodedNameField.register_lookup
class _CodedNameIContains(IContains):
    """``icontains`` on the stored text, or the value is one of the coded names that hold the term (in any case):
    a LIKE alone would miss them, their text being a code."""

    def as_sql(self, compiler: Any, connection: Any) -> Any:
        sql, params = super().as_sql(compiler, connection)
        field = self.lhs.output_field
        if not isinstance(self.rhs, str) or not isinstance(field, CodedNameField):
            return sql, params
        coded = [name for name in field.codes if self.rhs.casefold() in name.casefold()]
        if not coded:
            return sql, params
        column, column_params = compiler.compile(self.lhs)
        stored = [field.get_db_prep_value(name, connection) for name in coded]
        return (
            f"({sql} OR {column} IN ({', '.join(['%s'] * len(stored))}))",
            (*params, *column_params, *stored),
        )


# The engines a history row's and an output's choices are coded on (CodedChoiceField's ``coded_on``).
BOTH_ENGINES = ("sqlite", "postgresql")
# What each code of a history row's coded columns means (CodedChoiceField): append only.
EVENT_CODES = ("created", "transition", "edit", "soft_delete", "restore", "unarchive")
STATE_CODES = ("pending", "queued", "running", "completed", "failed", "cancelled", "interrupted")
CHANNEL_CODES = ("api", "admin", "worker", "command", "recovery", "retention", "system", "shell", "schedule", "celery")
# The task's own state, coded in the names' order: ordering by state is the same on both engines. A state added
# later takes the next code; a test holds the order, and says when a new state would break it.
TASK_STATE_CODES = ("cancelled", "completed", "failed", "interrupted", "pending", "queued", "running")


class KeyOrderIndex(models.Index):
    """An index whose last field is the table's integer primary key, the order of the rows that share the others.

    On SQLite that key is the rowid, which every index entry ends with already: there the index leaves it out (the
    same order, about 3 bytes an entry less). PostgreSQL's entries point at a heap tuple instead and keep it."""

    def create_sql(self, model: Any, schema_editor: Any, using: str = "", **kwargs: Any) -> Any:
        *fields, key = self.fields
        if model._meta.get_field(key.lstrip("-")) is not model._meta.pk:
            raise ValueError(f"{self.name}: the last field must be the primary key")
        if schema_editor.connection.vendor != "sqlite":
            return super().create_sql(model, schema_editor, using, **kwargs)
        _path, args, options = self.deconstruct()  # the same index (its condition, included columns...) but the key
        return models.Index(*args, **{**options, "fields": fields}).create_sql(model, schema_editor, using, **kwargs)


class DigestField(models.BinaryField):
    """A SHA-256-sized digest of the audit chain, stored as its 32 bytes (not 64 hex characters: on SQLite some
    270 bytes a completed task over its history rows) and seen in Python as the lowercase hex text every link is
    computed, compared, shown and serialized as."""

    _pyi_private_set_type: str
    _pyi_private_get_type: str  # type: ignore[assignment]  # django-stubs: what an instance's attribute holds

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> str | None:
        if value is None or isinstance(value, str):  # text written by raw SQL (SQLite takes it): shown as it is
            return value
        return bytes(value).hex()

    def to_python(self, value: Any) -> Any:
        return bytes(value).hex() if isinstance(value, (bytes, bytearray, memoryview)) else value

    def get_prep_value(self, value: Any) -> Any:
        return bytes.fromhex(value) if isinstance(value, str) else super().get_prep_value(value)

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> bytes | None:
        """Plain bytes, which every driver takes (BinaryField's ``Database.Binary`` is a memoryview on SQLite, which
        the restore's worker processes cannot hand back)."""
        value = value if prepared else self.get_prep_value(value)
        return None if value is None else bytes(value)

    def get_default(self) -> Any:
        """The default as hex text too (BinaryField's own is ``b''``)."""
        return self.to_python(super().get_default())

    def value_to_string(self, obj: models.Model) -> str:
        return str(self.to_python(self.value_from_object(obj)))


class CompressedTextField(models.TextField):
    """Text stored compressed where that pays: a value of COMPRESS_MIN_BYTES or more of UTF-8 whose zlib stream
    (RFC 1950, with its checksum) is at most COMPRESS_MAX_RATIO of them is written as COMPRESSED_TAG and that
    stream, any other value as its text. Reads give the text back whichever form a row holds.

    SQLite keeps the text as TEXT and the compressed value as a BLOB in the same column. PostgreSQL's column is
    ``bytea`` (its TOAST compresses only rows over 2 KB, and a text column holds no bytes): the text as its UTF-8,
    which never starts with the tag (a NUL), since a value that does is stored compressed whatever the ratio.

    A compressed row holds no text for SQL to compare, so the column takes no lookup but ``isnull``: a filter on
    it fails loudly on both engines rather than miss the compressed rows."""

    COMPRESS_MIN_BYTES = 256
    COMPRESS_MAX_RATIO = 0.875
    COMPRESS_LEVEL = 6
    COMPRESSED_TAG = b"\x00"

    def db_type(self, connection: Any) -> str | None:
        return "bytea" if connection.vendor == "postgresql" else super().db_type(connection)

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        value = super().get_db_prep_value(value, connection, prepared)
        if not isinstance(value, str):
            return value
        as_text = connection.vendor != "postgresql"
        if as_text and len(value) < self.COMPRESS_MIN_BYTES // 4 and not value.startswith(self.COMPRESSED_TAG.decode()):
            return value  # under a quarter of the bytes in characters: under the bytes in UTF-8 too
        text = value.encode()
        tagged = text.startswith(self.COMPRESSED_TAG)
        if len(text) >= self.COMPRESS_MIN_BYTES or tagged:
            stream = zlib.compress(text, self.COMPRESS_LEVEL)
            if tagged or len(stream) <= len(text) * self.COMPRESS_MAX_RATIO:
                return self.COMPRESSED_TAG + stream
        return value if as_text else text

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if isinstance(value, memoryview):
            value = value.tobytes()
        if not isinstance(value, bytes):
            return value
        if value.startswith(self.COMPRESSED_TAG):
            return zlib.decompress(value[len(self.COMPRESSED_TAG) :]).decode()
        return value.decode()

    def get_lookup(self, lookup_name: str) -> Any:
        return super().get_lookup(lookup_name) if lookup_name == "isnull" else None

    def get_transform(self, lookup_name: str) -> Any:
        return None


# What a history row's details are made of (the names of tracked fields and of the services' own details, the shape
# of a change and of a new task's values): the preset dictionary ``DeflatedJSONField`` deflates them against, so a
# value of a hundred bytes shrinks too. Rows written with it need these very bytes to be read: never edit it; a
# different dictionary takes a tag of its own (``DeflatedJSONField.TAG``).
HISTORY_DETAILS_DICTIONARY = (
    b'"branch":"","worktree_path":"","base_branch":"","commit_hash":"","target_dir":"","full_access":true,'
    b'"provider_override":"","repository_url":"","acceptance_criteria":{},"run_after":null,"retry_backoff":,'
    b'"soft_time_limit":,"time_limit":,"queue":"","priority":,"max_attempts":,"deleted_by":[null,'
    b'"deleted_at":[null,"","delete_reason":["","error":"","next_attempt_at":"","hostname":"","terminated":false,'
    b'"signal":"SIGTERM","celery_task_id":"","last_error":["","error_count":[0,1],"dispatched_at":[null,"'
    b'"dispatch_count":[1,2],"result":[null,"sha256:'
    b'{"changes":{"title":"","description":"","role":"","handler":"","owner":1,"created_at":"","provider":"",'
    b'"model":"","metadata":{},"request_payload":"sha256:","dispatched_at":"","dispatch_count":1}}'
    b'{"changes":{"started_at":[null,""],"attempt_count":[0,1],"worker_id":["","celery@'
    b'{"changes":{"completed_at":[null,"+00:00"],"result":[null,"sha256:'
)


# Nineteen digits in a row: where an integer past 64 bits may be, which orjson reads as a float and json as an integer.
_LONG_DIGITS = 19
_LONG_DIGIT_RUN = re.compile(f"[0-9]{{{_LONG_DIGITS}}}")


def loads_json(text: str) -> Any:
    """``json.loads(text)``, by orjson: a task's JSON values are read for every task of every list, and json's
    decoder took 0.9 to 1.7 µs for each of them (``{}``, ``null``, a small object), this 0.1 to 0.8.

    What orjson reads otherwise or refuses is read by json, so the value is the same: text with nineteen digits in a
    row (an integer past 64 bits, which orjson makes a float), NaN, the infinities, a lone surrogate. Text that
    neither reads raises json's JSONDecodeError (orjson's is a subclass)."""
    if len(text) < _LONG_DIGITS or _LONG_DIGIT_RUN.search(text) is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


class FastJSONField(models.JSONField):
    """Django's JSONField, its values read by ``loads_json`` rather than ``json.loads`` (when it has no decoder).

    Migrations see Django's JSONField (``deconstruct``): the column, its type and its check are the same, and a
    field of another class would make SQLite rebuild the table, and its triggers, for nothing."""

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if self.decoder is None and isinstance(value, str):
            try:
                return loads_json(value)
            except json.JSONDecodeError:
                return value  # as Django's: text that is not JSON (a key's value SQLite extracted as text) as it is
        return super().from_db_value(value, expression, connection)

    def deconstruct(self) -> Any:
        name, _path, args, kwargs = super().deconstruct()
        return name, "django.db.models.JSONField", args, kwargs


class DeflatedJSONField(models.JSONField):
    """JSON stored as its compact text, deflated (raw DEFLATE, level 9) against a preset dictionary where that is
    shorter: ``TAG`` and the stream, else the text itself. A history row's details are a hundred to a few hundred
    bytes, which zlib alone hardly shortens (a stream starts knowing nothing); against the audit's vocabulary
    (``HISTORY_DETAILS_DICTIONARY``) they take about two fifths of their text. The value is the same either way:
    what the audit chain's links cover (``tasks.audit.row_hash``: the value, not its stored form).

    SQLite's column is TEXT (the text as text, a deflated value as a BLOB), without the JSON_VALID check of a
    JSONField; PostgreSQL's is ``bytea`` (the text as UTF-8, which never starts with the tag). Rows written before
    hold JSON text (PostgreSQL's ``jsonb`` converted to its text) and read as ever. A deflated value holds nothing
    SQL can look into, so the field takes no lookup but ``isnull`` and no key transform: a filter on it fails
    loudly on both engines rather than miss the deflated rows."""

    TAG = b"\x01"  # DEFLATE against HISTORY_DETAILS_DICTIONARY; another dictionary would take another tag
    DICTIONARY = HISTORY_DETAILS_DICTIONARY
    LEVEL = 9

    def get_internal_type(self) -> str:
        return "DeflatedJSONField"

    def db_type(self, connection: Any) -> str:
        return "bytea" if connection.vendor == "postgresql" else "text"

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        if not prepared:
            value = self.get_prep_value(value)
        if value is None:
            return None
        text = json.dumps(value, cls=self.encoder, separators=(",", ":"), ensure_ascii=False).encode()
        packer = zlib.compressobj(self.LEVEL, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, self.DICTIONARY)
        packed = self.TAG + packer.compress(text) + packer.flush()
        if len(packed) < len(text):
            return packed
        return text if connection.vendor == "postgresql" else text.decode()

    @classmethod
    def stored_text(cls, value: str | bytes | memoryview) -> str:
        """The JSON text a stored value holds, inflated if it is deflated."""
        if isinstance(value, str):
            return value
        value = bytes(value)
        if value.startswith(cls.TAG):
            unpacker = zlib.decompressobj(-15, cls.DICTIONARY)
            value = unpacker.decompress(value[len(cls.TAG) :]) + unpacker.flush()
        return value.decode()

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if value is None:
            return None
        text = self.stored_text(value)
        return loads_json(text) if self.decoder is None else json.loads(text, cls=self.decoder)

    def get_lookup(self, lookup_name: str) -> Any:
        return super().get_lookup(lookup_name) if lookup_name == "isnull" else None

    def get_transform(self, lookup_name: str) -> Any:
        return None


class TaskQuerySet(models.QuerySet):
    """Bulk paths skip signals, so they may not touch tracked fields."""

    def _refuse_tracked(self, names: Any, operation: str) -> None:
        tracked = sorted({_field_name(self.model, n) for n in names} - UNTRACKED_FIELDS)
        if tracked:
            raise UntrackedWrite(
                f"{operation} cannot change tracked task fields {tracked}: it would skip the "
                "audit trail. Use tasks.services (transition, update_task, soft_delete, restore)."
            )

    def update(self, **kwargs: Any) -> int:
        self._refuse_tracked(kwargs, "QuerySet.update()")
        return super().update(**kwargs)

    def bulk_update(self, objs: Any, fields: Any, batch_size: int | None = None) -> int:
        self._refuse_tracked(fields, "QuerySet.bulk_update()")
        return super().bulk_update(objs, fields, batch_size=batch_size)

    def bulk_create(self, objs: Any, *args: Any, **kwargs: Any) -> list:
        raise UntrackedWrite(
            "QuerySet.bulk_create() would create tasks without history rows; use tasks.services.create_task()"
        )

    def delete(self) -> tuple[int, dict[str, int]]:
        raise HardDeleteRefused(
            "tasks are never hard-deleted: soft-delete with tasks.services.soft_delete(); "
            "only a retention purge removes a task, after archiving it"
        )

    def alive(self) -> TaskQuerySet:
        return self.filter(deleted_at__isnull=True)

    def deleted(self) -> TaskQuerySet:
        return self.filter(deleted_at__isnull=False)


class _CompiledInsert(NamedTuple):
    sql: str
    fields: tuple[models.Field, ...]


# The SQL of a one-row INSERT by model, database, fields and conflict handling: Django compiles it anew for every
# row (120-320 µs a row of a history, a task), where only its parameters change.
_COMPILED_INSERTS: dict[tuple[Any, ...], _CompiledInsert | None] = {}


def insert_statements(
    row: models.Model,
    using: str,
    fields: Sequence[models.Field] | None = None,
    *,
    returning: bool = False,
    **on_conflict: Any,
) -> list[tuple[str, tuple[Any, ...]]]:
    """The INSERT of one new ``row`` (SQL and parameters) into ``fields`` (its concrete fields but the primary
    key by default), compiled as ``bulk_create`` compiles it but without its checks and preparation of a batch;
    ``returning``: the statement returns the row's primary key (where the database can: ``RETURNING``);
    ``on_conflict``: InsertQuery's (``on_conflict``, ``update_fields``, ``unique_fields``).

    The SQL is compiled once per model, database, fields, conflict handling and returning; then only the
    parameters are prepared, each as Django's compiler prepares it (``pre_save``, then ``get_db_prep_save``). A row
    with an expression for a value is compiled in full, as is every row of an INSERT whose values are not plain
    placeholders.
    """
    chosen = tuple(fields or [f for f in row._meta.concrete_fields if not f.primary_key])
    key = (
        type(row),
        using,
        chosen,
        on_conflict.get("on_conflict"),
        tuple(on_conflict.get("update_fields") or ()),
        tuple(on_conflict.get("unique_fields") or ()),
        returning,
    )
    compiled = _COMPILED_INSERTS.get(key)
    if compiled is not None:
        values = [field.pre_save(row, add=True) for field in compiled.fields]
        if not any(hasattr(value, "resolve_expression") for value in values):
            connection = connections[using]
            params = tuple(field.get_db_prep_save(value, connection=connection) for field, value in zip(
                compiled.fields, values, strict=True
            ))  # fmt: skip
            return [(compiled.sql, params)]
    query = InsertQuery(type(row), **on_conflict)
    query.insert_values(chosen, [row])
    compiler = query.get_compiler(using)
    if returning:
        compiler.returning_fields = [row._meta.pk]
    statements = compiler.as_sql()
    if key not in _COMPILED_INSERTS:
        _COMPILED_INSERTS[key] = _reusable(statements, chosen, using)
    return statements


# A field's own placeholder hook: Django 5.2's name, and the one its later releases use.
_PLACEHOLDER_HOOKS = ("get_placeholder", "get_placeholder_sql")


def _plain_placeholder(field: models.Field, vendor: str) -> bool:
    """Whether every value of ``field`` takes a plain ``%s``: a field without a placeholder hook of its own, or a
    binary field on SQLite or PostgreSQL (whose binary placeholder is ``%s`` for any bytes)."""
    hooks = [name for name in _PLACEHOLDER_HOOKS if hasattr(field, name)]
    binary = vendor in ("sqlite", "postgresql") and all(
        getattr(type(field), name) is getattr(models.BinaryField, name, None) for name in hooks
    )
    return not hooks or binary


def _reusable(
    statements: list[tuple[str, tuple[Any, ...]]], fields: tuple[models.Field, ...], using: str
) -> _CompiledInsert | None:
    """The compiled INSERT to reuse for other rows, if it is one statement with a plain placeholder and a parameter
    a field, whatever the values (no value compiled as an expression, no field's own placeholder)."""
    vendor = connections[using].vendor
    if len(statements) != 1 or not all(_plain_placeholder(field, vendor) for field in fields):
        return None
    sql, params = statements[0]
    if len(params) != len(fields) or f"VALUES ({', '.join(['%s'] * len(fields))})" not in sql:
        return None
    return _CompiledInsert(sql, fields)


class _CompiledUpdate(NamedTuple):
    sql: str
    where: tuple[models.Field, ...]


# The SQL of a one-row UPDATE by model, database, fields set (and which of them are set to NULL) and the fields of
# its WHERE: Django compiles it anew for every save (about 150 µs of a task's), where only its parameters change.
_COMPILED_UPDATES: dict[tuple[Any, ...], _CompiledUpdate | None] = {}


def update_statement(
    model: type[models.Model], using: str, values: Sequence[tuple[models.Field, Any, Any]], **where: Any
) -> tuple[str, tuple[Any, ...]]:
    """The UPDATE of ``model``'s rows matching ``where`` (field name to value, each an exact match) that sets
    ``values`` (Django's ``(field, model, value)`` of ``Model._do_update``, each value already ``pre_save``'d):
    SQL and parameters, as ``QuerySet._update`` compiles them.

    Compiled once per model, database, fields set, fields matched and which of either are NULL; then only the
    parameters are prepared, each as Django's compiler prepares it (``get_db_prep_save`` for a value set, the
    field's prep for a value matched). An expression, a model instance for a value or a field with a placeholder
    of its own compiles in full, and so does a model with parents (whose save updates several tables)."""
    connection = connections[using]
    where = dict(sorted(where.items()))  # the order of a filter's conditions (``Q`` sorts its keywords)
    prepared: list[Any] = []
    for field, _, value in values:
        if hasattr(value, "resolve_expression") or hasattr(value, "prepare_database_save"):
            return _compiled_update(model, using, values, where)
        prepared.append(field.get_db_prep_save(value, connection=connection))
    nulls = tuple(p is None for p in prepared), tuple(v is None for v in where.values())  # NULL, IS NULL: no %s
    key = (model, using, tuple(f for f, _, _ in values), nulls, tuple(where))
    compiled = _COMPILED_UPDATES.get(key)
    if compiled is None:
        statement = _compiled_update(model, using, values, where)
        if key not in _COMPILED_UPDATES:
            fields = tuple(model._meta.pk if name == "pk" else model._meta.get_field(name) for name in where)
            reusable = not model._meta.parents and all(_plain_placeholder(f, connection.vendor) for f, _, _ in values)
            mine = _CompiledUpdate(statement[0], fields)  # type: ignore[arg-type]  # concrete fields, by name
            _COMPILED_UPDATES[key] = mine if reusable and _same_order(mine, prepared, where, using, statement) else None
        return statement
    return compiled.sql, _update_params(compiled, prepared, where, using)


def _same_order(
    compiled: _CompiledUpdate,
    prepared: list[Any],
    where: dict[str, Any],
    using: str,
    statement: tuple[str, tuple[Any, ...]],
) -> bool:
    """Whether Django's own parameters are the kept UPDATE's: as many, and the values matched last and equal. The
    values set come first, from the same ``get_db_prep_save`` in the same order (they are counted, not compared: a
    JSON value's adapter on PostgreSQL compares equal to no other)."""
    mine, djangos = _update_params(compiled, prepared, where, using), statement[1]
    matched = sum(value is not None for value in where.values())
    return len(mine) == len(djangos) and mine[len(mine) - matched :] == djangos[len(djangos) - matched :]


def _update_params(
    compiled: _CompiledUpdate, prepared: list[Any], where: dict[str, Any], using: str
) -> tuple[Any, ...]:
    """The parameters of a kept UPDATE: the values set, then the values matched, each prepared as an exact lookup
    prepares it (a NULL set or matched is written in its SQL: ``= NULL``, ``IS NULL``)."""
    connection = connections[using]
    matched = (
        field.get_db_prep_value(field.get_prep_value(value), connection, prepared=True)
        for field, value in zip(compiled.where, where.values(), strict=True)
        if value is not None
    )
    return (*(value for value in prepared if value is not None), *matched)


def _compiled_update(
    model: type[models.Model], using: str, values: Sequence[tuple[models.Field, Any, Any]], where: dict[str, Any]
) -> tuple[str, tuple[Any, ...]]:
    query = cast(UpdateQuery, model._base_manager.using(using).filter(**where).query.chain(UpdateQuery))
    query.add_update_fields(list(values))
    return query.get_compiler(using).as_sql()


# Where a task's locked read kept for its next save is held (``Task.keep_locked_read``): on the instance and, for
# the last such read, on the database connection.
_LAST_LOCKED_READ = "_crux_locked_read"
# Where an unlocked read kept for the task's next save (``Task.keep_read``) is held, on the instance.
_UNLOCKED_READ = "_crux_unlocked_read"


def _copied(value: Any) -> Any:
    """A value as read, safe from later changes of the instance's own (a JSON field's dict or list is mutable)."""
    return copy.deepcopy(value) if isinstance(value, (dict, list)) else value


class LoadedDirectly(models.Model):
    """A model whose rows are read by the page (a task list, a task's history): ``from_db``, Django's hook for
    loading a row, sets a full row's values on the new instance directly instead of through ``Model.__init__``,
    which sets them one ``setattr`` at a time: 3.3 against 10.7 µs a task row, 1.8 against 5.3 a history row.

    It sets what ``__init__`` would: every concrete field's value as it is, and the instance's state (saved, in
    ``db``). No field of these models has a descriptor that changes a value set on a new instance (a foreign key's
    only clears a related object cached on it). A row with deferred fields takes Django's own path, and so does
    every row while any model has a ``pre_init`` or ``post_init`` receiver (none has: the signals' receivers are
    those ``__init__`` would call)."""

    class Meta:
        abstract = True

    @classmethod
    def from_db(cls, db: str | None, field_names: Collection[str], values: Collection[Any], **kwargs: Any) -> Self:
        attnames = _ROW_ATTNAMES.get(cls)
        if attnames is None:
            attnames = _ROW_ATTNAMES[cls] = tuple(field.attname for field in cls._meta.concrete_fields)
        if len(values) != len(attnames) or kwargs or pre_init.receivers or post_init.receivers:
            return super().from_db(db, field_names, values, **kwargs)
        instance = cls.__new__(cls)
        instance.__dict__.update(zip(attnames, values, strict=True))
        state = instance._state = ModelState()
        state.adding, state.db = False, db
        return instance


# Each LoadedDirectly model's concrete fields' attribute names, in their order (a row's).
_ROW_ATTNAMES: dict[type, tuple[str, ...]] = {}


class _LockedRead:
    """A task's committed tracked values as read under its row lock, registered as a commit hook that does nothing:
    while Django still holds it, the read's transaction (and savepoint) is open."""

    def __init__(self, values: dict[str, Any]):
        self.values = values

    def __call__(self) -> None:
        """Nothing to do at commit: the values are spent."""


class Task(LoadedDirectly):
    id = CompactUUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    role = models.CharField(max_length=64, blank=True)
    state = CodedChoiceField(
        max_length=16, choices=TaskState.choices, default=TaskState.PENDING, codes=TASK_STATE_CODES
    )
    handler = models.CharField(max_length=100, default="echo", help_text="Registered handler that runs the task.")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="tasks",
        db_index=False,
    )

    created_at = CompactDateTimeField(default=timezone.now, editable=False)
    updated_at = CompactDateTimeField(auto_now=True)
    started_at = CompactDateTimeField(null=True, blank=True)
    completed_at = CompactDateTimeField(null=True, blank=True)

    provider = models.CharField(max_length=64, blank=True)
    model = models.CharField(max_length=100, blank=True)

    branch = models.CharField(max_length=255, blank=True)
    worktree_path = models.CharField(max_length=500, blank=True)
    base_branch = models.CharField(max_length=255, blank=True)
    commit_hash = models.CharField(max_length=64, blank=True)

    target_dir = models.CharField(max_length=500, default=".")
    full_access = models.BooleanField(default=False)
    provider_override = models.CharField(max_length=64, blank=True)
    repository_url = models.CharField(max_length=500, blank=True)

    last_error = models.TextField(blank=True)
    error_count = models.PositiveIntegerField(default=0)

    acceptance_criteria = FastJSONField(default=dict, blank=True)
    metadata = FastJSONField(default=dict, blank=True)

    progress = models.FloatField(default=0.0, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)])
    current_phase = models.CharField(max_length=100, blank=True)
    result = FastJSONField(null=True, blank=True)
    partial_results = FastJSONField(null=True, blank=True)
    request_payload = FastJSONField(default=dict, blank=True)

    attempt_count = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveSmallIntegerField(
        default=3, validators=[MinValueValidator(1), MaxValueValidator(100)]
    )
    dispatched_at = CompactDateTimeField(null=True, blank=True, help_text="Last time it was published to Celery.")
    dispatch_count = models.PositiveIntegerField(default=0)
    # The broker epoch under which the broker confirmed its last publish ('' = not confirmed yet). A flush or
    # restart of the broker's Redis starts a new epoch: the sweep re-publishes what it lost, and only that.
    dispatch_epoch = models.CharField(max_length=32, blank=True, editable=False)
    # Not started before this time: a scheduled start (``run_at``) or a failed attempt's wait for its retry. A
    # queued task waiting for it is not published (dispatched_at is None) until it is due (crux.dispatch_due).
    run_after = CompactDateTimeField(null=True, blank=True, help_text="Not started before this time.")
    retry_backoff = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.0), MaxValueValidator(86400.0), finite_number],
        help_text="Seconds before the first retry, doubling per attempt (empty: the handler's default).",
    )
    # Where and in which order it runs: the Celery queue it is published to ('' = the default queue) and its
    # priority within that queue (0-9, higher first). Set at submit from the task, else its handler's options.
    queue = models.CharField(
        max_length=100,
        blank=True,
        validators=QUEUE_NAME_VALIDATORS,
        help_text="Celery queue it is published to (empty: the default queue).",
    )
    priority = models.PositiveSmallIntegerField(
        default=DEFAULT_PRIORITY,
        validators=PRIORITY_VALIDATORS,
        help_text="0 (last) to 9 (first) within its queue.",
    )
    # Time limits of each attempt in seconds (empty: the handler's, else the TASK_*_TIME_LIMIT_SECONDS settings).
    soft_time_limit = models.FloatField(
        null=True,
        blank=True,
        validators=TIME_LIMIT_VALIDATORS,
        help_text="Seconds after which the handler is told to wrap up (SoftTimeLimitExceeded).",
    )
    time_limit = models.FloatField(
        null=True,
        blank=True,
        validators=TIME_LIMIT_VALIDATORS,
        help_text="Seconds after which the attempt is terminated and recorded as failed (then retried or failed).",
    )
    worker_id = models.CharField(max_length=255, blank=True)
    lease_expires_at = CompactDateTimeField(null=True, blank=True)
    heartbeat_at = CompactDateTimeField(null=True, blank=True)

    deleted_at = CompactDateTimeField(null=True, blank=True)
    deleted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,  # indexed where set only (Meta): most tasks are never deleted
    )
    delete_reason = models.TextField(blank=True)

    # Execution figures (METRIC_FIELDS), written with the attempt's outcome or while it runs; no history row.
    processing_time_seconds = models.FloatField(null=True, blank=True)
    iterations = models.PositiveIntegerField(null=True, blank=True)
    prompt_tokens = models.PositiveBigIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveBigIntegerField(null=True, blank=True)
    total_tokens = models.PositiveBigIntegerField(null=True, blank=True)
    stop_reason = models.CharField(max_length=64, blank=True)
    converged = models.BooleanField(null=True, blank=True)

    history_count = models.PositiveIntegerField(default=0, editable=False)
    history_head = DigestField(blank=True, editable=False)

    objects = TaskQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["state", "-created_at"], name="task_state_created"),
            models.Index(fields=["owner", "-created_at"], name="task_owner_created"),
            models.Index(fields=["-created_at"], name="task_created"),
            # Provider alone, or provider and role (the list filters), already in list order.
            models.Index(fields=["provider", "role", "-created_at"], name="task_provider_role_created"),
            # The same for an owner (non-staff lists): the page and the capped count read only matching entries.
            models.Index(fields=["owner", "provider", "role", "-created_at"], name="task_owner_prov_role_created"),
            # No index holds the lease (``lease_expires_at``, ``heartbeat_at``): a running agent renews it every
            # TASK_LEASE_SECONDS / 4 (5 s by default), and on PostgreSQL a renewal that changes no indexed column
            # is a HOT update, which writes no index entry (the trigram indexes' included). The recovery sweep reads
            # the few running tasks through ``task_state_created``.
            models.Index(fields=["dispatched_at"], name="task_queued_dispatch", condition=models.Q(state="queued")),
            models.Index(fields=["dispatch_epoch"], name="task_queued_epoch", condition=models.Q(state="queued")),
            # Queued tasks waiting for their time and not yet published: what crux.dispatch_due reads.
            models.Index(
                fields=["run_after"],
                name="task_queued_due",
                condition=models.Q(state="queued", dispatched_at__isnull=True),
            ),
            models.Index(fields=["deleted_at"], name="task_deleted", condition=models.Q(deleted_at__isnull=False)),
            models.Index(fields=["deleted_by"], name="task_deleted_by", condition=models.Q(deleted_by__isnull=False)),
        ]
        permissions = [
            ("soft_delete_task", "Can soft-delete a task"),
            ("restore_task", "Can restore a soft-deleted task"),
            ("recover_task", "Can recover or requeue a task"),
            ("cancel_task", "Can cancel a task"),
        ]

    def __str__(self) -> str:
        return f"{self.title} ({str(self.id)[:8]}, {self.state})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Save atomically with the history row; refuse an undeclared state transition.

        The one place a transition is checked. The row itself is built and written
        by the history writer (``tasks.history``) around ``super().save()``.
        A new task is checked (its state, an audit context) before any statement,
        and then saved without a savepoint: that spares two statements, and the
        transaction's first one is its INSERT (the write lock of the SQLite backend
        is taken there). A failure after that dooms the caller's transaction.
        So is a task a service has just read under its row lock in the same
        transaction (``keep_locked_read``): its values are the committed ones and
        the row is not read again. A task read without the lock (``keep_read``) is
        written as a compare-and-set on its version, its changed fields only. Any
        other save locks and reads the row first.
        """
        using = kwargs.get("using") or router.db_for_write(type(self), instance=self)
        adding = self._state.adding
        if adding:
            check_state(self.state)
            current_context()
        kept = None if adding else self._kept_locked_read(using)
        unlocked: dict[str, Any] | None = self.__dict__.pop(_UNLOCKED_READ, None)
        if unlocked is not None and not adding:
            kept = unlocked
            if kwargs.get("update_fields") is None:
                kwargs["update_fields"] = self._changed_since(unlocked)
        update_fields = kwargs.get("update_fields")
        if update_fields is not None:
            kwargs["update_fields"] = set(update_fields) | {"updated_at", "history_count", "history_head"}
        with transaction.atomic(using=using, savepoint=not adding and kept is None):
            if adding or kept is not None:
                before = kept
            else:
                before = self._locked_before(using)
            if before is not None and before["state"] != self.state:
                check_transition(before["state"], self.state)
            self._audit_before = before
            self._expected_version = None if unlocked is None else unlocked["history_count"]
            try:
                super().save(*args, **kwargs)
            finally:
                del self._audit_before, self._expected_version

    def clean(self) -> None:
        soft, hard = self.soft_time_limit, self.time_limit
        if soft is not None and hard is not None and soft >= hard:
            raise ValidationError({"soft_time_limit": ["Must be less than time_limit, which ends the attempt."]})

    def _locked_before(self, using: str) -> dict[str, Any] | None:
        """The committed values of tracked fields, with the row locked for this transaction."""
        names = self._before_names()
        return type(self)._base_manager.using(using).select_for_update().filter(pk=self.pk).values(*names).first()

    @classmethod
    def _before_names(cls) -> list[str]:
        return [f.attname for f in cls.tracked_fields()] + ["history_count", "history_head"]

    def keep_locked_read(self) -> None:
        """This instance was just read with ``select_for_update`` inside a transaction (``services.locked_task``):
        keep its values as the committed ones, so its next save reads and locks the row no second time.

        They serve that one save only, and only if it is provably the same transaction's locked read: the read's
        marker (a no-op commit hook, which Django drops when the transaction, or the savepoint the read was taken
        in, ends) is still registered, and no task was saved or read this way on the connection since.
        """
        using = self._state.db or router.db_for_write(type(self), instance=self)
        values = {name: _copied(getattr(self, name)) for name in self._before_names()}
        read = _LockedRead(values)
        transaction.on_commit(read, using=using)
        setattr(connections[using], _LAST_LOCKED_READ, read)
        self.__dict__[_LAST_LOCKED_READ] = read

    def keep_read(self) -> None:
        """This instance was just read without the row lock (``services.unlocked_task``): its next save is a
        compare-and-set on what was read. It writes the fields changed since the read, with the read's values as the
        committed ones (the history row's changes, the previous head of its chain), only if the row's
        ``history_count`` is still the one read, and raises TaskChanged, having written nothing, if it is not.

        ``history_count`` is the version of every tracked field: a change of one writes a history row, which moves
        it, and nothing else may (``TaskQuerySet.update`` refuses them). The untracked fields others may write
        meanwhile (a lease, a dispatch confirmation) keep their values unless this save changes them. The read
        need not be in the save's transaction, so on SQLite the write lock is taken at the save's UPDATE, after the
        work that prepares it.
        """
        values = self.__dict__
        if values.keys() >= _TASK_FIELDS.attnames:
            read = {attname: values[attname] for attname in _TASK_FIELDS.attnames}
            for attname in _TASK_FIELDS.json_attnames:
                read[attname] = _copied(read[attname])
        else:  # deferred fields, loaded as they are read
            read = {f.attname: _copied(getattr(self, f.attname)) for f in self._meta.concrete_fields}
        values[_UNLOCKED_READ] = read

    def fields_as_read(self) -> list[str]:
        """The names of the fields (foreign keys aside) whose value is still the one its kept read (``keep_read``,
        ``keep_locked_read``) found: the value the database holds, which its checks passed when it was written."""
        read = self.__dict__.get(_UNLOCKED_READ)
        if read is None:
            locked: _LockedRead | None = self.__dict__.get(_LAST_LOCKED_READ)
            read = {} if locked is None else locked.values
        values = self.__dict__  # a deferred field is not in it: not as read, so checked (and loaded) as it is
        return [
            name
            for name, attname in _TASK_FIELDS.unrelated
            if attname in read
            and attname in values
            and values[attname] == read[attname]
            and (attname not in _TASK_FIELDS.json_attnames or same_json(values[attname], read[attname]))
        ]

    def _changed_since(self, read: dict[str, Any]) -> set[str]:
        """The names of the concrete fields whose value differs from ``read`` (attname to value): a JSON value that
        is not the same JSON (``same_json``: ``==`` takes 1 and True for one value) differs."""
        values = self.__dict__
        changed = set()
        for name, attname in _TASK_FIELDS.saved:
            value = values[attname] if attname in values else getattr(self, attname)
            if value != read[attname] or (
                attname in _TASK_FIELDS.json_attnames and not same_json(value, read[attname])
            ):
                changed.add(name)
        return changed

    def _do_insert(self, manager: Any, using: Any, fields: Any, returning_fields: Any, raw: bool) -> Any:
        """A new task's INSERT, its SQL compiled once for every task (``insert_statements``); a task's id is set
        before it is saved, so nothing is read back."""
        if raw or returning_fields:
            # Django's private hook, which django-stubs does not declare
            return super()._do_insert(manager, using, fields, returning_fields, raw)  # type: ignore[misc]
        with connections[using].cursor() as cursor:
            for statement in insert_statements(self, using, fields):
                cursor.execute(*statement)
        return []

    def _do_update(self, base_qs: Any, using: Any, pk_val: Any, values: Any, *rest: Any) -> Any:
        """Django's UPDATE, its SQL compiled once for every save of the same fields (``update_statement``); for a
        save of a ``keep_read`` instance, only where the version read is still the row's."""
        expected = getattr(self, "_expected_version", None)
        if not values:
            return super()._do_update(base_qs, using, pk_val, values, *rest)
        where = {"pk": pk_val} if expected is None else {"pk": pk_val, "history_count": expected}
        with connections[using].cursor() as cursor:
            cursor.execute(*update_statement(type(self), using, values, **where))
            updated = cursor.rowcount
        if expected is not None and not updated:
            raise TaskChanged(f"task {pk_val} was changed by another write since it was read")
        return updated > 0

    def _kept_locked_read(self, using: str) -> dict[str, Any] | None:
        """The values ``keep_locked_read`` kept for this save, if still valid (see there); else None (read again).
        Every save of an existing task ends the validity of the connection's last kept read: it may be its row."""
        read: _LockedRead | None = self.__dict__.pop(_LAST_LOCKED_READ, None)
        connection = connections[using]
        last: _LockedRead | None = getattr(connection, _LAST_LOCKED_READ, None)
        setattr(connection, _LAST_LOCKED_READ, None)
        if read is None or read is not last or not connection.in_atomic_block:
            return None
        if not any(entry[1] is read for entry in reversed(connection.run_on_commit)):
            return None
        return read.values

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise HardDeleteRefused(
            "tasks are never hard-deleted: soft-delete with tasks.services.soft_delete(); "
            "only a retention purge removes a task, after archiving it"
        )

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None

    @property
    def celery_task_id(self) -> str:
        """The Celery task id of the task's latest publish ('' before its first): derived from its id and publish
        count (``ids.celery_id``), so not stored."""
        return celery_id(self.pk, self.dispatch_count) if self.dispatch_count else ""

    @classmethod
    def tracked_fields(cls) -> list[models.Field]:
        return [f for f in cls._meta.concrete_fields if f.name not in UNTRACKED_FIELDS and not f.primary_key]


class _FieldNames(NamedTuple):
    """A model's concrete fields by name, for the scans of every save of a task (its kept read, what changed since),
    which look into the instance's ``__dict__`` instead of calling ``getattr`` 58 times each."""

    attnames: frozenset[str]
    json_attnames: tuple[str, ...]  # the fields whose values are dicts and lists, which a kept read copies
    unrelated: tuple[tuple[str, str], ...]  # (name, attname) of the fields but foreign keys
    saved: tuple[tuple[str, str], ...]  # (name, attname) of the fields but the primary key


def _field_names(model: type[models.Model]) -> _FieldNames:
    fields = model._meta.concrete_fields
    return _FieldNames(
        frozenset(f.attname for f in fields),
        tuple(f.attname for f in fields if isinstance(f, models.JSONField)),
        tuple((f.name, f.attname) for f in fields if not f.is_relation),
        tuple((f.name, f.attname) for f in fields if not f.primary_key),
    )


_TASK_FIELDS = _field_names(Task)


# Where a database connection (one per thread) keeps its compiled reads of a task by primary key: ``read_task``.
_PK_READS = "_crux_task_pk_reads"


def read_task(
    pk: uuid.UUID, using: str | None = None, *, lock: bool = False, only: tuple[str, ...] = ()
) -> Task | None:
    """The task ``pk`` as the database holds it now, or None; with ``lock``, its row locked until the end of the
    caller's transaction (``select_for_update``). What ``Task.objects.filter(pk=pk).first()`` reads, with its SQL
    compiled once per connection: Django builds and compiles the query of the task's 58 columns anew for every read
    (about 290 of the 350 µs one took), and each write of a service reads its task first. ``using``: by default the
    router's database, for a write when locked, as a queryset picks it. ``only``: read these fields alone (and the
    id; the others are deferred), as ``.only()`` does: a check of a few of them builds no instance of 58."""
    if using is None:
        using = router.db_for_write(Task) if lock else router.db_for_read(Task)
    connection = connections[using]
    reads: dict[tuple[bool, tuple[str, ...]], _PkRead] = connection.__dict__.setdefault(_PK_READS, {})
    compiled = reads.get((lock, only))
    if compiled is None:
        compiled = reads[lock, only] = _PkRead(connection, lock=lock, only=only)
    return compiled(pk)


class _PkRead:
    """One connection's read of a task by primary key: its SQL, the columns' model fields and their converters."""

    def __init__(self, connection: Any, *, lock: bool, only: tuple[str, ...]) -> None:
        tasks = Task._base_manager.using(connection.alias).filter(pk=uuid.UUID(int=0)).order_by()
        if only:
            tasks = tasks.only(*only)
        self.compiler = (tasks.select_for_update() if lock else tasks).query.get_compiler(connection=connection)
        self.sql = self.compiler.as_sql()[0]
        columns = [column for column, _, _ in self.compiler.select]
        self.names = [column.target.attname for column in columns]
        self.converters = self.compiler.get_converters(columns)
        self.connection, self.lock = connection, lock

    def __call__(self, pk: uuid.UUID) -> Task | None:
        connection = self.connection
        if self.lock and connection.features.has_select_for_update and connection.get_autocommit():
            raise TransactionManagementError("select_for_update cannot be used outside of a transaction.")
        with connection.cursor() as cursor:
            cursor.execute(self.sql, [Task._meta.pk.get_db_prep_value(pk, connection)])
            rows = cursor.fetchall()
        if not rows:
            return None
        values = next(iter(self.compiler.apply_converters(rows, self.converters))) if self.converters else rows[0]
        return Task.from_db(connection.alias, self.names, values)


class TaskHistoryQuerySet(models.QuerySet):
    def update(self, **kwargs: Any) -> int:
        raise AppendOnlyViolation("task history is append-only")

    def bulk_update(self, *args: Any, **kwargs: Any) -> int:
        raise AppendOnlyViolation("task history is append-only")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AppendOnlyViolation("task history is append-only; only a retention purge removes it")


class TaskHistory(LoadedDirectly):
    """One row per change of a task, chained by hash to the previous row of that task."""

    task = models.ForeignKey(Task, on_delete=models.PROTECT, related_name="history", db_index=False)
    seq = models.PositiveIntegerField()
    event = CodedChoiceField(max_length=16, choices=HistoryEvent.choices, codes=EVENT_CODES, coded_on=BOTH_ENGINES)
    state_from = CodedChoiceField(
        max_length=16, choices=TaskState.choices, blank=True, codes=STATE_CODES, coded_on=BOTH_ENGINES
    )
    state_to = CodedChoiceField(max_length=16, choices=TaskState.choices, codes=STATE_CODES, coded_on=BOTH_ENGINES)
    actor = CodedNameField(max_length=150, codes=SYSTEM_ACTORS, coded_on=BOTH_ENGINES)
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,  # no query reads the history by user: an index would cost 9 bytes a completed task
        null=True,
        blank=True,
        related_name="+",
    )
    channel = CodedChoiceField(max_length=16, choices=Channel.choices, codes=CHANNEL_CODES, coded_on=BOTH_ENGINES)
    reason = models.TextField(blank=True)
    error_message = models.TextField(blank=True)
    details = DeflatedJSONField(default=dict, blank=True)
    created_at = CompactDateTimeField()  # no index: ids grow with time (selectors.history_since)
    key_id = models.CharField(
        max_length=KEY_ID_MAX_LENGTH, blank=True, help_text="The audit key that signed this row ('' = unkeyed)."
    )
    # The previous row's hash is not stored: it is that row's ``hash`` (the genesis hash before the first), which
    # every check reads anyway; a row removed, inserted or reordered breaks the next row's HMAC.
    hash = DigestField(help_text="HMAC-SHA256 over the previous row's hash and this row, under key_id.")

    objects = TaskHistoryQuerySet.as_manager()

    class Meta:
        ordering = ["task", "seq"]
        verbose_name_plural = "task history"
        constraints = [models.UniqueConstraint(fields=["task", "seq"], name="taskhistory_task_seq")]
        # The recovery sweep's rows alone (a few, against millions of others): when it last changed a task.
        indexes = [
            models.Index(
                fields=["created_at"], name="history_recovery_created", condition=models.Q(channel=Channel.RECOVERY)
            )
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.event} {self.state_from or '-'}->{self.state_to} by {self.actor}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AppendOnlyViolation("task history is append-only: rows are never changed")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def compiled_insert(self, using: str) -> tuple[str, tuple[Any, ...]]:
        """This new row's INSERT (SQL and parameters), compiled now to run later with ``run_insert``.

        The audit trail compiles a task's history row before the task's own
        INSERT, so that only the two statements run while SQLite's write lock
        is held (crux/db/base.py), not the ORM's work of building them.
        """
        [(sql, params)] = insert_statements(self, using)
        return sql, params

    @staticmethod
    def run_insert(using: str, compiled: tuple[str, tuple[Any, ...]]) -> None:
        with connections[using].cursor() as cursor:
            cursor.execute(*compiled)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AppendOnlyViolation("task history is append-only; only a retention purge removes it")


# What a history row is counted by in the counters derived from history (/metrics): its kind.
HISTORY_KIND = ("event", "state_from", "state_to", "channel")


class HistoryTally(models.Model):
    """History rows of each kind whose id is at most the tally's mark (``HistoryTallyMark``): the counters derived
    from history read these counts and group only the rows above the mark, not the whole history at every scrape.

    Kept by ``tasks.services.tally``: beat's ``crux.history_tally`` adds the rows written since the mark and moves
    it; a purge's erase takes off, and an unarchive's reinstate adds back, the rows under the mark it removes or
    brings back, in its own transaction. A derived figure, not audit data: ``verify_audit`` never reads it.
    """

    # The history's own kind fields, copied: a scrape reads both tables in one UNION, which decodes the tally's
    # codes with the history's fields.
    event, state_from, state_to, channel = (
        cast(models.Field, TaskHistory._meta.get_field(name)).clone() for name in HISTORY_KIND
    )
    count = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=list(HISTORY_KIND), name="history_tally_kind")]

    def __str__(self) -> str:
        return f"{self.count} {self.event} rows ({self.state_from}->{self.state_to} via {self.channel})"


class HistoryTallyMark(models.Model):
    """The highest history id ``HistoryTally`` counts (one row, id 1; none: 0). When it was set, every history row
    under it had been committed or rolled back, so no row can appear under it later (history ids are never reused:
    SQLite's AUTOINCREMENT, PostgreSQL's sequence)."""

    upto = models.BigIntegerField(default=0)
    advanced_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"history tallied up to id {self.upto}"


class HistoryPurgeGrant(models.Model):
    """The narrow hook past the history DELETE trigger, which an INSERT cannot forge.

    The retention purge inserts a grant for a whole task it has archived, deletes
    that task's history in the same transaction, then removes the grant. The
    trigger refuses a history DELETE unless the task's grant carries a valid
    ``mac`` over (task id, nonce) under the grant key derived from the audit key
    (``tasks.keys.grant_mac``; checked by ``tasks.db_triggers``). A grant seen
    outside a purge is reported by ``verify_audit``.
    """

    task_id = CompactUUIDField(primary_key=True)  # as the history rows hold it, which the trigger compares
    created_at = models.DateTimeField(default=timezone.now)
    nonce = models.CharField(max_length=32, blank=True)
    mac = models.CharField(max_length=64, blank=True)

    def __str__(self) -> str:
        return f"purge grant for {self.task_id}"


class OutputType(models.TextChoices):
    STDOUT = "stdout", "stdout"
    STDERR = "stderr", "stderr"
    LOG = "log", "log"
    ARTIFACT = "artifact", "artifact"
    COMMIT = "commit", "commit"


# What each code of an output's type means (CodedChoiceField): append only.
OUTPUT_TYPE_CODES = ("stdout", "stderr", "log", "artifact", "commit")


class TaskOutput(LoadedDirectly):
    task = models.ForeignKey(Task, on_delete=models.PROTECT, related_name="outputs", db_index=False)
    output_type = CodedChoiceField(
        max_length=16, choices=OutputType.choices, codes=OUTPUT_TYPE_CODES, coded_on=BOTH_ENGINES
    )
    content = CompressedTextField(blank=True)
    created_at = CompactDateTimeField(default=timezone.now)
    file_path = models.CharField(max_length=500, blank=True)
    file_size = models.PositiveBigIntegerField(null=True, blank=True)
    mime_type = models.CharField(max_length=100, blank=True)
    commit_hash = models.CharField(max_length=64, blank=True)
    branch = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["task", "id"]
        # A task's outputs in the order they were written: their ids grow as they are inserted (the event stream
        # reads them by id too). Not by time: the index would hold each output's time too (54 bytes a completed
        # task on SQLite).
        indexes = [KeyOrderIndex(fields=["task", "id"], name="output_task_order")]

    def __str__(self) -> str:
        return f"{self.output_type} of {self.task_id}"

    def compiled_insert(self, using: str) -> tuple[str, tuple[Any, ...]] | None:
        """This new output's INSERT returning its id (SQL and parameters), its text redacted and compressed now,
        to run later with ``run_insert``: a worker runs it under its task's row lock, which on SQLite is the write
        lock every writer waits for, then held for the claim's check and this statement alone, not for the ORM's
        work of building it. None where the database cannot return the id from the INSERT (save it instead)."""
        if not connections[using].features.can_return_columns_from_insert:
            return None
        redact_fields(self)  # an INSERT sends no pre_save: the redaction every output gets, done here
        [(sql, params)] = insert_statements(self, using, returning=True)
        return sql, params

    def run_insert(self, using: str, compiled: tuple[str, tuple[Any, ...]]) -> None:
        """Run ``compiled_insert``'s statement: the output is then saved, with its id."""
        with connections[using].cursor() as cursor:
            cursor.execute(*compiled)
            (self.pk,) = cursor.fetchone()
        self._state.adding, self._state.db = False, using


class CLISession(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True)
    name = models.CharField(max_length=200, blank=True)
    working_dir = models.CharField(max_length=500, blank=True)
    provider = models.CharField(max_length=64, blank=True)
    model = models.CharField(max_length=100, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    last_activity_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-started_at"]
        verbose_name = "CLI session"

    def __str__(self) -> str:
        return self.name or str(self.id)

    @property
    def is_active(self) -> bool:
        return self.ended_at is None


class CLISessionCommand(models.Model):
    session = models.ForeignKey(CLISession, on_delete=models.PROTECT, related_name="commands")
    task = models.ForeignKey(Task, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    command = models.TextField()
    exit_code = models.IntegerField(null=True, blank=True)
    output = models.TextField(blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["session", "started_at", "id"]
        verbose_name = "CLI session command"

    def __str__(self) -> str:
        return self.command[:60]


class UserPreference(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="crux_preference")
    default_provider = models.CharField(max_length=64, blank=True)
    default_model = models.CharField(max_length=100, blank=True)
    default_role = models.CharField(max_length=64, blank=True)
    preferences = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"preferences of {self.user}"


class IdempotencyKey(models.Model):
    """A client's ``Idempotency-Key`` for one submission: a retry with the same key returns the same task.

    Scoped to the owner, and bound to a fingerprint of the request, so the same
    key with a different request is refused instead of creating a second task.
    """

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    task = models.OneToOneField(Task, on_delete=models.CASCADE, related_name="idempotency_key")
    fingerprint = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "key"], name="idempotency_owner_key")]

    def __str__(self) -> str:
        return f"{self.key} -> {self.task_id}"


class TaskSchedule(models.Model):
    """A periodic task defined by staff: each firing submits a normal Crux task with these values, owned by ``owner``.

    Beat reads ``periodic_task`` (django-celery-beat), which ``tasks.services.schedules`` derives from this row on
    every save: staff never point beat at an arbitrary Celery task, and the payload is checked against the
    handler's declaration when the schedule is saved, not when it fires.
    """

    name = models.SlugField(max_length=100, unique=True, help_text="Names the schedule in the tasks' history.")
    title = models.CharField(max_length=200, help_text="Title of each task it submits.")
    handler = models.CharField(max_length=100, help_text="Registered handler that runs each task.")
    payload = models.JSONField(default=dict, blank=True)
    interval = models.ForeignKey(
        "django_celery_beat.IntervalSchedule", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    crontab = models.ForeignKey(
        "django_celery_beat.CrontabSchedule", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    enabled = models.BooleanField(default=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="task_schedules",
        help_text="Owner of the tasks it submits.",
    )
    queue = models.CharField(
        max_length=100,
        blank=True,
        validators=QUEUE_NAME_VALIDATORS,
        help_text="Empty: the handler's queue, else the default queue.",
    )
    priority = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=PRIORITY_VALIDATORS,
        help_text="0 (last) to 9 (first); empty: the handler's.",
    )
    max_attempts = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="Empty: the handler's.",
    )
    soft_time_limit = models.FloatField(
        null=True,
        blank=True,
        validators=TIME_LIMIT_VALIDATORS,
        help_text="Seconds; empty: the handler's.",
    )
    time_limit = models.FloatField(
        null=True,
        blank=True,
        validators=TIME_LIMIT_VALIDATORS,
        help_text="Seconds; empty: the handler's.",
    )
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        editable=False,
        related_name="crux_schedule",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(interval__isnull=True, crontab__isnull=False)
                | models.Q(interval__isnull=False, crontab__isnull=True),
                name="taskschedule_one_timing",
                violation_error_message="Choose an interval or a crontab, not both.",
            )
        ]

    def __str__(self) -> str:
        return self.name


class SchedulerLease(models.Model):
    """The one row naming the beat allowed to send periodic work, until ``expires_at`` (``crux.scheduler``).

    Taken and renewed by compare-and-set in SQL, so two beats started by mistake never both send, and a flush of
    Redis changes nothing.
    """

    name = models.CharField(max_length=32, primary_key=True)
    holder = models.CharField(max_length=255)
    expires_at = models.DateTimeField()
    acquired_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name}: {self.holder} until {self.expires_at}"


class Worker(models.Model):
    """One worker instance (a ``celery worker`` main process) as it last reported itself: telemetry, not task state.

    Its main process upserts the row every ``WORKER_HEARTBEAT_SECONDS`` (``crux.celery.WorkerRegistry``) and marks
    it stopped on a clean shutdown; a killed worker simply stops reporting, so a row is live only while its heartbeat
    is recent (``tasks.selectors.live_workers``). No history rows: nothing here is a task's state.
    """

    name = models.CharField(max_length=255, help_text="Celery node name (-n), as in a running task's worker id.")
    pid = models.PositiveIntegerField(help_text="The main process's pid: the instance part of a task's worker id.")
    hostname = models.CharField(max_length=255)
    queues = models.JSONField(default=list, help_text="Queues it consumes.")
    concurrency = models.PositiveIntegerField(default=0)
    pool_pids = models.JSONField(default=list, help_text="Pids of the pool's processes that run tasks.")
    started_at = models.DateTimeField()
    last_heartbeat = models.DateTimeField()
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name", "pid"]
        constraints = [models.UniqueConstraint(fields=["name", "pid"], name="worker_instance")]
        indexes = [models.Index(fields=["last_heartbeat"], name="worker_last_heartbeat")]

    def __str__(self) -> str:
        return f"{self.name} (pid {self.pid})"


class CeleryResultManager(TaskResultManager):
    """Writes a result row in one statement (an INSERT that updates the row on a conflict of ``task_id``) where
    django-celery-results' ``store_result`` makes four (SELECT, SAVEPOINT, INSERT, RELEASE) or two (SELECT,
    UPDATE): two writes per executed task, inside the claim's and the outcome's transactions. The statement is
    the one ``bulk_create(update_conflicts=True)`` compiles, built directly: that method's checks and preparation
    of a batch cost a worker a third of a millisecond per row."""

    def store_result(  # type: ignore[override]  # the same arguments, by keyword as the backend passes them
        self,
        content_type: str,
        content_encoding: str,
        task_id: str,
        result: Any,
        status: str,
        traceback: str | None = None,
        meta: str | None = None,
        periodic_task_name: str | None = None,
        task_name: str | None = None,
        task_args: str | None = None,
        task_kwargs: str | None = None,
        worker: str | None = None,
        using: str | None = None,
        **kwargs: Any,
    ) -> TaskResult:
        fields = {
            "status": status,
            "result": result,
            "traceback": traceback,
            "meta": meta,
            "content_encoding": content_encoding,
            "content_type": content_type,
            "periodic_task_name": periodic_task_name,
            "task_name": task_name,
            "task_args": task_args,
            "task_kwargs": task_kwargs,
            "worker": worker,
        }
        started = kwargs.get("date_started")
        if started is not None:  # the outcome's: when its attempt started; the backend's Now(): the same moment
            fields["date_started"] = started if isinstance(started, datetime) else timezone.now()
        row = self.model(task_id=task_id, **fields)
        redact_fields(row)  # an INSERT sends no pre_save: the redaction every result row gets, done here
        using = using or router.db_for_write(self.model)
        options = TaskResult._meta  # the proxy's table
        statements = insert_statements(
            row,
            using,
            on_conflict=OnConflict.UPDATE,
            update_fields=[options.get_field(name) for name in (*fields, "date_done")],
            unique_fields=[options.get_field("task_id")],
        )
        with connections[using].cursor() as cursor:
            for statement in statements:
                cursor.execute(*statement)
        return row


class CeleryResult(TaskResult):
    """Celery's result rows (django-celery-results' table, as ``AsyncResult`` and Flower read it), written through
    :class:`CeleryResultManager` by Crux's result backend (``tasks.tasks.ResultBackend``)."""

    objects = CeleryResultManager()

    class Meta:
        proxy = True
