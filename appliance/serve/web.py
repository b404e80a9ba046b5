"""The served appliance's HTTP side (Starlette): the phone page, its API, and the OpenAI-compatible routes.

It answers; it manages nothing. The routes, all of them:

    GET  /                      the page (no secrets in it)        GET /static/app.js, /static/app.css (fixed names)
    GET  /join?t=TOKEN          a one-time join link -> a device key in an HttpOnly cookie, then the page
    POST /api/login             {"key": ...} -> the same cookie (a key the owner issued, typed on the phone)
    GET  /api/me                this device, the model, the queue
    POST /api/ask               {"question", "conversation_id"?} -> SSE: queued, start, token, done | refused | error
    GET  /api/conversations     this device's own conversations; /api/conversations/{id}: one of them;
         .../{id}/answers/{k}/sources/{n}/article: the whole ZIM article behind a source, as text
    GET  /health                ready or not, the model's sha256, the library's content hash, the queue (no key)
    POST /shelter/revocations   revocations signed with the shelter's secret (replicas; only ever shuts keys out)
    GET  /v1/models, POST /v1/chat/completions   (appliance.serve.openai_api)

No route reads a path a client names, imports, downloads or deletes anything, or shows another device's questions.
Every response carries a strict Content-Security-Policy; there is no CORS (a browser on another origin cannot read
a response, and a POST must be JSON, which a cross-site form cannot send). The Guard in front of everything checks
the Host header (DNS rebinding), the headers' and the body's size and the time the body takes to arrive.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, AsyncIterator, Callable

from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from appliance.errors import ApplianceError, UsageError
from appliance.serve.asking import Asker, Limits, Question
from appliance.serve.devices import DeviceKeys, JoinTokens
from appliance.serve.queue import AnswerQueue, DeviceBusy, QueueFull, Ticket

COOKIE = "appliance_key"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
BODY_TIMEOUT_S = 10.0
HEADER_BYTES = 16 * 1024  # all of a request's header lines (h11 bounds only a head that arrives in pieces)
STATIC = {"app.js": "application/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
FINAL = ("done", "refused", "error", "cancelled")


@dataclass
class Served:
    """What the routes share: the services' asker, the line, the devices, and what the server was started with."""

    asker: Asker
    queue: AnswerQueue
    keys: DeviceKeys
    joins: JoinTokens
    limits: Limits
    allowed_hosts: set[str]
    model_name: str = ""
    model_sha256: str = ""
    library_hash: str = ""
    ready: bool = False
    library_verified: str = ""  # "" when the store passed its checks at start; else what failed
    replica: str = ""  # this server's id among a shelter's replicas (serve/replica-id, made once)
    tls: bool = False
    on_join: Callable[[str], None] = lambda device: None  # the server shows the next join link
    started: float = field(default_factory=time.time)


def error(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
          headers: dict[str, str] | None = None) -> JSONResponse:
    """The one error shape, OpenAI's (its clients parse it): {"error": {"message", "type", "param", "code"}}."""
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status,
                        headers=headers)


def library_hash(documents: list[dict]) -> str:
    """The library's content, not its paths: the sha256 of its documents' sorted content hashes."""
    return hashlib.sha256("\n".join(sorted(str(d.get("sha256") or "") for d in documents)).encode()).hexdigest()


class Guard:
    """In front of every route: Host allowlist, body size and arrival time, security headers on every response."""

    def __init__(self, app: ASGIApp, served: Served):
        self.app = app
        self.served = served

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await self.app(scope, receive, send)
            return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (name, value) for name, value in SECURITY_HEADERS if name not in names]
            await send(message)

        if sum(len(name) + len(value) + 4 for name, value in scope["headers"]) > HEADER_BYTES:
            await error(431, f"the request's headers are over {HEADER_BYTES} bytes")(scope, receive, secured)
            return
        headers = {name.lower(): value for name, value in scope["headers"]}
        host = headers.get(b"host", b"").decode("latin-1").strip().lower()
        if _host_name(host) not in self.served.allowed_hosts:
            await error(400, "unknown Host header: this appliance answers only at its own address")(
                scope, receive, secured)
            return
        length = headers.get(b"content-length")
        limit = self.served.limits.body_bytes
        if length is not None and (not length.isdigit() or int(length) > limit):
            await error(413, f"the request body is over {limit} bytes")(scope, receive, secured)
            return
        if scope["method"] in ("POST", "PUT", "PATCH"):
            try:
                body = await asyncio.wait_for(_read_body(receive, limit), BODY_TIMEOUT_S)
            except _TooLarge:
                await error(413, f"the request body is over {limit} bytes")(scope, receive, secured)
                return
            except asyncio.TimeoutError:
                await error(408, f"the request body did not arrive within {BODY_TIMEOUT_S:.0f} s")(
                    scope, receive, secured)
                return
            if body is None:  # the client went away
                return
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, secured)
            return
        await self.app(scope, receive, secured)


class _TooLarge(Exception):
    pass


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


def _host_name(host: str) -> str:
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def resent_turns(value: Any, limit: int) -> list[dict] | None:
    """The earlier turns a page resends (so a conversation goes on at another replica): at most 6 messages, user or
    assistant, each at most `limit` bytes."""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > 6:
        raise UsageError("'earlier' is a list of at most 6 messages")
    turns = []
    for item in value:
        if not isinstance(item, dict) or item.get("role") not in ("user", "assistant") \
                or not isinstance(item.get("content"), str) or len(item["content"].encode()) > limit:
            raise UsageError(f"each earlier message has a role (user or assistant) and at most {limit} bytes")
        turns.append({"role": item["role"], "content": item["content"]})
    return turns or None


def device_of(request: Request, served: Served) -> str | None:
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return served.keys.who(header[7:].strip())
    return served.keys.who(request.cookies.get(COOKIE))


async def json_body(request: Request) -> dict[str, Any]:
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise UsageError("send the request as JSON (Content-Type: application/json)")
    try:
        data = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise UsageError("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise UsageError("the request body must be a JSON object")
    return data


async def queued(served: Served, question: Question) -> Ticket | Response:
    """The question checked and in line; or the refusal a client can act on (400 for the question itself, 503 +
    Retry-After when the line is full, 429 when this device already waits)."""
    try:
        question = await asyncio.to_thread(served.asker.check, question)
    except UsageError as exc:
        return error(400, str(exc))
    ticket = Ticket(question.device, served.asker.job(question))
    try:
        served.queue.submit(ticket)
    except QueueFull as exc:
        return error(503, str(exc), "server_busy", "queue_full", {"Retry-After": str(exc.retry_after)})
    except DeviceBusy as exc:
        return error(429, str(exc), "rate_limit_exceeded", "device_busy",
                     {"Retry-After": str(served.queue.eta(1))})
    return ticket


async def events_of(served: Served, ticket: Ticket) -> AsyncIterator[tuple[str, Any]]:
    """The ticket's events until its end; leaving early (the client went away) takes it out of line or stops it."""
    assert ticket.events is not None
    try:
        while True:
            kind, data = await ticket.events.get()
            if kind == "end":
                return
            yield kind, data
    finally:
        if ticket.state != "done":
            served.queue.cancel(ticket)


async def until_final(request: Request, served: Served, ticket: Ticket) -> dict[str, tuple[str, Any]]:
    """For a client that did not ask to stream: wait for the answer, watching for the client to leave (checked
    every 50 ms, so a client that goes away frees the engine at once)."""
    assert ticket.events is not None
    final: dict[str, tuple[str, Any]] = {}
    try:
        while True:
            try:
                kind, data = await asyncio.wait_for(ticket.events.get(), 0.05)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    return {}  # the finally below takes it out of line, or stops it
                continue
            if kind == "end":
                return final
            if kind in FINAL or kind == "start":
                final[kind] = (kind, data)
    finally:
        if ticket.state != "done":
            served.queue.cancel(ticket)


def create_app(served: Served) -> ASGIApp:
    from appliance.serve import openai_api

    async def page(request: Request) -> Response:
        text = resources.files("appliance.serve").joinpath("static/index.html").read_bytes()
        return Response(text, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-store"})

    def static(name: str):
        async def asset(request: Request) -> Response:
            data = resources.files("appliance.serve").joinpath(f"static/{name}").read_bytes()
            return Response(data, media_type=STATIC[name], headers={"Cache-Control": "no-cache"})
        return asset

    def with_cookie(response: Response, key: str) -> Response:
        response.set_cookie(COOKIE, key, max_age=400 * 24 * 3600, httponly=True, samesite="strict",
                            secure=served.tls, path="/")
        return response

    async def join(request: Request) -> Response:
        if not served.joins.redeem(request.query_params.get("t")):
            return Response("This join link was used already or has expired. Ask the appliance's owner for a new "
                            "one (a new QR code is shown on the laptop).", 403, media_type="text/plain")
        name = served.keys.unused_name("device")
        key = await asyncio.to_thread(served.keys.add, name, "join")
        served.on_join(name)
        return with_cookie(RedirectResponse("/", 303), key)

    async def login(request: Request) -> Response:
        try:
            body = await json_body(request)
        except UsageError as exc:
            return error(400, str(exc))
        key = str(body.get("key") or "").strip()
        name = served.keys.who(key)
        if name is None:
            return error(401, "that key is not one this appliance issued, or it was revoked", code="invalid_api_key")
        return with_cookie(JSONResponse({"device": name}), key)

    def authorized(handler):
        async def checked(request: Request) -> Response:
            device = device_of(request, served)
            if device is None:
                return error(401, "this device has no key: scan the owner's QR code, or enter a key the owner gave "
                                  "you (`appliance serve keys add NAME`)", code="invalid_api_key",
                             headers={"WWW-Authenticate": "Bearer"})
            return await handler(request, device)
        return checked

    async def me(request: Request, device: str) -> Response:
        return JSONResponse({"device": device, "model": served.model_name, "ready": served.ready,
                             "queue": served.queue.length()}, headers={"Cache-Control": "no-store"})

    async def ask(request: Request, device: str) -> Response:
        try:
            body = await json_body(request)
            conversation = body.get("conversation_id")
            if conversation is not None and (not isinstance(conversation, int) or isinstance(conversation, bool)):
                raise UsageError("conversation_id must be a number")
            earlier = resent_turns(body.get("earlier"), served.limits.question_bytes)
            if conversation is not None and body.get("replica") not in (None, served.replica):
                conversation = None  # another replica's conversation: go on from the turns the page resent
            question = Question(str(body.get("question") or ""), device, conversation, earlier)
        except UsageError as exc:
            return error(400, str(exc))
        ticket = await queued(served, question)
        if isinstance(ticket, Response):
            return ticket

        async def stream() -> AsyncIterator[dict]:
            async for kind, data in events_of(served, ticket):
                if kind == "done":
                    data = data | {"replica": served.replica}
                yield {"event": kind, "data": json.dumps(data, ensure_ascii=False, default=str)}

        return EventSourceResponse(stream(), ping=10, sep="\n", headers={"Cache-Control": "no-store"})

    async def conversations(request: Request, device: str) -> Response:
        rows = await asyncio.to_thread(served.asker.services.history.conversations, 50, device)
        return JSONResponse([{key: row[key] for key in ("id", "title", "updated", "messages")} for row in rows],
                            headers={"Cache-Control": "no-store"})

    async def conversation(request: Request, device: str) -> Response:
        try:
            number = int(request.path_params["number"])
        except ValueError:
            return error(404, "no such conversation")
        history = served.asker.services.history
        found = await asyncio.to_thread(history.conversation, number, device)
        if found is None:  # another device's, or none: the same answer
            return error(404, "no such conversation")
        messages = await asyncio.to_thread(history.messages, number)
        return JSONResponse({"id": number, "title": found["title"], "messages": messages},
                            headers={"Cache-Control": "no-store"})

    async def article(request: Request, device: str) -> Response:
        """The whole ZIM article behind source n of this device's k-th answer in a conversation, as text: the
        archive and article come from the stored answer, never from the request."""
        try:
            number, answer, source = (int(request.path_params[k]) for k in ("number", "answer", "source"))
        except ValueError:
            return error(404, "no such source")
        history = served.asker.services.history
        if await asyncio.to_thread(history.conversation, number, device) is None:
            return error(404, "no such source")
        answers = [m for m in await asyncio.to_thread(history.messages, number) if m["role"] == "assistant"]
        if not 1 <= answer <= len(answers):
            return error(404, "no such source")
        found = [s for s in answers[answer - 1]["sources"] if s.get("number") == source and s.get("article")]
        if not found:
            return error(404, "that source is not an article of an archive")
        text = await asyncio.to_thread(served.asker.services.kb.article, found[0]["path"], found[0]["article"])
        if text is None:
            return error(404, "the archive no longer holds that article")
        return JSONResponse({"title": text[0], "sections": text[1]}, headers={"Cache-Control": "no-store"})

    async def revocations(request: Request) -> Response:
        """Revocations the shelter's owner pushes (`serve keys revoke NAME --replica ...`), signed with the
        shelter's secret; without it nothing is accepted. This only ever shuts keys out."""
        try:
            body = await json_body(request)
            known = await asyncio.to_thread(served.keys.shelter.accept_revocations, body)
        except UsageError as exc:
            return error(400, str(exc))
        except PermissionError as exc:
            return error(403, str(exc), code="not_signed")
        return JSONResponse({"revocations": known})

    async def health(request: Request) -> Response:
        shelter = served.keys.shelter.info()
        return JSONResponse({"ready": served.ready, "replica": served.replica,
                             "shelter": shelter["id"] if shelter else None,
                             "model": {"name": served.model_name, "sha256": served.model_sha256},
                             "library": {"content_sha256": served.library_hash,
                                         "verified": not served.library_verified,
                                         "problem": served.library_verified or None},
                             "queue": served.queue.length(), "answered": served.queue.answered,
                             "uptime_s": round(time.time() - served.started)},
                            200 if served.ready else 503, headers={"Cache-Control": "no-store"})

    async def not_found(request: Request, exc: Exception) -> Response:
        return error(404, "no such page")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return error(405, "method not allowed")

    async def failed(request: Request, exc: Exception) -> Response:
        message = str(exc) if isinstance(exc, ApplianceError) else "the appliance failed on this request"
        return error(500, message, "server_error")

    routes = [
        Route("/", page),
        Route("/static/app.js", static("app.js")),
        Route("/static/app.css", static("app.css")),
        Route("/favicon.ico", lambda request: Response(status_code=204)),  # browsers ask; nothing to show
        Route("/join", join),
        Route("/api/login", login, methods=["POST"]),
        Route("/api/me", authorized(me)),
        Route("/api/ask", authorized(ask), methods=["POST"]),
        Route("/api/conversations", authorized(conversations)),
        Route("/api/conversations/{number}", authorized(conversation)),
        Route("/api/conversations/{number}/answers/{answer}/sources/{source}/article", authorized(article)),
        Route("/health", health),
        Route("/shelter/revocations", revocations, methods=["POST"]),
        Route("/v1/models", authorized(openai_api.models(served))),
        Route("/v1/chat/completions", authorized(openai_api.chat_completions(served)), methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed, 500: failed})
    return Guard(app, served)
