"""/docs and /redoc: every file they load comes from the API itself, so they work offline."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from importlib.metadata import requires
from typing import Any

import pytest
from fastapi.testclient import TestClient
from packaging.requirements import Requirement

from worker.ingress import docs
from worker.ingress.api import create_api

PAGES = ["/docs", "/redoc"]

#: What a browser expects of each kind of file it is handed.
TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
    ".json": ("application/json",),
}


class _Refs(HTMLParser):
    """Every URL a page makes the browser fetch: src, href, ReDoc's spec-url, and the
    `url: '...'` Swagger UI is started with."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self._script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._script = tag == "script"
        self.urls += [v for k, v in attrs if k in ("src", "href", "spec-url") and v]

    def handle_data(self, data: str) -> None:
        if self._script:
            self.urls += re.findall(r"\burl:\s*'([^']*)'", data)


def referenced(html: str) -> list[str]:
    parser = _Refs()
    parser.feed(html)
    return parser.urls


@pytest.fixture
def client(ctx: Any) -> TestClient:
    return TestClient(create_api(lambda: ctx))


@pytest.mark.parametrize("page", PAGES)
def test_a_docs_page_names_no_other_host(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert not re.search(r"https?://", html), "a URL outside the server"
    assert "fonts.googleapis" not in html
    urls = referenced(html)
    assert urls, "the page loads nothing: the parser missed its references"
    assert all(u.startswith("/") and not u.startswith("//") for u in urls), urls


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        ("/docs", {docs.SWAGGER_JS, docs.SWAGGER_CSS, docs.FAVICON, "openapi.json"}),
        ("/redoc", {docs.REDOC_JS, docs.FAVICON, "openapi.json"}),
    ],
)
def test_every_file_a_docs_page_loads_answers_with_its_type(
    client: TestClient, page: str, expected: set[str]
) -> None:
    urls = referenced(client.get(page).text)
    assert {u.rsplit("/", 1)[1] for u in urls} == expected
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        kind = response.headers["content-type"].split(";")[0]
        assert kind in TYPES[url[url.rindex(".") :]], (url, kind)
        assert len(response.content) > 1000, url


def test_the_scripts_are_swagger_ui_and_redoc_themselves(client: TestClient) -> None:
    swagger = client.get(f"{docs.ASSETS_URL}/{docs.SWAGGER_JS}").text
    assert "SwaggerUIBundle" in swagger
    redoc = client.get(f"{docs.ASSETS_URL}/{docs.REDOC_JS}").text
    assert "Redoc" in redoc


def test_swagger_ui_reads_the_document_with_the_bearer_scheme(client: TestClient) -> None:
    (spec_url,) = [u for u in referenced(client.get("/docs").text) if u.endswith(".json")]
    schemes = client.get(spec_url).json()["components"]["securitySchemes"]
    assert [s["scheme"].lower() for s in schemes.values()] == ["bearer"]


def test_swagger_ui_sends_nothing_to_the_online_validator(client: TestClient) -> None:
    # Swagger UI's default would load a badge from validator.swagger.io.
    assert '"validatorUrl": null' in client.get("/docs").text


@pytest.mark.parametrize("page", PAGES)
def test_behind_a_path_prefix_every_url_carries_it(ctx: Any, page: str) -> None:
    client = TestClient(create_api(lambda: ctx), root_path="/optout")
    urls = referenced(client.get(page).text)
    assert urls
    assert all(u.startswith("/optout/") for u in urls), urls
    assert all(client.get(u).status_code == 200 for u in urls)


def test_the_files_come_with_the_installed_package() -> None:
    for name in (docs.SWAGGER_JS, docs.SWAGGER_CSS, docs.REDOC_JS, docs.FAVICON):
        assert (docs.ASSETS_DIR / name).stat().st_size > 1000, name
    # The package that ships them is a dependency, so every install (a wheel too) has them.
    names = {Requirement(r).name for r in requires("optout-worker") or []}
    assert "fastapi-offline" in names
