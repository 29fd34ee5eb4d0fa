"""Form pieces every admin page that submits work shares (the task add form, periodic schedules).

A handler is chosen from the registered ones; its payload is a JSON object shown next to the handler's JSON
Schema (the one ``GET /api/handlers`` publishes) and checked by the services, whose field messages land on the form.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils.html import format_html, format_html_join

from tasks.exceptions import InvalidTaskData
from tasks.registry import payload_json_schema, registered_names


def handler_choices() -> list[tuple[str, str]]:
    return [("", "---------"), *((name, name) for name in registered_names())]


def field_messages(messages: Any, prefix: str = "") -> list[str]:
    """Messages of a (possibly nested) DRF/Django error structure, each prefixed with the field it names."""
    if isinstance(messages, dict):
        return [line for key, value in messages.items() for line in field_messages(value, f"{prefix}{key}: ")]
    if isinstance(messages, list | tuple):
        return [line for value in messages for line in field_messages(value, prefix)]
    return [f"{prefix}{messages}"]


def payload_schemas_html() -> str:
    """Each handler's payload schema, shown under the payload field (the one matching the chosen handler applies)."""
    return format_html_join(
        "",
        "<details><summary><code>{}</code></summary><pre class='crux-pre'>{}</pre></details>",
        ((name, json.dumps(payload_json_schema(name), indent=2)) for name in registered_names()),
    )


class HandlerField(forms.ChoiceField):
    """A registered handler; the choices are read on each form, so handlers added by settings appear."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("help_text", "Registered handler that runs the task.")
        super().__init__(choices=handler_choices, **kwargs)


class PayloadField(forms.JSONField):
    """A JSON object (blank: ``{}``); what it must hold is the chosen handler's schema, checked by the services."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("initial", dict)
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 6, "cols": 60}))
        super().__init__(**kwargs)

    def clean(self, value: Any) -> Any:
        payload = super().clean(value)
        if payload is None:
            return {}
        if not isinstance(payload, dict):
            raise ValidationError('Enter a JSON object, e.g. {"seconds": 1}.', code="not_object")
        return payload


class PayloadFormMixin(forms.BaseForm):
    """A form with ``handler`` and ``payload`` fields whose service refusals (``InvalidTaskData``) become field errors.

    The payload's help lists every handler's JSON Schema. ``add_service_errors`` attaches each message of the
    service's ``{field: messages}`` to that field of the form (a payload's nested fields prefixed with their name),
    or to the form as a whole for a field it does not show.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        payload = self.fields.get("payload")
        if payload is not None:
            payload.help_text = format_html(
                "A JSON object the chosen handler accepts (as <code>GET /api/handlers</code> publishes it), e.g. "
                '<code>{{"seconds": 1}}</code>.{}',
                payload_schemas_html(),
            )

    def add_service_errors(self, exc: InvalidTaskData, aliases: dict[str, str] | None = None) -> None:
        for name, messages in exc.errors.items():
            name = (aliases or {}).get(name, name)
            self.add_error(name if name in self.fields else None, field_messages(messages))
