"""The official `anthropic` SDK cannot tell the sandbox from the Messages API."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from roleferry.providers.sandbox_credentials import SANDBOX_API_KEYS
from tests.support.sandbox_server import SandboxServer

PROMPT = "Write a 3-sentence email to Dana Kowalski at Acme for the Staff Engineer role."


def client(sb: SandboxServer, key: str = SANDBOX_API_KEYS["anthropic"]) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=key, base_url=sb.base("anthropic"), max_retries=0)


def test_create_returns_a_deterministic_email(sb: SandboxServer) -> None:
    sdk = client(sb)
    first = sdk.messages.create(
        model="claude-sandbox-1", max_tokens=500, messages=[{"role": "user", "content": PROMPT}]
    )
    again = sdk.messages.create(
        model="claude-sandbox-1", max_tokens=500, messages=[{"role": "user", "content": PROMPT}]
    )
    text = first.content[0].text  # type: ignore[union-attr]
    assert text.startswith("Hi Dana,")
    assert "Acme" in text
    assert "Staff Engineer" in text
    assert text == again.content[0].text  # type: ignore[union-attr]
    assert first.stop_reason == "end_turn"
    assert first.usage.output_tokens > 20
    assert first.model == "claude-sandbox-1"


def test_stream_yields_the_same_text_in_small_pieces(sb: SandboxServer) -> None:
    sdk = client(sb)
    whole = (
        sdk.messages.create(
            model="m", max_tokens=500, messages=[{"role": "user", "content": PROMPT}]
        )
        .content[0]
        .text
    )  # type: ignore[union-attr]
    with sdk.messages.stream(
        model="m", max_tokens=500, messages=[{"role": "user", "content": PROMPT}]
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == whole
    assert len(pieces) > 20
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == len(pieces)


def test_stream_event_sequence_is_anthropics(sb: SandboxServer) -> None:
    body = {
        "model": "m",
        "max_tokens": 50,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    headers = {"x-api-key": SANDBOX_API_KEYS["anthropic"], "anthropic-version": "2023-06-01"}
    with httpx.stream(
        "POST", f"{sb.base('anthropic')}/v1/messages", json=body, headers=headers
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line[7:] for line in r.iter_lines() if line.startswith("event: ")]
    assert events[:3] == ["message_start", "content_block_start", "ping"]
    assert set(events[3:-3]) == {"content_block_delta"}
    assert events[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_max_tokens_and_stop_sequences_cut_the_text(sb: SandboxServer) -> None:
    sdk = client(sb)
    short = sdk.messages.create(
        model="m", max_tokens=5, messages=[{"role": "user", "content": PROMPT}]
    )
    assert short.stop_reason == "max_tokens"
    assert short.usage.output_tokens == 5
    stopped = sdk.messages.create(
        model="m",
        max_tokens=500,
        stop_sequences=["\n\n"],
        messages=[{"role": "user", "content": PROMPT}],
    )
    assert stopped.stop_reason == "stop_sequence"
    assert stopped.content[0].text == "Hi Dana,"  # type: ignore[union-attr]


def test_wrong_key_is_an_authentication_error(sb: SandboxServer) -> None:
    with pytest.raises(anthropic.AuthenticationError) as raised:
        client(sb, "sk-ant-wrong").messages.create(
            model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert raised.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]


def test_invalid_requests_are_400_invalid_request_error(sb: SandboxServer) -> None:
    url = f"{sb.base('anthropic')}/v1/messages"
    key = {"x-api-key": SANDBOX_API_KEYS["anthropic"]}
    no_version = httpx.post(
        url,
        headers=key,
        json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
    )
    assert no_version.status_code == 400
    assert "anthropic-version" in no_version.json()["error"]["message"]
    headers = {**key, "anthropic-version": "2023-06-01"}
    for body in (
        {"model": "m", "messages": [{"role": "user", "content": "x"}]},
        {"model": "m", "max_tokens": 5, "messages": []},
        {"model": "m", "max_tokens": 5, "messages": [{"role": "robot", "content": "x"}]},
    ):
        response = httpx.post(url, headers=headers, json=body)
        assert response.status_code == 400
        assert response.json()["type"] == "error"
        assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("status", "error", "kind"),
    [
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (529, anthropic.InternalServerError, "overloaded_error"),
    ],
)
def test_injected_errors_use_anthropics_bodies(
    sb: SandboxServer, status: int, error: type[Exception], kind: str
) -> None:
    sb.control("anthropic", error_rate=1.0, error_status=status)
    with pytest.raises(error) as raised:
        client(sb).messages.create(
            model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert raised.value.status_code == status  # type: ignore[attr-defined]
    assert raised.value.body["error"]["type"] == kind  # type: ignore[attr-defined]
    if status == 429:
        assert raised.value.response.headers["retry-after"] == "1"  # type: ignore[attr-defined]


def test_rate_limit_gives_429_with_retry_after(sb: SandboxServer) -> None:
    sb.control("anthropic", rate_limit={"limit": 2, "period_s": 60})
    sdk = client(sb)
    for _ in range(2):
        sdk.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(anthropic.RateLimitError) as raised:
        sdk.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert int(raised.value.response.headers["retry-after"]) >= 1
    assert raised.value.response.headers["anthropic-ratelimit-requests-remaining"] == "0"


def test_mid_stream_error_event_is_raised_by_the_sdk(sb: SandboxServer) -> None:
    sb.control("anthropic", mid_stream_error=1.0)
    received: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as raised,
        client(sb).messages.stream(
            model="m", max_tokens=500, messages=[{"role": "user", "content": PROMPT}]
        ) as stream,
    ):
        received.extend(stream.text_stream)
    assert len(received) == 3
    assert "overloaded_error" in str(raised.value.body)  # type: ignore[attr-defined]
