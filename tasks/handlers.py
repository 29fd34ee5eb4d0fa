"""Built-in handlers: enough to make a demo real without any network.

Each takes (ctx, payload) and returns a JSON-able result; raising records a failure. Each declares its payload
with ``@accepts`` (a DRF serializer): a submission whose payload does not fit is refused with a 400 naming the
field, and ``GET /api/handlers`` publishes the declaration as a JSON Schema. Keys a declaration does not name are
passed through untouched.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from rest_framework import serializers

from tasks.execution import TaskContext
from tasks.registry import accepts

# Bounds that keep a demo handler a demo: no hour-long sleep or runaway agent loop by a typo.
MAX_SLEEP_SECONDS = 3600.0
MAX_STEPS = 1000
MAX_ITERATIONS = 100
MAX_DELAY_SECONDS = 60.0


class EchoPayload(serializers.Serializer):
    message = serializers.CharField(required=False, allow_blank=True, help_text="Echoed back (default: the payload).")


class SleepPayload(serializers.Serializer):
    seconds = serializers.FloatField(
        required=False, min_value=0.0, max_value=MAX_SLEEP_SECONDS, help_text="How long to sleep (default 1)."
    )
    steps = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_STEPS, help_text="Progress reports (default 10)."
    )


class FailPayload(serializers.Serializer):
    message = serializers.CharField(required=False, allow_blank=True, help_text="The error raised.")


class AgentDemoPayload(serializers.Serializer):
    prompt = serializers.CharField(required=False, allow_blank=True, help_text="The problem to work on.")
    max_iterations = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_ITERATIONS, help_text="Stop after this many (default 3)."
    )
    converge_after = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_ITERATIONS, help_text="Converge at this iteration (default 2)."
    )
    delay = serializers.FloatField(
        required=False, min_value=0.0, max_value=MAX_DELAY_SECONDS, help_text="Seconds per iteration (default 0.05)."
    )


@accepts(EchoPayload)
def echo(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    """Return the payload's ``message`` (or the whole payload)."""
    ctx.output("stdout", str(payload.get("message", payload)))
    return {"echo": payload.get("message", payload)}


@accepts(SleepPayload)
def sleep(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Sleep ``seconds`` (default 1) in ``steps`` steps, reporting progress after each."""
    seconds = float(payload.get("seconds", 1.0))
    steps = max(1, int(payload.get("steps", 10)))
    for step in range(1, steps + 1):
        time.sleep(seconds / steps)
        ctx.progress(step / steps, phase=f"step {step} of {steps}")
    return {"slept": seconds}


@accepts(FailPayload)
def fail(ctx: TaskContext, payload: dict[str, Any]) -> None:
    """Fail on purpose with ``message``: shows how a failure is recorded."""
    ctx.output("stderr", "about to fail on purpose")
    raise RuntimeError(payload.get("message", "deliberate failure"))


@accepts(AgentDemoPayload)
def agent_demo(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """A simulated agent run: iterations that converge, with outputs and metrics (tokens, why it stopped)."""
    prompt = str(payload.get("prompt", "solve the task"))
    max_iterations = max(1, int(payload.get("max_iterations", 3)))
    delay = float(payload.get("delay", 0.05))
    prompt_tokens = completion_tokens = 0
    answer = prompt
    iterations = 0
    converged = False
    for iterations in range(1, max_iterations + 1):
        ctx.progress((iterations - 1) / max_iterations, phase=f"iteration {iterations}")
        time.sleep(delay)
        previous = answer
        answer = hashlib.sha256(previous.encode()).hexdigest()[: 8 * iterations]
        prompt_tokens += len(previous.split()) + 50
        completion_tokens += len(answer) // 4 + 20
        ctx.output("log", f"iteration {iterations}: draft {answer}")
        converged = iterations >= int(payload.get("converge_after", 2))
        if converged:
            break
    ctx.output("artifact", answer, file_path="answer.txt", mime_type="text/plain", file_size=len(answer))
    ctx.metrics(
        iterations=iterations,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        stop_reason="evaluator_stop" if converged else "max_iterations",
        converged=converged,
    )
    ctx.progress(1.0, phase="done")
    return {"answer": answer, "iterations": iterations, "converged": converged}
