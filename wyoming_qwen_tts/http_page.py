"""The voices web page: `/` and its static files (HTML, JS, CSS shipped in the package, no build step).

The page talks only to the REST API, with relative URLs, so it works behind a path prefix such as
Home Assistant's ingress. It needs no token itself: its API calls carry one.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

WEB_DIR = Path(__file__).parent / "web"
STATIC_PREFIX = "/static"
# The page changes with the package: a browser must not keep an old app.js beside a new API.
NO_STALE_COPIES = {"Cache-Control": "no-cache"}


def register_page(app: FastAPI) -> None:
    """Serve the page at `/` and its files under /static."""

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", media_type="text/html", headers=NO_STALE_COPIES)

    app.mount(STATIC_PREFIX, StaticFiles(directory=WEB_DIR), name="static")
