"""The Anthropic simulator's per-request fault shapes, seen through the official SDK (retries
off): each does to the SDK what the real API's failure does, and the next request is clean."""

from __future__ import annotations

import json
import time
from typing import Any

import anthropic
import httpx
import httpx2
import pytest

from roleferry.providers.sandbox_credentials import SANDBOX_API_KEYS
from tests.support.sandbox_server import SandboxServer

ASK = [{"role": "user", "content": "Write to Dana at Acme for the Staff Engineer role."}]


def sdk(sb: SandboxServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key=SANDBOX_API_KEYS["anthropic"], base_url=sb.base("anthropic"), max_retries=0
    )


def shape(sb: SandboxServer, **fault: Any) -> None:
    sb.control("anthropic", stream_faults=[fault])


def stream_text(sb: SandboxServer, model: str = "m", timeout: float = 10) -> list[str]:
    with sdk(sb).messages.stream(
        model=model, max_tokens=300, messages=ASK, timeout=timeout
    ) as stream:
        return list(stream.text_stream)


def collect(client: anthropic.Anthropic, seen: list[str]) -> None:
    """Streams into `seen`, so a test sees what arrived before the stream failed."""
    with client.messages.stream(model="m", max_tokens=300, messages=ASK) as stream:
        seen.extend(stream.text_stream)


def test_status_529_before_the_first_token_is_overloaded(sb: SandboxServer) -> None:
    """A `status` shape answers 529 overloaded_error; the next request streams normally."""
    shape(sb, kind="status", status=529)
    with pytest.raises(anthropic.APIStatusError) as caught:
        stream_text(sb)
    assert caught.value.status_code == 529
    assert caught.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert len(stream_text(sb)) > 20


def test_status_429_can_carry_the_spend_limit(sb: SandboxServer) -> None:
    """A 429 shape with a message: rate_limit_error, retry-after, the message as given."""
    shape(sb, kind="status", status=429, message="enforced_spend_limit_reached")
    with pytest.raises(anthropic.RateLimitError) as caught:
        stream_text(sb)
    assert caught.value.response.headers["retry-after"] == "1"
    assert caught.value.body["error"]["message"] == "enforced_spend_limit_reached"  # type: ignore[index]


def test_a_shape_for_one_model_leaves_the_others_alone(sb: SandboxServer) -> None:
    """`model` and `times: null`: a storm on one model, every request, none on another."""
    shape(sb, kind="status", status=529, model="first", times=None)
    for _ in range(3):
        with pytest.raises(anthropic.APIStatusError):
            stream_text(sb, model="first")
    assert len(stream_text(sb, model="second")) > 20


def test_error_event_after_n_tokens_raises_in_the_stream(sb: SandboxServer) -> None:
    """An `error` event after 3 text pieces: the SDK has them, then raises the status error."""
    shape(sb, kind="error_event", after_tokens=3)
    seen: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        collect(sdk(sb), seen)
    assert len(seen) == 3
    assert "overloaded_error" in str(caught.value)


def test_stall_after_n_tokens_sends_nothing_for_its_seconds(sb: SandboxServer) -> None:
    """A stall: N pieces, then silence, which a read timeout on the SDK turns into an error."""
    shape(sb, kind="stall", after_tokens=2, seconds=5)
    seen: list[str] = []
    client = sdk(sb).with_options(timeout=httpx2.Timeout(10, read=0.5))
    with pytest.raises(httpx2.ReadTimeout):
        collect(client, seen)
    assert len(seen) == 2


def test_cut_connection_after_n_tokens_ends_the_body_unfinished(sb: SandboxServer) -> None:
    """A cut: N pieces, then the connection drops without the chunked body's end (the SDK's
    HTTP library, an httpx fork, raises it as is)."""
    shape(sb, kind="cut", after_tokens=4)
    seen: list[str] = []
    with pytest.raises(httpx2.RemoteProtocolError):
        collect(sdk(sb), seen)
    assert len(seen) == 4


def test_malformed_chunk_is_not_json(sb: SandboxServer) -> None:
    """A malformed chunk after N pieces: the SDK fails to decode it."""
    shape(sb, kind="malformed", after_tokens=1)
    with pytest.raises(json.JSONDecodeError):
        stream_text(sb)


def test_unknown_event_is_skipped_by_the_sdk(sb: SandboxServer) -> None:
    """An event type the SDK does not know, mid-stream: the whole text still arrives."""
    whole = "".join(stream_text(sb))
    shape(sb, kind="unknown_event", after_tokens=2)
    raw = httpx.post(
        f"{sb.base('anthropic')}/v1/messages",
        headers={"x-api-key": SANDBOX_API_KEYS["anthropic"], "anthropic-version": "2023-06-01"},
        json={"model": "m", "max_tokens": 300, "messages": ASK, "stream": True},
    ).text
    assert "event: thinking_aloud" in raw
    shape(sb, kind="unknown_event", after_tokens=2)
    assert "".join(stream_text(sb)) == whole


def test_slow_first_token_delays_message_start(sb: SandboxServer) -> None:
    """Headers at once, then `seconds` of nothing before message_start."""
    shape(sb, kind="slow_first_token", seconds=0.6)
    started = time.perf_counter()
    with sdk(sb).messages.stream(model="m", max_tokens=300, messages=ASK) as stream:
        first = next(iter(stream.text_stream))
    assert first
    assert time.perf_counter() - started >= 0.6


def test_prefill_is_continued_not_repeated(sb: SandboxServer) -> None:
    """A last assistant message is the start of the reply: the stream sends only the rest."""
    whole = "".join(stream_text(sb))
    prefill = whole[: len(whole) // 2].rstrip()
    with sdk(sb).messages.stream(
        model="m",
        max_tokens=300,
        messages=[*ASK, {"role": "assistant", "content": prefill}],  # type: ignore[list-item]
    ) as stream:
        rest = "".join(stream.text_stream)
    assert prefill + rest == whole


def test_control_refuses_an_unknown_shape(sb: SandboxServer) -> None:
    """A shape the simulator does not know is a 4xx naming the field, not a silent no-op."""
    response = httpx.put(
        f"{sb.url}/sandbox/_control/anthropic", json={"stream_faults": [{"kind": "gremlins"}]}
    )
    assert response.status_code in (400, 422)
    assert "kind" in response.text
