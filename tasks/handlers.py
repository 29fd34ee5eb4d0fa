"""Built-in handlers: enough to make a demo real without any network.

Each takes (ctx, payload) and returns a JSON-able result; raising records a failure.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from tasks.execution import TaskContext


def echo(ctx: TaskContext, payload: dict[str, Any]) -> Any:
    """Return the payload's ``message`` (or the whole payload)."""
    ctx.output("stdout", str(payload.get("message", payload)))
    return {"echo": payload.get("message", payload)}


def sleep(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Sleep ``seconds`` (default 1) in ``steps`` steps, reporting progress after each."""
    seconds = float(payload.get("seconds", 1.0))
    steps = max(1, int(payload.get("steps", 10)))
    for step in range(1, steps + 1):
        time.sleep(seconds / steps)
        ctx.progress(step / steps, phase=f"step {step} of {steps}")
    return {"slept": seconds}


def fail(ctx: TaskContext, payload: dict[str, Any]) -> None:
    """Fail on purpose with ``message``: shows how a failure is recorded."""
    ctx.output("stderr", "about to fail on purpose")
    raise RuntimeError(payload.get("message", "deliberate failure"))


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
