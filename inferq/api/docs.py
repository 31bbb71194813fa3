"""OpenAPI at ``/schema``: the JSON/YAML documents and a Swagger UI page that works offline.

Litestar's render plugins load their JavaScript from CDNs; here Swagger UI's files come from the
``swagger-ui-py`` wheel and are served under ``/schema/static``. (No wheel ships ReDoc's bundle,
so there is no ReDoc page: ``/schema/openapi.json`` feeds any other viewer.)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin, YamlRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.router import Router
from litestar.static_files import create_static_files_router

STATIC = "/schema/static"


def swagger_static_dir() -> Path:
    """Swagger UI's ``dist`` files inside the installed ``swagger-ui-py`` package (not imported)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed: it serves the API docs page offline")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def openapi_config(*, version: str) -> OpenAPIConfig:
    swagger = SwaggerRenderPlugin(
        js_url=f"{STATIC}/swagger-ui-bundle.js",
        css_url=f"{STATIC}/swagger-ui.css",
        standalone_preset_js_url=f"{STATIC}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{STATIC}/favicon-32x32.png'>",
        path=["/", "/swagger"],
    )
    return OpenAPIConfig(
        title="inferq",
        version=version,
        description="Queue-first inference: every prediction is a message on a Redis stream. "
        "Every route but health, metrics and the V2 server endpoints takes an API key: "
        "`Authorization: Bearer iq_<id>_<secret>` (`inferq keys create`).",
        path="/schema",
        render_plugins=[swagger, JsonRenderPlugin(), YamlRenderPlugin()],
        components=Components(
            security_schemes={
                "apiKey": SecurityScheme(
                    type="http", scheme="bearer", bearer_format="iq_<id>_<secret>", description="An inferq API key"
                )
            }
        ),
        security=[{"apiKey": []}],
    )


def static_router() -> Router:
    return create_static_files_router(
        path=STATIC, directories=[swagger_static_dir()], include_in_schema=False, name="swagger-static"
    )
