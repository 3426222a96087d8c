"""The HTTP reward server: FastAPI routes over a scoring backend, run by uvicorn.

    serve("runs/rm", ServeConfig(port=8000))               # blocks; SIGTERM finishes in-flight requests
    with BackgroundServer(model, ServeConfig(port=0)) as url:
        ...                                                # a server on a thread (tests, notebooks)

Routes: ``POST /score`` (native, every modality), ``POST /get_reward`` (OpenRLHF's remote RM),
``GET /info``, ``GET /healthz``, ``GET /metrics`` (Prometheus). Request and response bodies are
described in :mod:`mmreward.serve.protocol`. Every error is a JSON ``{"error": message, "status":
code}``; the server keeps serving whatever a request holds.

A backend is anything with ``spec`` (:class:`ModelSpec`), ``metrics``, ``queue_depth``,
``async score(items, mode)`` and ``close()``: :class:`LocalBackend` (a model + the dynamic batcher
in this process) or the Ray Serve one (:mod:`mmreward.serve.ray`).

This module imports FastAPI; ``import mmreward.serve`` does not (it loads this module on first use).
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import signal
import socket
import sys
import threading
import time
from typing import Any, Awaitable, Callable, Optional, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from mmreward.core.inputs import StepSolution, TextPair

from .batcher import DynamicBatcher, InputRejected, ModelFailure, QueueFull, WorkerDown
from .config import ServeConfig
from .metrics import ServeMetrics
from .protocol import ModelSpec, RequestError, field_names, finite, load_model, missing_indices, \
    openrlhf_response, parse_image_upload, parse_json, parse_openrlhf, parse_score_request, score_response

logger = logging.getLogger("mmreward.serve")
_JSON_INLINE_BYTES = 64 * 1024  # larger bodies are parsed on a thread, off the event loop
BODY_IDLE_TIMEOUT_S = 60.0  # longest pause between two pieces of a request body before a 408
ROUTES = ("POST /score, POST /get_reward (OpenRLHF's remote RM: --remote_rm_url http://HOST:PORT/get_reward), "
          "GET /info, GET /healthz, GET /metrics")
ERROR_LOG_INTERVAL_S = 30.0  # at most one log line per endpoint and status in this time (the rest are counted)
MAX_HEAD_BYTES = 64 * 1024  # longest request line + headers (--max-request-mb bounds the body only)
HEAD_TIMEOUT_S = 60.0  # longest wait for a new connection's request line + headers before a 408


class ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


class LocalBackend:
    """A model in this process behind a :class:`DynamicBatcher`."""

    def __init__(self, model: Any, config: ServeConfig):
        self.spec = ModelSpec.of(model)
        self.metrics = ServeMetrics(queue_depth=lambda: self.queue_depth)
        self.batcher = DynamicBatcher(model, max_batch=config.max_batch, max_wait_ms=config.max_wait_ms,
                                      max_queue=config.max_queue, bucket_batches=config.bucket_batches,
                                      max_padding=config.max_padding, metrics=self.metrics)

    @property
    def queue_depth(self) -> int:
        return self.batcher.queue_depth

    async def score(self, items: list, mode: str) -> list:
        return await self.batcher.score(items, mode)

    def health(self) -> Optional[str]:
        """None while requests can be scored, else why not (``/healthz`` answers 503 with it)."""
        return self.batcher.health()

    def close(self, timeout: Optional[float] = None) -> None:
        """Finish the queued requests and stop the worker, waiting at most ``timeout`` s for it (None or inf: as long
        as it takes); a forward still running then is left to its daemon thread, so the process can exit."""
        if timeout is not None and math.isinf(timeout):  # --shutdown-timeout-s inf: Thread.join(inf) overflows
            timeout = None
        self.batcher.close(timeout)
        if timeout is not None and self.batcher.running():
            logger.warning("mmreward serve: a model forward still ran %g s after the shutdown began "
                           "(--shutdown-timeout-s); stopping without it", timeout)


# ------------------------------------------------------------------ request helpers
async def read_body(request: Any, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes (415 when compressed)."""
    _content_encoding(request)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"request body is {declared} bytes; the limit is {limit} (--max-request-mb)", "too_large")
    chunks, size = [], 0
    stream = request.stream().__aiter__()
    while True:
        try:  # a client that stops sending mid-body (a dead host, no FIN) would hold its connection forever
            chunk = await asyncio.wait_for(stream.__anext__(), BODY_IDLE_TIMEOUT_S)
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise RequestError(408, f"request body stalled: no bytes for {BODY_IDLE_TIMEOUT_S:g} s after {size} "
                                    "bytes") from None
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body passes the limit of {limit} bytes (--max-request-mb)", "too_large")
        chunks.append(chunk)
    return b"".join(chunks)


async def _disconnected(request: Any) -> None:
    """Returns when the client goes away (the body has been read, so the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def until_disconnect(request: Any, work: Awaitable) -> Any:
    """``await work``, cancelled (→ :class:`ClientGone`) if the client disconnects first."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        gone.cancel()
    if task in done:
        return task.result()
    task.cancel()
    raise ClientGone()


def _authorized(request: Any, api_key: Optional[str]) -> bool:
    if not api_key:
        return True
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode())


def _auth_problem(request: Any) -> str:
    """What was wrong with a refused request's credentials (never the key itself), so that a client without a
    header (OpenRLHF's remote RM sends none), with another scheme or header, and with a wrong key are told apart."""
    header = request.headers.get("authorization")
    if header is None:
        other = [h for h in ("x-api-key", "api-key") if h in request.headers]
        return "the request has no Authorization header" + (f"; its {other[0]!r} header is not read" if other else "")
    if header.partition(" ")[0].lower() != "bearer":
        return "its Authorization header is not of the form 'Bearer KEY'"
    return "the key is wrong"


def _request_id(request: Any) -> Optional[str]:
    """The request's ``X-Request-ID`` (a client's, or the one a proxy such as Envoy or nginx adds), when it is a
    short printable ASCII token; anything else (a newline would forge log lines) is not repeated."""
    value = request.headers.get("x-request-id")
    return value if value and len(value) <= 200 and value.isascii() and value.isprintable() else None


def _echo_request_id(request: Any, response: Any) -> Any:
    """``response`` with the request's X-Request-ID, so that a client's error and the server's log line about it
    can be matched (the log line names it too)."""
    request_id = _request_id(request)
    if request_id is not None:
        response.headers["X-Request-ID"] = request_id
    return response


def check_model_options(spec: ModelSpec, config: ServeConfig) -> None:
    """Server options the served model cannot use are a user error, not silently dropped: ``--refine-clip`` /
    ``--refine-delta`` refine ``/get_reward``'s step scores, which only a text step model (a PRM scoring
    :class:`StepSolution`) has."""
    if config.refine is not None and not (spec.has_parts and StepSolution in spec.input_types
                                          and TextPair not in spec.input_types):
        given = " / ".join(flag for flag, on in (("--refine-clip", config.refine_clip is not None),
                                                  ("--refine-delta", config.refine_delta)) if on)
        verb = "refine" if " / " in given else "refines"
        raise ValueError(f"{given} {verb} the step scores of a PRM on /get_reward, but this {spec.model_type} "
                         f"model scores {spec.names()} and has no text step scores: leave {given} out (a step "
                         "model's /score requests take their own 'refine' field)")


def _content_encoding(request: Any) -> None:
    """A compressed body (``Content-Encoding: gzip``) is refused by name: read as JSON it was "not UTF-8"."""
    coding = request.headers.get("content-encoding", "").strip().lower()
    if coding not in ("", "identity"):
        raise RequestError(415, f"Content-Encoding {coding!r} is not supported: send the body uncompressed "
                                "(plain JSON, or an image's bytes)")


# ------------------------------------------------------------------ the app
def create_app(backend: Any, config: ServeConfig) -> Any:
    """The FastAPI app serving ``backend`` under ``config``'s limits and API key."""
    spec: ModelSpec = backend.spec
    check_model_options(spec, config)
    metrics: ServeMetrics = backend.metrics
    missing_rewards = metrics.missing_rewards
    warned: list = []  # the null-reward warning is logged once per server
    logged: dict = {}  # (endpoint, status) -> (time of its last log line, errors not logged since)

    def log_refusal(endpoint: str, status: int, message: str, model_traceback: Optional[str] = None,
                    request_id: Optional[str] = None) -> None:
        """A refused request, in the server's log: OpenRLHF's remote-RM client (aiohttp's raise_for_status) and
        requests' raise_for_status() show only "400, message='Bad Request'", so the server's log is where its user
        reads why. Rate-limited: a trainer repeating one mistake on every rollout must not flood the log.
        ``model_traceback`` (the model's own exception behind a 500, or a 422 that is not a ValueError) follows the
        line: the message alone does not say where in the model it was raised. ``request_id`` (the request's X-Request-ID) ties the line to the client's request."""
        now = time.monotonic()
        last, skipped = logged.get((endpoint, status), (None, 0))
        if last is not None and now - last < ERROR_LOG_INTERVAL_S:
            logged[(endpoint, status)] = (last, skipped + 1)
            return
        logged[(endpoint, status)] = (now, 0)
        logger.warning("%s answered %d%s: %s%s%s", endpoint, status,
                       f" (X-Request-ID {request_id})" if request_id else "", message[:500],
                       f" ({skipped} more {status}s on {endpoint} since the last such line)" if skipped else "",
                       f"\n{model_traceback}" if model_traceback else "")

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        if isinstance(backend, LocalBackend):
            # uvicorn has drained (or, after --shutdown-timeout-s, cancelled) every request: what is left is the
            # forward in progress, waited for as long again; a hung one kept SIGTERM from ever exiting
            await asyncio.to_thread(backend.close, config.shutdown_timeout_s)
        else:
            await asyncio.to_thread(backend.close)

    # redirect_slashes: Starlette answers POST /score/ with a 307 to /score, which httpx (and so TRL-side clients
    # built on it) does not follow; every route is registered with and without the slash instead (below)
    app = FastAPI(title="mmreward reward server", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None,
                  redirect_slashes=False)

    def error(status: int, message: str, headers: Optional[dict] = None) -> Any:
        return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)

    async def handle(endpoint: str, request: Request, work: Callable[[], Awaitable[Any]]) -> Any:
        t0 = time.perf_counter()
        kind, model_traceback = None, None
        try:
            if not _authorized(request, config.api_key):
                raise RequestError(401, "missing or wrong API key: send 'Authorization: Bearer KEY' "
                                        f"({_auth_problem(request)})", "auth")
            response = await work()
        except RequestError as e:
            kind, response = e.kind, error(e.status, str(e), {"WWW-Authenticate": "Bearer"} if e.status == 401 else None)
        except QueueFull as e:
            kind = "queue_full"
            response = error(503, f"server busy: {e}; retry after {config.retry_after_s} s",
                             {"Retry-After": str(config.retry_after_s)})
        except InputRejected as e:
            kind, response = "input_rejected", error(422, f"the model rejected {e}")  # "input 3: ..."
            model_traceback = e.model_traceback  # a KeyError / IndexError / TypeError: as often a bug in the model
        except ModelFailure as e:
            kind, response = "model_error", error(500, f"the model failed on this request: {e}")
            model_traceback = e.model_traceback
        except WorkerDown as e:  # no Retry-After: waiting does not help, a restart does
            kind, response = "internal", error(503, f"the server cannot score: {e}")
        except (ClientGone, ClientDisconnect):  # gone while we waited on the model, or while it sent the body
            metrics.cancelled.inc(endpoint=endpoint)
            kind, response = "client_gone", error(499, "client closed the connection")
        except asyncio.CancelledError:
            # uvicorn cancels the requests still running when --shutdown-timeout-s ends a SIGTERM's drain (nothing
            # else cancels a handler of the local server); uncaught, the client got a plain-text 500 and the log a
            # traceback per request. Its inputs have left the queue unscored: a JSON 503 + Retry-After says so, and
            # a client that retries (RewardClient does) reaches the restarted server or another replica
            if not isinstance(backend, LocalBackend):  # Ray Serve cancels the request of a client that left
                raise
            kind = "shutdown"
            response = error(503, f"the server is shutting down: this request was not scored within "
                                  f"--shutdown-timeout-s ({config.shutdown_timeout_s:g} s); retry",
                             {"Retry-After": str(config.retry_after_s), "Connection": "close"})
        except Exception as e:  # noqa: BLE001 - one request's bug must not stop the server
            logger.exception("unexpected error on %s", endpoint)
            kind, response = "internal", error(500, f"internal error: {type(e).__name__}: {e}")
        if kind is not None:
            metrics.errors.inc(endpoint=endpoint, kind=kind)
            if kind not in ("client_gone", "internal") or response.status_code == 503:  # internal 500s: logged above
                log_refusal(endpoint, response.status_code, json.loads(response.body)["error"], model_traceback,
                            _request_id(request))
        metrics.requests.inc(endpoint=endpoint, code=str(response.status_code))
        metrics.latency.observe(time.perf_counter() - t0, endpoint=endpoint)
        _echo_request_id(request, response)
        return response

    async def read_json(request: Request) -> Any:
        body = await read_body(request, config.max_request_bytes)
        content_type = request.headers.get("content-type", "")
        return parse_json(body, content_type) if len(body) <= _JSON_INLINE_BYTES else \
            await asyncio.to_thread(parse_json, body, content_type)

    async def off_loop(fn: Callable, *args: Any) -> Any:
        """Image / frame decoding runs on a thread, never on the event loop (text is parsed in place)."""
        return await asyncio.to_thread(fn, *args) if spec.has_media else fn(*args)

    def check_query(request: Request, allowed: tuple = ()) -> None:
        """Query parameters other than ``allowed`` (once each) would be ignored: refuse them."""
        names = [name for name, _ in request.query_params.multi_items()]
        unknown = sorted(set(names) - set(allowed))
        if unknown:
            raise RequestError(400, f"unknown query parameter(s) {field_names(unknown)}: send options in the JSON "
                                    "body" + (f" (the query takes only {', '.join(allowed)})" if allowed else ""))
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise RequestError(400, f"query parameter(s) {field_names(repeated)} given more than once")

    @app.post("/score")
    async def score(request: Request):
        async def work():
            if request.headers.get("content-type", "").strip().lower().startswith("image/"):  # MIME types: any case
                check_query(request, ("prompt",))
                body = await read_body(request, config.max_request_bytes)
                req = await asyncio.to_thread(parse_image_upload, body, request.query_params.get("prompt", ""), spec,
                                              config)
            else:
                if "prompt" in request.query_params:  # an image body sent as application/octet-stream, or with none
                    raise RequestError(400, "query parameter 'prompt' goes with a raw image body, which needs "
                                            "'Content-Type: image/png' (or image/jpeg, image/webp); got Content-Type "
                                            f"{request.headers.get('content-type', '(none)')!r}. A JSON body carries "
                                            "the prompt in its input rows")
                check_query(request)
                req = await off_loop(parse_score_request, await read_json(request), spec, config)
            results = await until_disconnect(request, backend.score(req.items, req.output))
            metrics.items.inc(len(req.items))
            return JSONResponse(score_response(results, req.output, req.refine))

        return await handle("/score", request, work)

    @app.post("/get_reward")
    async def get_reward(request: Request):
        async def work():
            check_query(request)
            data = await read_json(request)
            items = parse_openrlhf(data, spec, config)
            if not items:  # OpenRLHF's empty shard for a second server (parse_openrlhf): no rewards, no error
                return JSONResponse(openrlhf_response([]))
            refine = config.refine if spec.has_parts and TextPair not in spec.input_types else None
            results = await until_disconnect(request, backend.score(items, "parts" if refine else "scores"))
            metrics.items.inc(len(items))
            rewards = finite(score_response(results, "parts", refine)["scores"] if refine else results)
            missing = missing_indices(rewards)
            if missing:
                filled = config.missing_reward is not None
                missing_rewards.inc(len(missing), endpoint="/get_reward", filled=str(filled).lower())
                if not filled and not warned:
                    warned.append(True)
                    logger.warning(
                        "/get_reward: query %d %.80r (of %d in this request%s) has no finite reward and is answered "
                        "null, which OpenRLHF cannot read (torch.tensor of the rewards fails: 'Could not infer "
                        "dtype of NoneType'); serve with --missing-reward VALUE (e.g. -1.0) to send that instead. "
                        "Warned once; mmreward_serve_missing_rewards_total counts them.", missing[0],
                        data["query"][missing[0]], len(rewards), f", {len(missing)} such" if len(missing) > 1 else "")
            return JSONResponse(openrlhf_response(rewards, config.missing_reward))

        return await handle("/get_reward", request, work)

    @app.get("/info")
    async def info(request: Request):
        async def work():
            return JSONResponse({**spec.to_json(), "max_batch": config.max_batch, "max_items": config.max_items,
                                 "max_request_mb": config.max_request_mb, "step_separator": config.step_separator})

        return await handle("/info", request, work)

    @app.api_route("/healthz", methods=["GET", "HEAD"])  # HEAD: health checkers that read the status code only
    async def healthz():
        check = getattr(backend, "health", None)
        reason = check() if callable(check) else None
        if reason is not None:  # a load balancer / orchestrator takes the replica out (or restarts it)
            return JSONResponse({"status": "unhealthy", "reason": reason, "model_type": spec.model_type,
                                 "queue_depth": backend.queue_depth}, status_code=503)
        return JSONResponse({"status": "ok", "model_type": spec.model_type, "queue_depth": backend.queue_depth})

    @app.get("/metrics")
    async def prometheus(request: Request):
        async def work():
            return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

        return await handle("/metrics", request, work)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):  # unknown routes, wrong methods
        path = request.url.path
        where = f"{request.method} {path if len(path) <= 80 else path[:77] + '...'}"
        if exc.status_code == 404:  # e.g. OpenRLHF given http://HOST:PORT, without the /get_reward its client posts to
            message = f"no route {where}: the routes are {ROUTES}"
        elif exc.status_code == 405:
            message = f"{where} is not allowed (Allow: {(exc.headers or {}).get('Allow', '?')}); the routes are {ROUTES}"
        else:
            message = str(exc.detail)
        # one key: a scanner's paths must not grow the table
        log_refusal("(routing)", exc.status_code, message, request_id=_request_id(request))
        # counted under the one endpoint "(routing)" for the same reason: a trainer posting to a wrong URL shows
        metrics.errors.inc(endpoint="(routing)", kind="no_route" if exc.status_code == 404 else "wrong_method")
        metrics.requests.inc(endpoint="(routing)", code=str(exc.status_code))
        return _echo_request_id(request, error(exc.status_code, message, getattr(exc, "headers", None)))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request, exc):
        return error(400, str(exc))

    from fastapi.routing import APIRoute

    for route in [r for r in app.router.routes if isinstance(r, APIRoute)]:  # /score/ as /score (see above)
        app.add_api_route(route.path + "/", route.endpoint, methods=sorted(route.methods), include_in_schema=False)
    return app


# ------------------------------------------------------------------ running it
def _uvicorn_server(app: Any, config: ServeConfig) -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, except that a SIGTERM it drained is an orderly stop (exit 0), not re-raised:
        uvicorn re-sends the signal to itself after the drain, so a supervisor saw every planned stop as
        death by signal. Ctrl-C (SIGINT) is still re-raised and reads "interrupted"."""

        stopped_by_sigterm = False

        @contextlib.contextmanager
        def capture_signals(self):
            with super().capture_signals():
                yield
                self.stopped_by_sigterm = signal.SIGTERM in self._captured_signals
                self._captured_signals[:] = [s for s in self._captured_signals if s != signal.SIGTERM]

    timeout = config.shutdown_timeout_s if math.isfinite(config.shutdown_timeout_s) else None  # None: no limit
    # access_log: uvicorn's access logger logs at info, so --log-level info (the help: "info logs every request")
    # shows one line per request and the default (warning) none
    return Server(uvicorn.Config(app, host=config.host, port=config.port, log_level=config.log_level,
                                 timeout_graceful_shutdown=timeout, access_log=True, lifespan="on",
                                 http=_http_protocol(), h11_max_incomplete_event_size=MAX_HEAD_BYTES))


def _http_protocol() -> Any:
    """uvicorn's HTTP protocol with a bounded request head: the request line + headers of at most
    :data:`MAX_HEAD_BYTES` (else 431), and a new connection's first head complete within :data:`HEAD_TIMEOUT_S`
    (else 408). Its httptools protocol (the one uvicorn picks when httptools is installed) has neither: one
    connection sending an endless header grew the server's memory by its size (200 MB: +400 MB), and connections
    that send nothing, or a header byte now and then, were held for ever (each an open file: enough of them and
    the server accepts no trainer) — both before any API key is checked. Without httptools, uvicorn's h11 protocol
    takes the size bound as ``h11_max_incomplete_event_size``."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return "h11"

    class BoundedHeadProtocol(HttpToolsProtocol):
        # bytes received since the last response ended (or the connection opened); None once the headers are
        # complete, -1 once the request was refused (what the client still sends is read and dropped)
        head_bytes: Optional[int] = 0
        head_timer: Any = None
        answered = False  # a response was sent on this connection (the next head is timed from it)

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self.head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self.head_timed_out)

        def connection_lost(self, exc: Optional[Exception]) -> None:
            self.stop_head_timer()
            super().connection_lost(exc)

        def stop_head_timer(self) -> None:
            if self.head_timer is not None:
                self.head_timer.cancel()
                self.head_timer = None

        def on_headers_complete(self) -> None:
            self.head_bytes = None
            self.stop_head_timer()  # restarted once the response is sent (a kept-alive connection's next head)
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self.answered = True
            if not self.transport.is_closing():  # the next request's head (keep-alive) starts: counted and timed
                self.head_bytes = 0
                self.stop_head_timer()
                self.head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self.head_timed_out)

        def data_received(self, data: bytes) -> None:
            if self.head_bytes == -1:
                return
            if self.head_bytes is not None:
                self.head_bytes += len(data)
            super().data_received(data)
            # checked after parsing: a chunk that completes the headers may carry much of the body too
            if self.head_bytes is not None and self.head_bytes > MAX_HEAD_BYTES:
                self.refuse(431, "Request Header Fields Too Large",
                            f"the request line and headers pass {MAX_HEAD_BYTES} bytes")

        def head_timed_out(self) -> None:
            self.head_timer = None
            if self.head_bytes is not None and self.head_bytes != -1:
                since = "the last response" if self.answered else "connecting"
                self.refuse(408, "Request Timeout", f"the request line and headers did not arrive within "
                                                    f"{HEAD_TIMEOUT_S:g} s of {since}")

        def refuse(self, status: int, reason: str, message: str) -> None:
            """Answer ``status`` (JSON, as every error of the server) and end the connection."""
            cycle = getattr(self, "cycle", None)
            if self.transport.is_closing() or (cycle is not None and not cycle.response_complete):
                return  # a request being answered (a pipelined head parsed early): its response is not cut off
            self.head_bytes = -1
            self.stop_head_timer()
            body = json.dumps({"error": message, "status": status}).encode()
            self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\nconnection: close\r\n"
                                 b"content-length: %d\r\n\r\n%s" % (status, reason.encode(), len(body), body))
            # half-close, reading on: closed with unread bytes, the socket would send a reset that can destroy the
            # answer before the client reads it. The connection ends when the client closes, or in 10 s
            self.transport.write_eof()
            self.loop.call_later(10.0, self.transport.close)

    return BoundedHeadProtocol


def bind(config: ServeConfig) -> tuple[socket.socket, str]:
    """A listening-ready socket on ``config.host:config.port`` (port 0: a free port) and its URL.

    Bound before the model loads, so a port in use or a host that does not resolve is a one-line user
    error at once rather than uvicorn's own log line after a long load."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((config.host, config.port))
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {config.host}:{config.port} (--host / --port): {e.strerror or e}") from e
    host, port = sock.getsockname()[:2]
    return sock, f"http://{'[' + host + ']' if family == socket.AF_INET6 else host}:{port}"


def _log_at(level: str) -> None:
    """The ``mmreward.serve`` logger (refused requests, model failures) at ``--log-level``, its lines formatted as
    uvicorn's (``WARNING:  /score answered 422: …``). Without a handler they reached Python's last-resort handler:
    bare lines without their level, shown whatever ``--log-level`` said (``critical`` silenced uvicorn only). An
    application that configured logging itself keeps its handlers."""
    from uvicorn.config import LOG_LEVELS
    from uvicorn.logging import DefaultFormatter

    logger.setLevel(LOG_LEVELS[level])
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()  # stderr, as uvicorn's
        handler.setFormatter(DefaultFormatter("%(levelprefix)s %(message)s"))
        logger.addHandler(handler)


def serve(model: Union[str, Any], config: Optional[ServeConfig] = None) -> None:
    """Load ``model`` (a folder, or a RewardScorer) and serve it until SIGTERM / Ctrl-C."""
    config = config or ServeConfig()
    config.check_bind()
    _log_at(config.log_level)
    sock, url = bind(config)
    try:
        backend = LocalBackend(load_model(model, config.device, config.dtype), config)
        server = _uvicorn_server(create_app(backend, config), config)
        # listen before the URL is announced: a client that connects as soon as it reads the line (port 0)
        # waits in the backlog until uvicorn accepts, instead of a refused connection
        sock.listen(server.config.backlog)
        print(f"mmreward serve: {backend.spec.model_type} ({backend.spec.names()}) on {url} "
              f"— POST /score, POST /get_reward, GET /metrics", file=sys.stderr, flush=True)
        server.run(sockets=[sock])
        if server.stopped_by_sigterm:
            print("mmreward serve: stopped (SIGTERM)", file=sys.stderr, flush=True)
    finally:
        sock.close()


class BackgroundServer:
    """A reward server on a daemon thread, bound to ``config.host`` (port 0: a free port)::

        with BackgroundServer(model, ServeConfig(port=0)) as url:
            requests.post(url + "/score", json={"inputs": [...]})

    Leaving the block shuts it down as SIGTERM would (in-flight requests finish)."""

    def __init__(self, model: Any, config: Optional[ServeConfig] = None):
        self.config = config or ServeConfig(port=0)
        self.config.check_bind()
        self.backend = LocalBackend(load_model(model, self.config.device, self.config.dtype), self.config)
        self.app = create_app(self.backend, self.config)
        self.server = _uvicorn_server(self.app, self.config)
        self._sock: Optional[socket.socket] = None
        self._thread: Optional[threading.Thread] = None
        self.url = ""

    def start(self) -> str:
        try:
            self._sock, self.url = bind(self.config)
            self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]},
                                            name="mmreward-serve-http", daemon=True)
            self._thread.start()
            deadline = time.monotonic() + 30
            while not self.server.started:
                if not self._thread.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"the reward server did not start on {self.url}")
                time.sleep(0.01)
        except BaseException:
            # a port in use (or a server that never started) left the model's worker thread running, holding the
            # model: with `with BackgroundServer(...)`, __exit__ does not run when __enter__ raises
            self.stop(timeout=5.0)
            self.backend.close(timeout=5.0)
            raise
        return self.url

    def stop(self, timeout: float = 60.0) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


__all__ = ["BackgroundServer", "ClientGone", "LocalBackend", "bind", "check_model_options", "create_app", "read_body",
           "serve", "until_disconnect"]
