"""FastAPI / Starlette integration for Vallum: a route dependency and a pure ASGI middleware.

Install with the ``fastapi`` extra (``pip install 'vallum[fastapi]'``); this module needs only
Starlette at import time (FastAPI ships it), and ``import vallum`` never imports it.

Route-level dependency::

    import vallum
    from fastapi import Depends, FastAPI, Request
    from vallum.fastapi import VallumGuard, install_problem_handler

    fw = vallum.Firewall()
    guard = VallumGuard(fw, fields=("prompt", "messages[*].content"))
    app = FastAPI()
    install_problem_handler(app)      # render blocks as top-level RFC 9457 problem documents

    @app.post("/chat")
    async def chat(body: dict, request: Request, verdict=Depends(guard)):
        ...                           # request.state.vallum is a ScanResult

Whole-application middleware (prompt scanning, response redaction and watermarking)::

    from vallum.fastapi import VallumMiddleware, caller_from_header
    app.add_middleware(VallumMiddleware, firewall=fw, paths=["/v1"],
                       caller_id=caller_from_header("x-api-key"))

Field paths
    A tiny path syntax over the JSON body: dotted keys (``a.b``), ``[*]`` for every item of a list
    (or every value of an object), ``[N]`` for one index (negative counts from the end). When the
    selected value is a list or an object, every string inside it is scanned, so
    ``messages[*].content`` covers both ``"content": "text"`` and content-part lists. Keys that
    contain ``.``, ``[`` or ``]`` cannot be addressed.

Events
    Blocked or flagged prompts, rejected bodies, redactions, canary leaks and an unavailable
    classifier are logged on the ``logging`` logger ``"vallum"`` as ONE JSON object per line
    (the record's message), and passed as a ``dict`` to the optional ``on_event`` callback (a
    plain function or a coroutine function). Stable fields: ``event``, ``source``
    (``guard``/``middleware``), ``method``, ``path``, ``caller`` (int payload or null), and per
    event ``decision``, ``score``, ``rule_ids``, ``categories``, ``fields`` (prompt_blocked,
    prompt_flagged), ``reason`` (request_rejected), ``entities`` (entity -> count) and ``count``
    (redaction, canary_leak), ``error`` (classifier_unavailable). Prompt text, matched text and
    redacted values are never logged. Event names: ``prompt_blocked``, ``prompt_flagged``,
    ``request_rejected``, ``redaction``, ``canary_leak``, ``classifier_unavailable`` (at most once
    a minute per guard/middleware instance); a failing ``on_event`` or ``caller_id`` function logs
    ``{"event": "hook_failed", "hook": ..., "error": <exception type>}`` and the request goes on.
    INFO-level events (flagged, rejected, redaction) need ``logging.getLogger("vallum")`` at INFO.
"""

import codecs
import hashlib
import hmac
import inspect
import ipaddress
import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple

try:
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse
except ImportError as _e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "vallum.fastapi needs Starlette (installed with FastAPI): pip install 'vallum[fastapi]'"
    ) from _e

__all__ = [
    "DEFAULT_FIELDS",
    "ScanResult",
    "VallumGuard",
    "VallumHTTPException",
    "VallumMiddleware",
    "caller_from_client",
    "caller_from_header",
    "extract_fields",
    "install_problem_handler",
    "parse_field_path",
    "problem_response",
]

logger = logging.getLogger("vallum")

DEFAULT_FIELDS: Tuple[str, ...] = ("prompt", "messages[*].content", "input")

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BLOCKED = "urn:vallum:problem:prompt-blocked"
PROBLEM_INVALID_BODY = "urn:vallum:problem:invalid-body"
PROBLEM_BODY_TOO_LARGE = "urn:vallum:problem:body-too-large"

_RANK = {"allow": 0, "flag": 1, "block": 2}
_U64 = (1 << 64) - 1
_CLASSIFIER_EVENT_INTERVAL_S = 60.0
# Bodies at least this large are transformed in a worker thread instead of on the event loop.
_THREADPOOL_MIN_BYTES = 64 * 1024
# Integers with at least this many digits are scanned as text (card numbers, SSNs, phones).
_NUMERIC_PII_MIN = 10**8

CallerId = Callable[[Any], Optional[int]]
EventCallback = Callable[[dict], Any]


# --------------------------------------------------------------------------------------------
# Field paths


_ALL = object()
_PATH_RE = re.compile(r"(?:[^.\[\]]+|\[(?:\*|-?\d+)\])(?:\.[^.\[\]]+|\[(?:\*|-?\d+)\])*")
_STEP_RE = re.compile(r"\[(\*|-?\d+)\]|([^.\[\]]+)")


def parse_field_path(path: str) -> List[Any]:
    """Parses ``messages[*].content`` into steps: ``str`` key, ``int`` index or the wildcard."""
    if not isinstance(path, str) or not _PATH_RE.fullmatch(path):
        raise ValueError(f"invalid field path {path!r} (expected e.g. 'messages[*].content')")
    steps: List[Any] = []
    for m in _STEP_RE.finditer(path):
        if m.group(1) is not None:
            steps.append(_ALL if m.group(1) == "*" else int(m.group(1)))
        else:
            steps.append(m.group(2))
    return steps


def _join(label: str, step: Any) -> str:
    if isinstance(step, int):
        return f"{label}[{step}]"
    return f"{label}.{step}" if label else str(step)


def extract_fields(body: Any, paths: Iterable[Sequence[Any]]) -> List[Tuple[str, str]]:
    """Returns ``(concrete_path, text)`` for every string selected by the parsed ``paths``.

    A selected list or object contributes every string inside it. Iterative: deep JSON cannot
    exhaust the Python stack.
    """
    out: List[Tuple[str, str]] = []
    seen = set()
    for steps in paths:
        stack: List[Tuple[Any, int, str]] = [(body, 0, "")]
        while stack:
            obj, i, label = stack.pop()
            if i == len(steps):
                _leaves(obj, label, out, seen)
                continue
            step = steps[i]
            children: List[Tuple[Any, str]] = []
            if step is _ALL:
                if isinstance(obj, list):
                    children = [(v, f"{label}[{k}]") for k, v in enumerate(obj)]
                elif isinstance(obj, dict):
                    children = [(v, _join(label, k)) for k, v in obj.items()]
            elif isinstance(step, int):
                if isinstance(obj, list) and -len(obj) <= step < len(obj):
                    children = [(obj[step], f"{label}[{step % len(obj)}]")]
            elif isinstance(obj, dict) and step in obj:
                children = [(obj[step], _join(label, step))]
            for child, child_label in reversed(children):
                stack.append((child, i + 1, child_label))
    return out


def _leaves(obj: Any, label: str, out: List[Tuple[str, str]], seen: set) -> None:
    stack = [(obj, label)]
    while stack:
        o, lab = stack.pop()
        if isinstance(o, str):
            if lab not in seen:  # overlapping paths select a string once
                seen.add(lab)
                out.append((lab, o))
        elif isinstance(o, list):
            stack.extend(reversed([(v, f"{lab}[{k}]") for k, v in enumerate(o)]))
        elif isinstance(o, dict):
            stack.extend(reversed([(v, _join(lab, k)) for k, v in o.items()]))


# --------------------------------------------------------------------------------------------
# Callers


def _scope_of(obj: Any) -> dict:
    scope = getattr(obj, "scope", obj)
    return scope if isinstance(scope, dict) else {}


def _hash64(data: bytes, key: Optional[bytes]) -> int:
    """First 8 bytes (big-endian) of SHA-256, or HMAC-SHA256 with ``key``: the same caller id as
    the Node binding's ``callerFromHeader`` / ``callerFromIp`` for the same value and key."""
    digest = hmac.new(key, data, hashlib.sha256).digest() if key else hashlib.sha256(data).digest()
    return int.from_bytes(digest[:8], "big")


def caller_from_header(name: str, *, key: Optional[bytes] = None) -> CallerId:
    """Caller id = first 8 bytes of SHA-256 of the value of header ``name`` (e.g. an API-key header).

    Returns ``None`` when the header is absent. Pass ``key`` for a keyed hash, so
    that a payload read from a leaked text cannot be matched against guessed header values (HMAC-SHA256). The
    function accepts an ASGI scope or a Starlette ``Request``.
    """
    wanted = name.lower().encode("latin-1")

    def caller(obj: Any) -> Optional[int]:
        for k, v in _scope_of(obj).get("headers") or ():
            if k.lower() == wanted:
                return _hash64(v, key)
        return None

    return caller


def caller_from_client(*, key: Optional[bytes] = None) -> CallerId:
    """Caller id = first 8 bytes of SHA-256 of the client address (host only, not the port).

    Returns ``None`` when the server does not know the client. Behind a reverse proxy, run
    uvicorn with ``--proxy-headers --forwarded-allow-ips ...`` so the scope carries the real client.
    """

    def caller(obj: Any) -> Optional[int]:
        client = _scope_of(obj).get("client")
        if not client:
            return None
        host = str(client[0])
        try:
            host = ipaddress.ip_address(host).compressed  # one spelling per address
        except ValueError:
            pass
        return _hash64(host.encode("utf-8"), key)

    return caller


# --------------------------------------------------------------------------------------------
# Verdicts, problems, events


@dataclass(frozen=True)
class ScanResult:
    """What ``request.state.vallum`` holds after a guarded request was scanned."""

    verdict: Any  # the worst vallum.Verdict, or None when the body held no text to scan
    verdicts: List[Any] = field(default_factory=list)  # one per scanned text
    fields: List[str] = field(default_factory=list)  # concrete path of each scanned text

    @property
    def decision(self) -> str:
        return self.verdict.decision if self.verdict is not None else "allow"

    @property
    def rule_ids(self) -> List[str]:
        return sorted({r for v in self.verdicts for r in v.rule_ids})

    @property
    def categories(self) -> List[str]:
        return sorted({c for v in self.verdicts for c in v.categories})


def _worst(verdicts: Sequence[Any]) -> Any:
    worst = None
    for v in verdicts:
        if worst is None or (_RANK.get(v.decision, 0), v.score) > (_RANK.get(worst.decision, 0), worst.score):
            worst = v
    return worst


def _problem(status: int, type_: str, title: str, detail: str, **extra: Any) -> dict:
    doc = {"type": type_, "title": title, "status": status, "detail": detail}
    doc.update(extra)
    return doc


def _blocked_problem(status: int, result: ScanResult) -> dict:
    return _problem(
        status,
        PROBLEM_BLOCKED,
        "Prompt blocked",
        "The request was blocked by the prompt-injection firewall.",
        rule_ids=result.rule_ids,
        categories=result.categories,
    )


def _invalid_body_problem(status: int = 400) -> dict:
    return _problem(
        status, PROBLEM_INVALID_BODY, "Invalid request body", "The request body is not valid JSON.",
        rule_ids=[], categories=[],
    )


def _too_large_problem(limit: int) -> dict:
    return _problem(
        413, PROBLEM_BODY_TOO_LARGE, "Request body too large",
        f"The request body exceeds {limit} bytes.", rule_ids=[], categories=[],
    )


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def problem_response(problem: dict, headers: Optional[dict] = None) -> JSONResponse:
    """A Starlette response carrying ``problem`` as ``application/problem+json``."""
    return JSONResponse(problem, status_code=problem["status"], headers=headers, media_type=PROBLEM_CONTENT_TYPE)


class VallumHTTPException(HTTPException):
    """Raised by :class:`VallumGuard`. ``.problem`` (also ``.detail``) is the RFC 9457 document.

    FastAPI's default handler renders it as ``{"detail": problem}``; call
    :func:`install_problem_handler` to render the problem itself as ``application/problem+json``.
    """

    def __init__(self, problem: dict, result: Optional[ScanResult] = None) -> None:
        super().__init__(status_code=problem["status"], detail=problem)
        self.problem = problem
        self.result = result


async def _problem_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, VallumHTTPException)
    return problem_response(exc.problem, headers=getattr(exc, "headers", None))


def install_problem_handler(app: Any) -> None:
    """Registers the handler that turns :class:`VallumHTTPException` into a problem response."""
    app.add_exception_handler(VallumHTTPException, _problem_exception_handler)


class _Events:
    """Emits events as JSON lines on the ``vallum`` logger and to the ``on_event`` callback."""

    def __init__(self, source: str, on_event: Optional[EventCallback]) -> None:
        self.source = source
        self.on_event = on_event
        self._classifier_last: Optional[float] = None

    async def emit(self, level: int, event: str, scope: dict, caller: Optional[int], **fields: Any) -> None:
        ev = {
            "event": event,
            "source": self.source,
            "method": scope.get("method"),
            "path": scope.get("path"),
            "caller": caller,
        }
        ev.update(fields)
        if logger.isEnabledFor(level):
            logger.log(level, json.dumps(ev, ensure_ascii=False, separators=(",", ":")), extra={"vallum_event": ev})
        if self.on_event is not None:
            try:
                r = self.on_event(dict(ev))
                if inspect.isawaitable(r):
                    await r
            except Exception as e:  # a broken callback must not break the request
                _hook_failed("on_event", e)

    async def verdicts(self, scope: dict, caller: Optional[int], result: ScanResult) -> None:
        unavailable = next(
            (v.classifier for v in result.verdicts if (v.classifier or {}).get("status") == "unavailable"),
            None,
        )
        if unavailable is not None:
            now = time.monotonic()
            if self._classifier_last is None or now - self._classifier_last >= _CLASSIFIER_EVENT_INTERVAL_S:
                self._classifier_last = now
                await self.emit(
                    logging.WARNING, "classifier_unavailable", scope, caller,
                    error=str(unavailable.get("error") or "unavailable"),
                )
        d = result.decision
        if d in ("block", "flag"):
            bad = [f for f, v in zip(result.fields, result.verdicts) if v.decision == d]
            await self.emit(
                logging.WARNING if d == "block" else logging.INFO,
                "prompt_blocked" if d == "block" else "prompt_flagged",
                scope, caller,
                decision=d,
                score=round(float(result.verdict.score), 4),
                rule_ids=result.rule_ids,
                categories=result.categories,
                fields=bad,
            )

    async def findings(self, scope: dict, caller: Optional[int], entities: dict, canary: bool) -> None:
        if not entities and not canary:
            return
        counts = dict(sorted(entities.items()))
        if canary:
            await self.emit(
                logging.ERROR, "canary_leak", scope, caller,
                entities=counts, count=sum(counts.values()),
            )
        if counts:
            await self.emit(logging.INFO, "redaction", scope, caller, entities=counts, count=sum(counts.values()))


def _hook_failed(hook: str, e: Exception) -> None:
    # Still one JSON object per line; the exception type only (its message may hold anything).
    ev = {"event": "hook_failed", "hook": hook, "error": type(e).__name__}
    logger.error(json.dumps(ev, separators=(",", ":")), extra={"vallum_event": ev})


def _count(findings: Iterable[Any], into: dict) -> None:
    for f in findings:
        into[f.entity] = into.get(f.entity, 0) + 1


def _parse_json(body: bytes) -> Any:
    """``json.loads`` (the parser Starlette's ``request.json()`` uses); raises ``ValueError``."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise ValueError(str(e)) from None


async def _scan(firewall: Any, body: Any, paths: Sequence[Sequence[Any]]) -> ScanResult:
    selected = extract_fields(body, paths)
    if not selected:
        return ScanResult(None, [], [])
    labels = [p for p, _ in selected]
    texts = [t for _, t in selected]
    # Signatures alone take microseconds on a normal prompt: a worker-thread hop would cost more
    # than the scan. The classifier (milliseconds) and large bodies go to the thread pool.
    inline = not firewall.has_classifier and sum(len(t) for t in texts) < _THREADPOOL_MIN_BYTES
    verdicts = list(firewall.scan_prompts(texts) if inline else await run_in_threadpool(firewall.scan_prompts, texts))
    return ScanResult(_worst(verdicts), verdicts, labels)


# --------------------------------------------------------------------------------------------
# Route dependency


class VallumGuard:
    """Route-level FastAPI dependency that scans fields of the JSON request body.

    ``Depends(guard)`` returns the worst ``Verdict`` (``None`` if the body holds no selected
    text) and stores a :class:`ScanResult` in ``request.state.vallum``. A ``block`` decision
    raises :class:`VallumHTTPException` (``block_status``, default 403); an unparsable body
    raises one with status 400. The problem document never contains prompt text.
    """

    def __init__(
        self,
        firewall: Any,
        fields: Sequence[str] = DEFAULT_FIELDS,
        *,
        block_status: int = 403,
        on_event: Optional[EventCallback] = None,
        caller_id: Optional[CallerId] = None,
    ) -> None:
        self.firewall = firewall
        self.fields = tuple(fields)
        self._paths = [parse_field_path(f) for f in self.fields]
        self.block_status = block_status
        self.caller_id = caller_id
        self._events = _Events("guard", on_event)

    async def __call__(self, request: Request) -> Any:
        scope = request.scope
        caller = _caller(self.caller_id, request)
        raw = await request.body()
        if raw.strip():
            try:
                body = _parse_json(raw)
            except ValueError:
                await self._events.emit(logging.INFO, "request_rejected", scope, caller, reason="invalid_json")
                raise VallumHTTPException(_invalid_body_problem(400)) from None
            result = await _scan(self.firewall, body, self._paths)
        else:
            result = ScanResult(None, [], [])
        request.state.vallum = result
        await self._events.verdicts(scope, caller, result)
        if result.decision == "block":
            raise VallumHTTPException(_blocked_problem(self.block_status, result), result)
        return result.verdict


def _caller(fn: Optional[CallerId], obj: Any) -> Optional[int]:
    if fn is None:
        return None
    try:
        v = fn(obj)
    except Exception as e:
        _hook_failed("caller_id", e)
        return None
    return None if v is None else int(v) & _U64


# --------------------------------------------------------------------------------------------
# Middleware

_SCANNED_METHODS = frozenset({"POST", "PUT", "PATCH"})
_NO_BODY_STATUS = frozenset({204, 205, 304})
_DROP_ON_CHANGE = frozenset({b"content-length", b"content-md5", b"digest", b"content-digest", b"repr-digest", b"etag"})


def _header(headers: Iterable[Tuple[bytes, bytes]], name: bytes) -> Optional[bytes]:
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def _media_type(content_type: Optional[bytes]) -> Tuple[str, Optional[str]]:
    """(lower-case media type, charset or None)."""
    if not content_type:
        return "", None
    parts = content_type.decode("latin-1").split(";")
    mt = parts[0].strip().lower()
    charset = None
    for p in parts[1:]:
        k, _, v = p.partition("=")
        if k.strip().lower() == "charset":
            charset = v.strip().strip('"').lower() or None
    return mt, charset


def _is_json_type(mt: str) -> bool:
    return mt == "application/json" or (mt.startswith("application/") and mt.endswith("+json"))


class VallumMiddleware:
    """Pure ASGI middleware (streaming-safe): scans JSON prompts, redacts and watermarks replies.

    Requests (``scan_requests``): the bodies of POST/PUT/PATCH requests on guarded ``paths`` are
    buffered (up to ``max_body_bytes``, else 413) and, when they parse as JSON, the configured
    ``fields`` are scanned in a worker thread. A ``block`` is answered with ``block_status`` and
    an ``application/problem+json`` document (rule ids and categories, never the prompt); a body
    declared as JSON (or sent without a content type, which FastAPI parses as JSON) that does not
    parse gets 400. Otherwise the body is replayed to the app and ``request.state.vallum`` holds
    the :class:`ScanResult`. Any other body that happens to parse as JSON is scanned too (some
    apps call ``request.json()`` whatever the content type); multipart bodies are not scanned.

    Responses on guarded paths (``redact_responses``, ``watermark_responses``):

    * ``application/json`` and ``application/*+json``: buffered and parsed; every string value
      (and every integer of 9+ digits, which may be a card or phone number) is redacted with
      ``scan_output``; strings of at least ``watermark_min_words`` words are then watermarked with
      the caller's payload. Re-serialised compactly as UTF-8 only if something changed;
      Content-Length is fixed. A JSON body that does not parse is redacted as text.
    * ``text/event-stream``, and ``text/plain`` / ``text/markdown`` sent without Content-Length
      (chunked): one ``stream_redactor()`` and one ``stream_watermarker(payload)`` per response;
      each chunk goes redactor -> watermarker -> client, both are flushed on the last chunk and
      Content-Length is dropped. Event streams go through ``firewall.sse_stream(payload)``
      instead: ``data:`` values and the JSON delta fields of the policy's ``sse.text_fields``
      (OpenAI, Anthropic, Gemini, TGI formats by default) are redacted as one text across
      events, so a value split over many events is caught and the JSON stays valid; events keep
      their order and number, and an event with nothing to change is sent byte for byte.
    * ``text/plain`` / ``text/markdown`` with Content-Length: redacted whole, and watermarked
      whole when at least ``watermark_min_words`` words long.
    * Anything else (HTML, binary, compressed ``Content-Encoding``, 206 partial content, HEAD,
      204/304) passes through untouched. Put compression middleware *outside* this one (add it
      after this one with ``app.add_middleware``) so Vallum sees plain text.

    ``caller_id(scope)`` gives the watermark payload (u64); ``None`` (no function, or no caller
    found) embeds ``default_payload``.
    """

    def __init__(
        self,
        app: Any,
        firewall: Any,
        *,
        paths: Optional[Sequence[str]] = None,
        fields: Sequence[str] = DEFAULT_FIELDS,
        scan_requests: bool = True,
        redact_responses: bool = True,
        watermark_responses: bool = True,
        caller_id: Optional[CallerId] = None,
        on_event: Optional[EventCallback] = None,
        block_status: int = 403,
        max_body_bytes: int = 16 * 1024 * 1024,
        watermark_min_words: int = 30,
        default_payload: int = 0,
    ) -> None:
        self.app = app
        self.firewall = firewall
        self.paths = None if paths is None else tuple(p.rstrip("/") for p in paths)
        self.fields = tuple(fields)
        self._paths = [parse_field_path(f) for f in self.fields]
        self.scan_requests = scan_requests
        self.redact_responses = redact_responses
        self.watermark_responses = watermark_responses
        self.caller_id = caller_id
        self.block_status = block_status
        self.max_body_bytes = max_body_bytes
        self.watermark_min_words = watermark_min_words
        self.default_payload = int(default_payload) & _U64
        self._events = _Events("middleware", on_event)

    def _guarded(self, path: str) -> bool:
        if self.paths is None:
            return True
        for p in self.paths:
            if p == "" or path == p or path.startswith(p + "/"):
                return True
        return False

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self._guarded(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        caller = _caller(self.caller_id, scope)

        if self.scan_requests and scope.get("method") in _SCANNED_METHODS:
            outcome = await self._scan_request(scope, receive, send, caller)
            if outcome is None:
                return  # answered (block, 400, 413) or the client went away
            receive = outcome

        if (self.redact_responses or self.watermark_responses) and scope.get("method") != "HEAD":
            ext = scope.get("extensions")
            if ext and ("http.response.pathsend" in ext or "http.response.zerocopysend" in ext):
                # Files must come through http.response.body messages so they can be inspected.
                scope = dict(scope)
                scope["extensions"] = {
                    k: v for k, v in ext.items() if k not in ("http.response.pathsend", "http.response.zerocopysend")
                }
            payload = caller if caller is not None else self.default_payload
            transformer = _ResponseTransformer(self, scope, send, caller, payload)
            await self.app(scope, receive, transformer.send)
        else:
            await self.app(scope, receive, send)

    async def _scan_request(self, scope: dict, receive: Any, send: Any, caller: Optional[int]) -> Any:
        headers = scope.get("headers") or ()
        mt, _ = _media_type(_header(headers, b"content-type"))
        if mt.startswith("multipart/"):
            return receive  # uploads: not buffered, not scanned
        declared = _header(headers, b"content-length")
        if declared is not None:
            try:
                if int(declared) > self.max_body_bytes:
                    await self._events.emit(logging.INFO, "request_rejected", scope, caller, reason="too_large")
                    await _send_problem(send, _too_large_problem(self.max_body_bytes))
                    return None
            except ValueError:
                pass
        chunks: List[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return None
            if msg["type"] != "http.request":
                continue
            b = msg.get("body", b"")
            if b:
                size += len(b)
                if size > self.max_body_bytes:
                    await self._events.emit(logging.INFO, "request_rejected", scope, caller, reason="too_large")
                    await _send_problem(send, _too_large_problem(self.max_body_bytes))
                    return None
                chunks.append(b)
            if not msg.get("more_body", False):
                break
        body = b"".join(chunks)

        if body.strip():
            try:
                doc = _parse_json(body)
            except ValueError:
                if mt == "" or _is_json_type(mt):
                    await self._events.emit(logging.INFO, "request_rejected", scope, caller, reason="invalid_json")
                    await _send_problem(send, _invalid_body_problem(400))
                    return None
                doc = None  # not JSON and not declared as JSON: nothing for us to scan
            if doc is not None:
                result = await _scan(self.firewall, doc, self._paths)
                scope.setdefault("state", {})["vallum"] = result
                await self._events.verdicts(scope, caller, result)
                if result.decision == "block":
                    await _send_problem(send, _blocked_problem(self.block_status, result))
                    return None

        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay

    # -- response helpers (used by _ResponseTransformer) --

    def _redact_text(self, text: str, entities: dict, flags: List[bool]) -> str:
        r = self.firewall.scan_output(text)
        if r.findings:
            _count(r.findings, entities)
        if r.canary_leaked:
            flags[0] = True
        return r.text

    def _transform_json(self, raw: bytes, payload: int) -> Tuple[bytes, bool, dict, bool]:
        """Returns (body, changed, entity counts, canary leaked)."""
        entities: dict = {}
        canary = [False]
        try:
            doc = _parse_json(raw)
        except ValueError:
            if not self.redact_responses:
                return raw, False, entities, False
            text = raw.decode("utf-8", errors="replace")
            out = self._redact_text(text, entities, canary)
            return out.encode("utf-8"), out != text, entities, canary[0]
        changed = False
        root = [doc]
        stack: List[Tuple[Any, Any]] = [(root, 0)]
        while stack:
            container, key = stack.pop()
            v = container[key]
            if isinstance(v, str):
                new = v
                if self.redact_responses:
                    new = self._redact_text(new, entities, canary)
                if self.watermark_responses and _words_at_least(new, self.watermark_min_words):
                    new = self.firewall.watermark(new, payload)
                if new != v:
                    container[key] = new
                    changed = True
            elif isinstance(v, dict):
                stack.extend((v, k) for k in v)
            elif isinstance(v, list):
                stack.extend((v, i) for i in range(len(v)))
            elif (
                self.redact_responses and isinstance(v, int) and not isinstance(v, bool)
                and abs(v) >= _NUMERIC_PII_MIN
            ):
                s = str(v)
                new = self._redact_text(s, entities, canary)
                if new != s:
                    container[key] = new
                    changed = True
        if not changed:
            return raw, False, entities, canary[0]
        return _dumps(root[0]), True, entities, canary[0]

    def _transform_text(self, text: str, payload: int) -> Tuple[str, dict, bool]:
        entities: dict = {}
        canary = [False]
        if self.redact_responses:
            text = self._redact_text(text, entities, canary)
        if self.watermark_responses and _words_at_least(text, self.watermark_min_words):
            text = self.firewall.watermark(text, payload)
        return text, entities, canary[0]


def _words_at_least(s: str, n: int) -> bool:
    if len(s) < 2 * n - 1:
        return False
    return len(s.split(None, n)) >= n


async def _send_problem(send: Any, problem: dict) -> None:
    body = _dumps(problem)
    await send(
        {
            "type": "http.response.start",
            "status": problem["status"],
            "headers": [
                (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


class _ResponseTransformer:
    """The ``send`` wrapper of one response."""

    def __init__(self, mw: VallumMiddleware, scope: dict, send: Any, caller: Optional[int], payload: int) -> None:
        self.mw = mw
        self.scope = scope
        self._send = send
        self.caller = caller
        self.payload = payload
        self.mode: Optional[str] = None  # "pass", "json", "text", "stream", "sse"
        self.start: Optional[dict] = None
        self.buf: List[bytes] = []
        self.decoder: Any = None
        self.redactor: Any = None
        self.wm: Any = None
        self.charset = "utf-8"
        self.original_start: Optional[dict] = None

    def _codec(self) -> str:
        return "utf-8" if self.charset == "unspecified" else self.charset

    async def send(self, message: dict) -> None:
        t = message["type"]
        if t == "http.response.start":
            self._on_start(message)
            if self.mode in ("json", "text"):
                return  # headers go out with the transformed body
            await self._send(self.start)
            return
        if t == "http.response.body" and self.mode not in (None, "pass"):
            await self._on_body(message)
            return
        await self._send(message)

    def _on_start(self, message: dict) -> None:
        headers = list(message.get("headers") or ())
        status = int(message.get("status", 200))
        mt, charset = _media_type(_header(headers, b"content-type"))
        encoded = _header(headers, b"content-encoding")
        has_length = _header(headers, b"content-length") is not None
        mode = "pass"
        if status >= 200 and status not in _NO_BODY_STATUS and status != 206 and (
            encoded is None or encoded.strip().lower() == b"identity"
        ):
            if _is_json_type(mt):
                mode = "json"
            elif mt == "text/event-stream":
                mode = "sse"
            elif mt in ("text/plain", "text/markdown"):
                mode = "text" if has_length else "stream"
        self.mode = mode
        if mode == "pass":
            self.start = message
            return
        if mode != "json":
            # None = unspecified (an HTTP client may guess anything): decode as UTF-8, but label it.
            self.charset = "unspecified"
            if charset:
                try:
                    self.charset = codecs.lookup(charset).name
                except LookupError:
                    pass
        new_headers = []
        for k, v in headers:
            kl = k.lower()
            if kl in _DROP_ON_CHANGE:
                continue
            if kl == b"content-type" and mode != "json" and self.charset != "utf-8":
                # The output is UTF-8 (marks and replacements may not exist in other charsets),
                # and must say so even when the app left the charset out.
                v = f"{mt}; charset=utf-8".encode("latin-1")
            new_headers.append((k, v))
        self.original_start = message
        self.start = dict(message, headers=new_headers)
        if mode in ("stream", "sse"):
            self.decoder = codecs.getincrementaldecoder(self._codec())(errors="replace")
        if mode == "sse":
            # Redacts and watermarks: the stream path below treats it as the redactor.
            payload = self.payload if self.mw.watermark_responses else None
            self.redactor = self.mw.firewall.sse_stream(payload, redact=self.mw.redact_responses)
        elif mode == "stream":
            self.redactor = self.mw.firewall.stream_redactor() if self.mw.redact_responses else None
            if self.mw.watermark_responses:
                self.wm = self.mw.firewall.stream_watermarker(self.payload)

    async def _on_body(self, message: dict) -> None:
        body = message.get("body", b"")
        more = bool(message.get("more_body", False))
        if self.mode in ("json", "text"):
            if body:
                self.buf.append(body)
            if more:
                return
            await self._flush_whole()
            return
        # streaming
        text = self.decoder.decode(body, final=not more)
        out = text
        if self.redactor is not None:
            out = self.redactor.push(out) if out else ""
        if self.wm is not None and out:
            out = self.wm.push(out)
        if not more:
            tail = self.redactor.finish() if self.redactor is not None else ""
            if self.wm is not None:
                tail = (self.wm.push(tail) if tail else "") + self.wm.finish()
            out += tail
        if out or not more:
            await self._send({"type": "http.response.body", "body": out.encode("utf-8"), "more_body": more})
        if not more and self.redactor is not None:
            entities: dict = {}
            _count(self.redactor.findings, entities)
            await self.mw._events.findings(self.scope, self.caller, entities, bool(self.redactor.canary_leaked))

    async def _flush_whole(self) -> None:
        raw = b"".join(self.buf)
        self.buf = []
        mw = self.mw
        if self.mode == "json":
            if len(raw) >= _THREADPOOL_MIN_BYTES:
                out, changed, entities, canary = await run_in_threadpool(mw._transform_json, raw, self.payload)
            else:
                out, changed, entities, canary = mw._transform_json(raw, self.payload)
        else:
            text = raw.decode(self._codec(), errors="replace")
            if len(raw) >= _THREADPOOL_MIN_BYTES:
                new, entities, canary = await run_in_threadpool(mw._transform_text, text, self.payload)
            else:
                new, entities, canary = mw._transform_text(text, self.payload)
            out = new.encode("utf-8")
        assert self.start is not None
        if self.mode == "json" and not changed:
            # Nothing to redact or mark: the app's own bytes and headers (ETag etc.) go out.
            await self._send(self.original_start)
            await self._send({"type": "http.response.body", "body": raw, "more_body": False})
            await mw._events.findings(self.scope, self.caller, entities, canary)
            return
        start = dict(self.start)
        start["headers"] = list(start["headers"]) + [(b"content-length", str(len(out)).encode())]
        await self._send(start)
        await self._send({"type": "http.response.body", "body": out, "more_body": False})
        await mw._events.findings(self.scope, self.caller, entities, canary)
