"""One streamed model call, down the model chain, through the official SDK.

Each model of the chain (ROLEFERRY_ANTHROPIC_MODELS) gets until its first text token: the
first-token deadline for all but the last, which only the overall deadline cuts. A 429, 529,
5xx, connection failure or a stall before the first token moves on to the next model; none is
retried on the same model (each model's policy makes one attempt), and a spend-limit refusal
ends the chain at once, as every model would give it. Each model has a policy of its own (its
breaker and budget, as Anthropic counts limits per model class), reporting to the integration
metrics under `anthropic`.

After the first token a break cannot move on: an `error` event, no event for `stall_s`, a cut
connection, a malformed chunk or the overall deadline end the call with what it wrote so far.
`ping` and event types the SDK does not know are skipped by the SDK itself.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

import pydantic

from roleferry.drafting.metrics import (
    FALLBACKS,
    OPERATION_DURATION,
    STREAM_BREAKS,
    TIME_TO_FIRST_CHUNK,
    TOKEN_USAGE,
)
from roleferry.providers.anthropic.client import MESSAGES, AnthropicClient
from roleferry.providers.errors import BadResponse, QuotaExhausted, map_error
from roleferry.resilience.deadline import Deadline
from roleferry.resilience.errors import CallError
from roleferry.resilience.policy import CallObserver, Policy, RetryConfig
from roleferry.resilience.store import StateStore

if TYPE_CHECKING:
    from anthropic.lib.streaming import AsyncMessageStream, AsyncMessageStreamManager

    from roleferry.config import Settings
    from roleferry.providers.registry import Providers


@dataclass(frozen=True)
class Call:
    """What one model call sends: the system prompt, the messages (a last assistant message
    is the prefill the reply continues), and the token bound."""

    system: str
    messages: list[dict[str, str]]
    max_tokens: int


@dataclass(frozen=True)
class Started:
    model: str


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Ended:
    """The call is over: its text, its usage, and why it broke (None when it ended well)."""

    model: str
    text: str
    input_tokens: int
    output_tokens: int
    broken: str | None


@dataclass(frozen=True)
class Exhausted:
    """No model of the chain gave a first token; `reasons` says why, model by model."""

    reasons: dict[str, str]


Piece = Started | Text | Ended | Exhausted


@dataclass
class _Opened:
    model: str
    manager: AsyncMessageStreamManager[Any]
    stream: AsyncMessageStream[Any]
    first: str
    started: float
    input_tokens: int


class _AsProvider:
    """Reports a model's calls under the provider's name, so the integration metrics stay
    one series per provider."""

    def __init__(self, stats: CallObserver, provider: str) -> None:
        self.stats = stats
        self.provider = provider

    def observe(
        self, provider: str, endpoint: str, duration_s: float, error_type: str | None
    ) -> None:
        self.stats.observe(self.provider, endpoint, duration_s, error_type)


class ModelChain:
    def __init__(
        self,
        client: AnthropicClient,
        base: Policy,
        store: StateStore,
        stats: CallObserver,
        *,
        models: list[str],
        first_token_s: float,
        deadline_s: float,
        stall_s: float,
    ) -> None:
        self.client = client
        self.models = models
        self.first_token_s = first_token_s
        self.stall_s = stall_s
        self._sdk_lock = asyncio.Lock()
        config = replace(base.config, attempt_timeout_s=deadline_s, retry=RetryConfig(attempts=1))
        observer = _AsProvider(stats, client.name)
        self.policies: Mapping[str, Policy] = {
            model: Policy(f"{client.name}/{model}", config, store, observer) for model in models
        }

    async def stream(self, call: Call, overall: Deadline) -> AsyncGenerator[Piece]:
        """Started, Text…, Ended from the first model that gives a first token; Exhausted if
        none does."""
        if self.client._sdk is None:
            # The SDK's first import takes seconds: done once, off the loop and outside any
            # model's first-token deadline.
            async with self._sdk_lock:
                if self.client._sdk is None:
                    await asyncio.to_thread(self.client.sdk)
        reasons: dict[str, str] = {}
        for index, model in enumerate(self.models):
            last = index == len(self.models) - 1
            allowed = overall.remaining() if last else min(self.first_token_s, overall.remaining())
            sent = time.perf_counter()
            try:
                opened = await self.policies[model].call(
                    MESSAGES,
                    partial(self._open, model, call, overall),
                    deadline=Deadline(allowed),
                )
            except CallError as error:
                reasons[model] = error.kind
                FALLBACKS.labels(model, error.kind).inc()
                OPERATION_DURATION.labels(model, error.kind).observe(time.perf_counter() - sent)
                if isinstance(error, QuotaExhausted):
                    break
                continue
            try:
                yield Started(model)
                async for piece in self._follow(opened, overall):
                    yield piece
            finally:
                # A caller that stops reading (its draft refused) still frees the connection.
                await _close(opened.manager)
            return
        yield Exhausted(reasons)

    async def _open(self, model: str, call: Call, overall: Deadline, _timeout: float) -> _Opened:
        """Sends the call and reads up to its first text; closes the stream on any failure
        (including the policy's timeout cancelling it, which bounds the wait: the SDK's own
        timeout is the overall deadline)."""
        started = time.perf_counter()
        manager = self.client.sdk().messages.stream(
            model=model,
            max_tokens=call.max_tokens,
            system=call.system,
            messages=call.messages,  # type: ignore[arg-type]
            timeout=max(overall.remaining(), 0.1),
        )
        input_tokens = 0
        try:
            stream = await manager.__aenter__()
            while True:
                event = await anext(stream)
                if event.type == "message_start":
                    input_tokens = event.message.usage.input_tokens
                elif (
                    event.type == "content_block_delta"
                    and event.delta.type == "text_delta"
                    and event.delta.text
                ):
                    TIME_TO_FIRST_CHUNK.labels(model).observe(time.perf_counter() - started)
                    return _Opened(model, manager, stream, event.delta.text, started, input_tokens)
        except BaseException as exc:
            await _close(manager)
            if isinstance(exc, StopAsyncIteration):
                raise BadResponse(self.client.name, f"{MESSAGES} ended before any text") from None
            if isinstance(exc, Exception) and not isinstance(exc, CallError):
                raise map_error(self.client.spec, exc, MESSAGES) from exc
            raise

    async def _follow(self, opened: _Opened, overall: Deadline) -> AsyncIterator[Piece]:
        parts = [opened.first]
        yield Text(opened.first)
        output_tokens, broken, stopped = 0, None, False
        try:
            while True:
                try:
                    async with asyncio.timeout(min(self.stall_s, overall.remaining())):
                        event = await anext(opened.stream)
                except StopAsyncIteration:
                    broken = None if stopped else "connection_lost"
                    break
                except TimeoutError:
                    broken = "deadline" if overall.expired else "stall"
                    break
                except Exception as exc:
                    broken = _why_broken(exc)
                    break
                if event.type == "content_block_delta" and event.delta.type == "text_delta":
                    parts.append(event.delta.text)
                    yield Text(event.delta.text)
                elif event.type == "message_delta":
                    output_tokens = event.usage.output_tokens
                elif event.type == "message_stop":
                    stopped = True
        finally:
            await _close(opened.manager)
        model = opened.model
        output_tokens = output_tokens or len(parts)
        if broken:
            STREAM_BREAKS.labels(model, broken).inc()
        OPERATION_DURATION.labels(model, broken or "").observe(time.perf_counter() - opened.started)
        TOKEN_USAGE.labels("input", model).observe(opened.input_tokens)
        TOKEN_USAGE.labels("output", model).observe(output_tokens)
        yield Ended(model, "".join(parts), opened.input_tokens, output_tokens, broken)


def _why_broken(exc: Exception) -> str:
    """A stream's failure after its first token, named: the SDK raises an `error` event as a
    status error, a chunk that is not JSON as a decode error, and a dropped connection as its
    HTTP library's error (the SDK's own httpx fork, so matched by kind, not by class)."""
    import anthropic

    if isinstance(exc, anthropic.APIStatusError):
        return "error_event"
    if isinstance(exc, json.JSONDecodeError | pydantic.ValidationError):
        return "malformed_chunk"
    return "connection_lost"


async def _close(manager: AsyncMessageStreamManager[Any]) -> None:
    """Closes a stream's connection; shielded, so a cancelled caller still frees it."""
    await asyncio.shield(manager.__aexit__(None, None, None))


def model_chain(providers: Providers, settings: Settings) -> ModelChain:
    """The chain the drafting API and the sequence dispatcher draft with, from settings."""
    return ModelChain(
        providers.clients["anthropic"],
        providers.policies["anthropic"],
        providers.store,
        providers.stats,
        models=settings.anthropic_models,
        first_token_s=settings.draft_first_token_s,
        deadline_s=settings.draft_deadline_s,
        stall_s=settings.draft_stall_s,
    )
