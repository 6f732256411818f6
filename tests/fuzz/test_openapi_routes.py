"""chalicelib/openapi.json describes exactly the routes app.py serves."""

from __future__ import annotations

import json
from pathlib import Path

from chalice import IAMAuthorizer

import app as app_module

SPEC = Path(__file__).resolve().parents[2] / "chalicelib" / "openapi.json"
METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


def documented() -> set[tuple[str, str]]:
    spec = json.loads(SPEC.read_text())
    return {(path, method.upper()) for path, item in spec["paths"].items() for method in item if method in METHODS}


def served() -> set[tuple[str, str]]:
    return {(path, method) for path, entries in app_module.app.routes.items() for method in entries}


def test_every_route_is_documented_and_nothing_else() -> None:
    assert sorted(served() - documented()) == [], "routes app.py serves that openapi.json does not describe"
    assert sorted(documented() - served()) == [], "operations openapi.json describes that app.py does not serve"


def test_every_operation_documents_the_error_shape_and_its_authorizer() -> None:
    spec = json.loads(SPEC.read_text())
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            entry = app_module.app.routes[path][method.upper()]
            expected = "sigv4" if isinstance(entry.authorizer, IAMAuthorizer) else "jitsiJwt"
            assert operation["security"] == [{expected: []}], f"{method.upper()} {path}"
            errors = {code: r for code, r in operation["responses"].items() if code == "default" or code >= "400"}
            assert "default" in errors and "400" in errors, f"{method.upper()} {path}"
            for response in errors.values():
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
