"""The API's interactive docs, `/docs` (Swagger UI) and `/redoc`, with every file served locally."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

#: Swagger UI's and ReDoc's own builds, as the fastapi-offline package ships them: FastAPI's
#: default pages load them (and Google's fonts) from public CDNs, blank without the internet.
ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
ASSETS_URL = "/docs/static"
SWAGGER_JS = "swagger-ui-bundle.js"
SWAGGER_CSS = "swagger-ui.css"
REDOC_JS = "redoc.standalone.js"
FAVICON = "favicon.png"


def add_docs(api: FastAPI) -> None:
    """`/docs` and `/redoc` on `api`, which was made with `docs_url=None, redoc_url=None`."""
    if api.openapi_url is None:
        raise ValueError("the docs show the OpenAPI document: keep openapi_url")
    openapi_url = api.openapi_url
    api.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-static")

    def here(request: Request) -> str:
        # Behind a proxy that adds a path prefix, the prefix is the root path.
        return str(request.scope.get("root_path", "")).rstrip("/")

    @api.get("/docs", include_in_schema=False)
    async def swagger(request: Request) -> HTMLResponse:
        root = here(request)
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{api.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_URL}/{SWAGGER_JS}",
            swagger_css_url=f"{root}{ASSETS_URL}/{SWAGGER_CSS}",
            swagger_favicon_url=f"{root}{ASSETS_URL}/{FAVICON}",
            # Off: the badge would send the document's URL to swagger.io, which is unreachable
            # here and has no business knowing it.
            swagger_ui_parameters={**(api.swagger_ui_parameters or {}), "validatorUrl": None},
        )

    @api.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = here(request)
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{api.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/{REDOC_JS}",
            redoc_favicon_url=f"{root}{ASSETS_URL}/{FAVICON}",
            with_google_fonts=False,
        )
