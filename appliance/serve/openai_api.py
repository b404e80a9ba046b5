"""The OpenAI-compatible routes, in the shapes the `openai` Python package (and Open WebUI) parse.

    GET  /v1/models             the one model this appliance serves
    POST /v1/chat/completions   streaming (SSE chunks, `data: [DONE]` last; a usage-only chunk with `choices: []`
                                only when `stream_options.include_usage` asks) or not; errors as OpenAI error objects

The answer is grounded in the library like any other (the same Conversation.ask); a request with `"grounded": false`
(the openai package: `extra_body={"grounded": False}`) asks the model alone. The quotes and sources it used are in
an `appliance` field, which OpenAI clients ignore. The last message is the question; earlier user and assistant
messages are the conversation's earlier turns (a client's own system message is not used: the owner's prompt is).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, AsyncIterator

from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from appliance.errors import UsageError
from appliance.serve.asking import Question

if TYPE_CHECKING:
    from appliance.serve.web import Served

MAX_MESSAGES = 64


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: text only
        return "".join(str(part.get("text", "")) for part in content
                       if isinstance(part, dict) and part.get("type") == "text")
    raise UsageError("a message's content must be text")


def parse(body: dict[str, Any], device: str) -> tuple[Question, bool, bool]:
    """(the question, stream?, include usage?) from a chat completion request; UsageError names what is wrong."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise UsageError("'messages' must be a non-empty list")
    if len(messages) > MAX_MESSAGES:
        raise UsageError(f"at most {MAX_MESSAGES} messages")
    if not all(isinstance(m, dict) for m in messages):
        raise UsageError("each message must be an object with 'role' and 'content'")
    if messages[-1].get("role") != "user":
        raise UsageError("the last message must be the user's question")
    earlier = [{"role": m["role"], "content": _text(m.get("content"))} for m in messages[:-1]
               if m.get("role") in ("user", "assistant")]
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise UsageError("max_tokens must be a positive whole number")
    stream = body.get("stream", False)
    options = body.get("stream_options") or {}
    grounded = body.get("grounded", True)
    if not isinstance(stream, bool) or not isinstance(options, dict) or not isinstance(grounded, bool):
        raise UsageError("'stream' and 'grounded' are true or false; 'stream_options' is an object")
    question = Question(_text(messages[-1].get("content")), device, None, earlier, limit, grounded)
    return question, stream, bool(options.get("include_usage")) and stream


def _usage(result: dict[str, Any]) -> dict[str, int]:
    timings = result.get("timings") or {}
    prompt, completion = int(timings.get("prompt_tokens") or 0), int(timings.get("tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _finish(result: dict[str, Any]) -> str:
    return "length" if result.get("finish_reason") == "length" else "stop"


def _grounding(result: dict[str, Any]) -> dict[str, Any]:
    """What the answer stood on, for the clients that read it (OpenAI's ignore it)."""
    return {key: result.get(key) for key in ("quotes", "sources", "claims", "notice", "stopped", "emergency",
                                             "conversation_id")}


def models(served: "Served"):
    async def route(request: Request, device: str) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": served.model_name, "object": "model", "created": int(served.started), "owned_by": "appliance"}]})
    return route


def chat_completions(served: "Served"):
    from appliance.serve.web import error, events_of, json_body, queued, until_final

    async def route(request: Request, device: str) -> Response:
        try:
            body = await json_body(request)
            question, stream, include_usage = parse(body, device)
            model = body.get("model")
            if model not in (served.model_name, None, ""):
                return error(404, f"the model {str(model)[:80]!r} does not exist here; this appliance serves "
                                  f"{served.model_name!r} (GET /v1/models)", code="model_not_found")
        except UsageError as exc:
            return error(400, str(exc))
        ticket = await queued(served, question)
        if isinstance(ticket, Response):
            return ticket
        ident, created = f"chatcmpl-{ticket.id}", int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict:
            return {"id": ident, "object": "chat.completion.chunk", "created": created, "model": served.model_name,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}

        if not stream:
            final = await until_final(request, served, ticket)
            kind, data = final.get("done") or final.get("refused") or final.get("error") or ("cancelled", {})
            if kind == "error":
                return error(int(data.get("status", 500)), data["message"], "server_error")
            if kind == "refused":
                message, finish, extra = {"role": "assistant", "content": data["message"]}, "content_filter", {}
                usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
            elif kind == "done":
                message, finish = {"role": "assistant", "content": data.get("answer") or ""}, _finish(data)
                extra, usage = {"appliance": _grounding(data)}, _usage(data)
            else:
                return error(499, "cancelled", "cancelled")
            return JSONResponse({"id": ident, "object": "chat.completion", "created": created,
                                 "model": served.model_name, "choices": [{"index": 0, "message": message,
                                                                          "finish_reason": finish}],
                                 "usage": usage, **extra})

        async def events() -> AsyncIterator[dict]:
            def data(payload: dict) -> dict:
                return {"data": json.dumps(payload, ensure_ascii=False, default=str)}

            started = False
            async for kind, payload in events_of(served, ticket):
                if kind in ("start", "token", "refused", "done") and not started:
                    started = True
                    yield data(chunk({"role": "assistant", "content": ""}))
                if kind == "token":
                    yield data(chunk({"content": payload}))
                elif kind == "refused":
                    yield data(chunk({"content": payload["message"]}))
                    yield data(chunk({}, "content_filter"))
                elif kind == "done":
                    yield data(chunk({}, _finish(payload), appliance=_grounding(payload)))
                    if include_usage:
                        yield data({"id": ident, "object": "chat.completion.chunk", "created": created,
                                    "model": served.model_name, "choices": [], "usage": _usage(payload)})
                elif kind == "error":
                    yield data({"error": {"message": payload["message"], "type": "server_error", "param": None,
                                          "code": None}})
            yield {"data": "[DONE]"}

        return EventSourceResponse(events(), ping=10, sep="\n", headers={"Cache-Control": "no-store"})

    return route
