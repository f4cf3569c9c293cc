"""What a person opens in a browser: the city page at ``/`` and the API docs, all served from the package.

Nothing is loaded from another origin: the page's HTML, script and style ship in ``api/static``,
Swagger UI and ReDoc in the ``fastapi-offline`` package, so the docs work on a network without the
internet. The page calls the API's own JSON endpoints with the key a person typed in, if any.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

PAGE_ASSETS = "/static"
DOCS_ASSETS = "/docs-assets"
DOCS_URL, REDOC_URL, OAUTH2_REDIRECT_URL = "/docs", "/redoc", "/docs/oauth2-redirect"

# The browser itself refuses anything of another origin: the city page has no inline script or
# style at all; Swagger UI's page starts it with an inline script, ReDoc's components inject styles
# and ReDoc's sidebar would show its vendor's logo from their CDN (refused, it hides itself).
_SAME_ORIGIN = (
    "default-src 'none'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'"
)
PAGE_POLICY = f"{_SAME_ORIGIN}; script-src 'self'; style-src 'self'; form-action 'none'"
DOCS_POLICY = (
    f"{_SAME_ORIGIN}; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "font-src 'self' data:; worker-src 'self' blob:; form-action 'self'"
)


def _same_origin(page: HTMLResponse, policy: str = DOCS_POLICY) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = policy
    return page


def add_pages(app: FastAPI) -> None:
    """Serve the city page at ``/`` and Swagger UI / ReDoc from packaged assets (create the app with
    ``docs_url=None, redoc_url=None``)."""
    openapi_url = app.openapi_url or "/openapi.json"
    title = app.title
    page = files("api").joinpath("static/index.html").read_text(encoding="utf-8")

    app.mount(PAGE_ASSETS, StaticFiles(packages=[("api", "static")]), name="page-assets")
    app.mount(DOCS_ASSETS, StaticFiles(packages=[("fastapi_offline", "static")]), name="docs-assets")

    @app.get("/", include_in_schema=False)
    def city_page() -> HTMLResponse:
        return _same_origin(HTMLResponse(page, headers={"Cache-Control": "no-cache"}), PAGE_POLICY)

    @app.get(DOCS_URL, include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return _same_origin(
            get_swagger_ui_html(
                openapi_url=openapi_url,
                title=f"{title} - Swagger UI",
                oauth2_redirect_url=OAUTH2_REDIRECT_URL,
                swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
                # Swagger UI would otherwise show a badge image fetched from validator.swagger.io.
                swagger_ui_parameters={"validatorUrl": None},
            )
        )

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return _same_origin(get_swagger_ui_oauth2_redirect_html())

    @app.get(REDOC_URL, include_in_schema=False)
    def redoc() -> HTMLResponse:
        return _same_origin(
            get_redoc_html(
                openapi_url=openapi_url,
                title=f"{title} - ReDoc",
                redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
                redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
                with_google_fonts=False,
            )
        )
