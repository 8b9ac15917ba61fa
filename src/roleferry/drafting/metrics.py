"""Drafting metrics: the OpenTelemetry GenAI client metrics in Prometheus form, and how drafts
end. Labels hold model names, token types, sources and reasons only, never text or a user."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

TOKEN_USAGE = Histogram(
    "gen_ai_client_token_usage",
    "Tokens used per model call (OpenTelemetry gen_ai.client.token.usage), by token type.",
    ["gen_ai_token_type", "model"],
    buckets=(1, 4, 16, 64, 256, 1024, 4096, 16384, 65536),
)
OPERATION_DURATION = Histogram(
    "gen_ai_client_operation_duration_seconds",
    "One model call from request to its last event (gen_ai.client.operation.duration), by "
    "model and error type (empty when it ended well).",
    ["model", "error_type"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30),
)
TIME_TO_FIRST_CHUNK = Histogram(
    "gen_ai_client_operation_time_to_first_chunk_seconds",
    "From sending a model call to its first text (gen_ai.client.operation.time_to_first_chunk).",
    ["model"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10),
)
DRAFTS = Counter(
    "roleferry_drafts",
    "Drafts written, by source (model or template) and outcome (complete or incomplete).",
    ["source", "outcome"],
)
FALLBACKS = Counter(
    "roleferry_draft_fallbacks",
    "A model of the chain given up before its first token, by model and why.",
    ["model", "reason"],
)
STREAM_BREAKS = Counter(
    "roleferry_draft_stream_breaks",
    "Streams broken after their first token: error_event, stall, connection_lost, "
    "malformed_chunk, deadline.",
    ["model", "reason"],
)
CHECK_FAILURES = Counter(
    "roleferry_draft_check_failures",
    "Model texts refused by the output checks, by reason.",
    ["reason"],
)
