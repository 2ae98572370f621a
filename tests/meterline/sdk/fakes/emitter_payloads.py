"""Provider responses in their real wire shapes (from the providers' API references)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from .emitter_fake_server import Reply, sse

# Recent, whole seconds: event times must be inside the processor's dedupe horizon.
CREATED = int(time.time()) - 120


def iso(seconds: float) -> str:
    """What meterline writes for a provider time: RFC 3339, UTC, milliseconds."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- OpenAI ---------------------------------------------------------------------------------


def openai_chat(id: str = "chatcmpl-A1", model: str = "gpt-4o-2024-08-06") -> dict[str, Any]:
    return {
        "id": id,
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello there!", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 1200,
            "completion_tokens": 300,
            "total_tokens": 1500,
            "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 128,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_abc",
    }


def openai_chunk(
    id: str,
    model: str,
    content: str | None,
    *,
    finish: str | None = None,
    usage: dict[str, Any] | None = None,
    choices: bool = True,
) -> bytes:
    chunk: dict[str, Any] = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "system_fingerprint": "fp_abc",
        "choices": [
            {
                "index": 0,
                "delta": {"content": content} if content is not None else {},
                "logprobs": None,
                "finish_reason": finish,
            }
        ]
        if choices
        else [],
    }
    if usage is not None or not choices:
        chunk["usage"] = usage
    return sse(chunk)


def openai_chat_stream(
    id: str, model: str = "gpt-4o-mini-2024-07-18", *, usage: bool = True, cut: bool = False
) -> Reply:
    chunks = [
        sse(
            {
                "id": id,
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "finish_reason": None,
                    }
                ],
            }
        ),
        openai_chunk(id, model, "Hello"),
        openai_chunk(id, model, " world, how are you?"),
    ]
    if not cut:
        chunks.append(openai_chunk(id, model, None, finish="stop"))
        if usage:
            chunks.append(
                openai_chunk(
                    id,
                    model,
                    None,
                    choices=False,
                    usage={
                        "prompt_tokens": 50,
                        "completion_tokens": 7,
                        "total_tokens": 57,
                        "prompt_tokens_details": {"cached_tokens": 0},
                        "completion_tokens_details": {"reasoning_tokens": 0},
                    },
                )
            )
        chunks.append(sse("[DONE]"))
    return Reply(stream=True, chunks=chunks)


def openai_response(id: str = "resp_A1", model: str = "o4-mini-2025-04-16") -> dict[str, Any]:
    return {
        "id": id,
        "object": "response",
        "created_at": CREATED + 0.5,
        "status": "completed",
        "model": model,
        "output": [
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {
                "type": "message",
                "id": "msg_1",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Paris.", "annotations": []}],
            },
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": 2000,
            "input_tokens_details": {"cached_tokens": 1536, "cache_write_tokens": 0},
            "output_tokens": 900,
            "output_tokens_details": {"reasoning_tokens": 832},
            "total_tokens": 2900,
        },
        "service_tier": "flex",
    }


def openai_responses_stream(
    id: str, model: str = "gpt-4.1-2025-04-14", *, cut: bool = False
) -> Reply:
    start = openai_response(id, model)
    start.update(status="in_progress", output=[], usage=None)
    chunks = [
        sse(
            {"type": "response.created", "sequence_number": 0, "response": start},
            "response.created",
        ),
        sse(
            {
                "type": "response.output_text.delta",
                "sequence_number": 1,
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "delta": "The capital",
                "logprobs": [],
            },
            "response.output_text.delta",
        ),
        sse(
            {
                "type": "response.output_text.delta",
                "sequence_number": 2,
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "delta": " is Paris.",
                "logprobs": [],
            },
            "response.output_text.delta",
        ),
    ]
    if not cut:
        done = openai_response(id, model)
        done["usage"] = {
            "input_tokens": 40,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 5,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 45,
        }
        chunks.append(
            sse(
                {"type": "response.completed", "sequence_number": 3, "response": done},
                "response.completed",
            )
        )
    return Reply(stream=True, chunks=chunks)


def openai_error(status: int, message: str) -> Reply:
    return Reply(
        status,
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        },
    )


# --- Anthropic ------------------------------------------------------------------------------


def anthropic_message(
    id: str = "msg_01A", model: str = "claude-sonnet-4-5-20250929"
) -> dict[str, Any]:
    return {
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": "Bonjour!"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 50,
            "cache_creation_input_tokens": 3000,
            "cache_read_input_tokens": 10000,
            "cache_creation": {
                "ephemeral_5m_input_tokens": 1000,
                "ephemeral_1h_input_tokens": 2000,
            },
            "output_tokens": 420,
            "service_tier": "standard",
        },
    }


def anthropic_stream(
    id: str, model: str = "claude-haiku-4-5-20251001", *, cut: bool = False
) -> Reply:
    start = {
        "type": "message_start",
        "message": {
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": 25,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 2048,
                "output_tokens": 1,
            },
        },
    }
    chunks = [
        sse(start, "message_start"),
        sse(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            "content_block_start",
        ),
        sse({"type": "ping"}, "ping"),
        sse(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Hello"},
            },
            "content_block_delta",
        ),
        sse(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": " from Claude, streaming."},
            },
            "content_block_delta",
        ),
    ]
    if not cut:
        chunks += [
            sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
            # Cumulative: the first delta says 10, the last 15 (never 25).
            sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": None, "stop_sequence": None},
                    "usage": {"output_tokens": 10},
                },
                "message_delta",
            ),
            sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {
                        "input_tokens": 25,
                        "cache_read_input_tokens": 2048,
                        "cache_creation_input_tokens": 0,
                        "output_tokens": 15,
                    },
                },
                "message_delta",
            ),
            sse({"type": "message_stop"}, "message_stop"),
        ]
    return Reply(stream=True, chunks=chunks)


def anthropic_error(status: int, kind: str, message: str) -> Reply:
    return Reply(status, {"type": "error", "error": {"type": kind, "message": message}})


# --- Gemini ---------------------------------------------------------------------------------


def gemini_response(id: str = "gem-resp-1", model: str = "gemini-2.5-flash") -> dict[str, Any]:
    return {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": "Hi from Gemini"}]},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 500,
            "candidatesTokenCount": 80,
            "thoughtsTokenCount": 220,
            "cachedContentTokenCount": 256,
            "totalTokenCount": 800,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 500}],
        },
        "modelVersion": model,
        "responseId": id,
        "createTime": iso(CREATED + 1.25),
    }


def gemini_stream(id: str, model: str = "gemini-2.5-pro", *, cut: bool = False) -> Reply:
    def chunk(text: str, usage: dict[str, Any] | None, finish: str | None = None) -> bytes:
        body: dict[str, Any] = {
            "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}],
            "modelVersion": model,
            "responseId": id,
        }
        if finish:
            body["candidates"][0]["finishReason"] = finish
        if usage is not None:
            body["usageMetadata"] = usage
        return f"data: {json.dumps(body)}\r\n\r\n".encode()

    if cut:
        return Reply(stream=True, chunks=[chunk("Once upon", None), chunk(" a time", None)])
    return Reply(
        stream=True,
        chunks=[
            chunk("Once upon", {"promptTokenCount": 12, "totalTokenCount": 12}),
            chunk(
                " a time",
                {
                    "promptTokenCount": 12,
                    "candidatesTokenCount": 4,
                    "thoughtsTokenCount": 30,
                    "totalTokenCount": 46,
                },
                "STOP",
            ),
        ],
    )


def gemini_error(status: int, message: str) -> Reply:
    return Reply(
        status, {"error": {"code": status, "message": message, "status": "INVALID_ARGUMENT"}}
    )
