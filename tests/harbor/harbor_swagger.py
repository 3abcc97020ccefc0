"""Check HTTP exchanges against Harbor's real swagger (v2.6.0), for the stand-in's tests.

Why not ``jsonschema``: the spec is Swagger 2.0, whose schemas differ from any JSON
Schema draft where it matters here (``x-nullable``, parameters in query/header/body,
shared ``responses``), and the subset the Project/GeneralInfo/health/Errors models use is
small: ``$ref``, ``type``, ``properties``, ``items``, ``format``, ``maxLength``/
``minLength``, ``x-nullable``. Any other keyword makes the check fail loudly rather than
pass silently.

The check is stricter than the spec in one way: a property a model does not declare is
an error, because Harbor's answers are generated from these models and never carry one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

SPEC_NAME = "harbor-v2.6.0-swagger.yaml"
# sha256 of goharbor/harbor v2.6.0 api/v2.0/swagger.yaml (= shared/reference's copy)
SPEC_SHA256 = "b5cac93db920c1e33b85ce558644cbc3c672ca823664c699e4466031ada6d9c4"
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_KNOWN = {"type", "properties", "items", "$ref", "description", "format", "maxLength",
          "minLength", "x-nullable", "x-omitempty", "maximum", "minimum"}
_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


class Spec:
    def __init__(self, path: Path) -> None:
        self.data = yaml.safe_load(path.read_text())
        self.base = self.data["basePath"]

    def resolve(self, node: dict) -> dict:
        while "$ref" in node:
            parts = node["$ref"].lstrip("#/").split("/")
            target: Any = self.data
            for part in parts:
                target = target[part]
            node = target
        return node

    def operation(self, method: str, template: str) -> dict:
        return self.data["paths"][template][method.lower()]

    # -- schemas -----------------------------------------------------------------------------

    def problems(self, schema: dict, value: Any, where: str = "body") -> list[str]:
        """What is wrong with ``value`` for ``schema`` (empty: it conforms)."""
        if "$ref" in schema:
            local = {k: v for k, v in schema.items() if k != "$ref"}
            nullable = local.get("x-nullable", False)
            if value is None:
                return [] if nullable else [f"{where}: null is not allowed"]
            return self.problems(self.resolve(schema), value, where)
        unknown = set(schema) - _KNOWN
        if unknown:
            return [f"{where}: the checker does not know schema keywords {sorted(unknown)}"]
        if value is None:
            return [] if schema.get("x-nullable") else [f"{where}: null is not allowed"]
        kind = schema.get("type", "object" if "properties" in schema else None)
        check = {
            "object": lambda v: isinstance(v, dict),
            "array": lambda v: isinstance(v, list),
            "string": lambda v: isinstance(v, str),
            "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
            "boolean": lambda v: isinstance(v, bool),
        }
        if kind is None:
            return []
        if not check[kind](value):
            return [f"{where}: {json.dumps(value)[:60]} is not a {kind}"]
        found: list[str] = []
        if kind == "object":
            declared = schema.get("properties", {})
            for key, item in value.items():
                if key not in declared:
                    found.append(f"{where}.{key}: not a property of this model")
                else:
                    found += self.problems(declared[key], item, f"{where}.{key}")
        elif kind == "array":
            for index, item in enumerate(value):
                found += self.problems(schema.get("items", {}), item, f"{where}[{index}]")
        elif kind == "string":
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                found.append(f"{where}: longer than {schema['maxLength']}")
            if "minLength" in schema and len(value) < schema["minLength"]:
                found.append(f"{where}: shorter than {schema['minLength']}")
            if schema.get("format") == "date-time" and not _DATE_TIME.match(value):
                found.append(f"{where}: {value!r} is not a date-time")
        elif kind == "integer" and schema.get("format") in _RANGES:
            low, high = _RANGES[schema["format"]]
            if not low <= value <= high:
                found.append(f"{where}: {value} is out of {schema['format']} range")
        return found

    # -- exchanges -------------------------------------------------------------------------------

    def request_problems(self, method: str, template: str, query: dict[str, str],
                         headers: dict[str, str], body: bytes) -> list[str]:
        """What is wrong with a request for the operation ``method template``."""
        operation = self.operation(method, template)
        found: list[str] = []
        params = [self.resolve(p) for p in operation.get("parameters", [])]
        lower_headers = {k.lower(): v for k, v in headers.items()}
        declared_query = {p["name"] for p in params if p["in"] == "query"}
        for name in query:
            if name not in declared_query:
                found.append(f"query {name}: not a parameter of {method} {template}")
        for param in params:
            where = f"{param['in']} {param['name']}"
            if param["in"] == "query":
                value = query.get(param["name"])
            elif param["in"] == "header":
                value = lower_headers.get(param["name"].lower())
            elif param["in"] == "body":
                if not body:
                    if param.get("required"):
                        found.append(f"{where}: required")
                    continue
                try:
                    document = json.loads(body)
                except ValueError:
                    found.append(f"{where}: not JSON")
                    continue
                found += self.problems(param["schema"], document, where)
                continue
            else:
                continue
            if value is None:
                if param.get("required"):
                    found.append(f"{where}: required")
                continue
            if param.get("type") == "boolean" and value not in ("true", "false"):
                found.append(f"{where}: {value!r} is not a boolean")
            if param.get("minLength") and len(value) < param["minLength"]:
                found.append(f"{where}: shorter than {param['minLength']}")
        return found

    def response_problems(self, method: str, template: str, status: int,
                          headers: dict[str, str], body: bytes,
                          undeclared_ok: dict[int, str] | None = None) -> list[str]:
        """What is wrong with a response; ``undeclared_ok`` names statuses the spec omits but
        Harbor 2.6 really answers (with why), whose bodies are checked as Harbor's shared
        response of that status."""
        responses = self.operation(method, template)["responses"]
        key = str(status)
        if key in responses:
            answer = self.resolve(responses[key])
        elif undeclared_ok and status in undeclared_ok and key in self.data["responses"]:
            answer = self.data["responses"][key]
        else:
            return [f"status {status} is not declared for {method} {template}"]
        found: list[str] = []
        lower_headers = {k.lower(): v for k, v in headers.items()}
        for name in answer.get("headers", {}):
            if name.lower() in ("x-total-count", "link"):
                continue  # list paging headers are optional
            if name.lower() not in lower_headers:
                found.append(f"header {name}: missing from a {status}")
        schema = answer.get("schema")
        if method.upper() == "HEAD":
            return found
        if schema is None:
            if body:
                found.append(f"a {status} has no body in the spec, got {body[:60]!r}")
            return found
        if schema.get("type") == "string":  # text/plain answers (ping)
            return found
        try:
            document = json.loads(body)
        except ValueError:
            return found + [f"a {status} body is not JSON: {body[:60]!r}"]
        return found + self.problems(schema, document, f"{status} body")


def template_of(path: str, base: str = "/api/v2.0") -> str:
    """The spec's path template for a request path under the API."""
    rest = path[len(base):]
    if rest.startswith("/projects/") and rest.count("/") == 2:
        return "/projects/{project_name_or_id}"
    return rest
