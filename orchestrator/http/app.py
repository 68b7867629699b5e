"""The HTTP app: the JSON API under /api, the dashboard at /, the OpenAPI schema.

    app = create_app(store=store, client=client, token="s3cret")   # or dev=True (open)
    await serve(app, "127.0.0.1", 8080)

Everything the app needs is passed in and kept on `app.state.ctx` (no globals), so two apps
on one process (tests) never share anything.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from events.errors import BusError, BusUnavailable
from orchestrator.client import Client
from orchestrator.errors import InvalidInput, StoreError, UnknownWorkflow
from orchestrator.runtime.queries import BadCursor, Queries
from orchestrator.runtime.store import Store
from orchestrator.runtime.workers import WorkerDirectory

from .auth import require_token
from .context import AppContext
from .live import Live
from .models import Problem
from .routes_flow import router as flow_router
from .routes_inspect import router as inspect_router
from .routes_live import router as live_router
from .routes_runs import router as runs_router
from .routes_workflows import router as workflows_router

STATIC = Path(__file__).with_name("static")

# The dashboard loads nothing from elsewhere (no CDN): the policy makes that a promise.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def create_app(
    *, store: Store, client: Client, token: str | None = None, dev: bool = False
) -> FastAPI:
    """The API + dashboard app over `store` (committed state) and `client` (NATS).

    `token` is required unless `dev` is True (then the API is open, for `conveyor dev`)."""
    if not dev and not (token and token.strip()):
        raise ValueError("an API token is required unless the app runs in dev mode")
    app = FastAPI(
        title="Conveyor",
        version="0.1.0",
        summary="Workflows, runs, task logs and live events of a Conveyor deployment.",
        # FastAPI's interactive docs load their scripts from a CDN; the schema is what we serve.
        docs_url=None,
        redoc_url=None,
        responses={401: {"model": Problem, "description": "Missing or invalid bearer token."}},
    )
    app.state.token = token.encode() if token and not dev else None
    app.state.ctx = AppContext(
        store=store,
        client=client,
        registry=client.registry,
        queries=Queries(store, WorkerDirectory(client.bus, client.registry)),
        live=Live(client.bus),
    )
    api = APIRouter(prefix="/api", dependencies=[Depends(require_token)])
    api.include_router(workflows_router)
    api.include_router(runs_router)
    api.include_router(live_router)
    api.include_router(flow_router)
    api.include_router(inspect_router)
    app.include_router(api)
    _install_error_handlers(app)
    app.add_middleware(SecurityHeaders)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _context_of(app: object) -> AppContext | None:
    # Other apps served by ApiServer (the webhook gateway, test doubles) have no context.
    ctx = getattr(getattr(app, "state", None), "ctx", None)
    return ctx if isinstance(ctx, AppContext) else None


def close_streams(app: object) -> None:
    """End every live stream (before a graceful shutdown, which waits for open responses)."""
    ctx = _context_of(app)
    if ctx is not None:
        ctx.live.close()


def open_streams(app: object) -> None:
    """Accept live streams again (an app served anew after `close_streams`)."""
    ctx = _context_of(app)
    if ctx is not None:
        ctx.live.closed = False


class SecurityHeaders:
    """Plain ASGI (not BaseHTTPMiddleware, which buffers and mishandles streaming responses
    such as SSE): adds headers at the start of every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
        if not scope["path"].startswith("/api"):
            extra += [(b"content-security-policy", _CSP.encode()), (b"x-frame-options", b"DENY")]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def problem(status: int, detail: str, problems: list[str] | None = None) -> JSONResponse:
    """An error answer: a `Problem` body (the one error shape of every HTTP app of ours)."""
    body = Problem(detail=detail, problems=problems or [])
    return JSONResponse(jsonable_encoder(body), status_code=status)


def install_problem_handlers(app: FastAPI) -> None:
    """Every error an app can give is a `Problem`: FastAPI's and Starlette's own (404, 405,
    a request that fails validation) and an unexpected exception (500, logged) alike — never
    their default bodies (`{"detail": [...]}` or plain text)."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = problem(exc.status_code, str(exc.detail))
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', 'invalid')}"
            for err in exc.errors()
        ]
        return problem(422, "the request is invalid: " + "; ".join(problems), problems)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette logs the exception and re-raises it once this answer is sent.
        return problem(500, f"internal error ({type(exc).__name__}); see the server's log")


def _install_error_handlers(app: FastAPI) -> None:
    """Every error is a `Problem` body; foreign and domain errors map to a status here."""
    install_problem_handlers(app)

    @app.exception_handler(UnknownWorkflow)
    async def unknown_workflow(request: Request, exc: UnknownWorkflow) -> JSONResponse:
        return problem(404, str(exc))

    @app.exception_handler(InvalidInput)
    async def invalid_input(request: Request, exc: InvalidInput) -> JSONResponse:
        return problem(422, str(exc), exc.problems)

    @app.exception_handler(BadCursor)
    async def bad_cursor(request: Request, exc: BadCursor) -> JSONResponse:
        return problem(400, str(exc))

    @app.exception_handler(BusError)
    async def bus_error(request: Request, exc: BusError) -> JSONResponse:
        # Nothing was accepted: the client may retry (a run request with an idempotency key
        # or a run id is deduplicated).
        status = 503 if isinstance(exc, BusUnavailable) else 502
        return problem(status, f"NATS is unavailable: {exc}")

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError) -> JSONResponse:
        return problem(503, f"the store is unavailable: {exc}")
