"""The HTTP API and the dashboard (FastAPI): `create_app(...)`, served with `serve(...)`.

from orchestrator.http import create_app, serve
app = create_app(store=store, client=client, token=token)   # dev=True: no token
await serve(app, "127.0.0.1", 8080, on_ready=lambda url: print(f"dashboard: {url}/"))
"""

from orchestrator.http.app import close_streams, create_app
from orchestrator.http.context import AppContext
from orchestrator.http.server import ApiServer, serve

__all__ = ["ApiServer", "AppContext", "close_streams", "create_app", "serve"]
