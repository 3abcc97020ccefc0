"""The OpenAPI v2 document the lab's API server stand-in serves at /openapi/v2.

kubectl (1.25, 1.26) reads it before `apply`: its QueryParamVerifier looks, for the object's
group/version/kind, for a path whose PATCH operation carries the vendor extension
``x-kubernetes-group-version-kind`` and a ``dryRun`` / ``fieldValidation`` query parameter;
without the document `apply` fails. kubectl asks for gnostic's protobuf encoding
(``openapi_v2.Document``, google/gnostic openapiv2/OpenAPIv2.proto), written here by hand:
only the fields kubectl reads. No definitions: kubectl then falls back to its compiled-in
types for strategic merge patches, and validation is the server's (fieldValidation).
"""

from __future__ import annotations

from typing import Any, Iterable

PROTOBUF = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
# kube-openapi's handler answers the protobuf with this type (Go's mime parser refuses the '@')
PROTOBUF_REPLY = "application/octet-stream"
QUERY_PARAMETERS = ("dryRun", "fieldManager", "fieldValidation", "force")


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, payload: bytes | str) -> bytes:
    """A length-delimited field (string or embedded message)."""
    data = payload.encode() if isinstance(payload, str) else payload
    return varint(number << 3 | 2) + varint(len(data)) + data


def named_any(name: str, yaml_text: str) -> bytes:
    """NamedAny{name=1, value=2: Any{yaml=2}}."""
    return field(1, name) + field(2, field(2, yaml_text))


def query_parameter(name: str) -> bytes:
    """ParametersItem{parameter=1: Parameter{non_body_parameter=2: NonBodyParameter{
    query_parameter_sub_schema=3: {in=2, description=3, name=4, type=6}}}}."""
    sub = field(2, "query") + field(3, name) + field(4, name) + field(6, "string")
    return field(1, field(2, field(3, sub)))


def gvk_yaml(group: str, version: str, kind: str) -> str:
    return f'group: "{group}"\nkind: {kind}\nversion: {version}\n'


def patch_operation(group: str, version: str, kind: str) -> bytes:
    """Operation{operation_id=5, parameters=8, vendor_extension=13}."""
    out = field(5, f"patch{kind}")
    for name in QUERY_PARAMETERS:
        out += field(8, query_parameter(name))
    return out + field(13, named_any("x-kubernetes-group-version-kind", gvk_yaml(group, version, kind)))


def path_of(group: str, version: str, plural: str, namespaced: bool) -> str:
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    return f"{base}/namespaces/{{namespace}}/{plural}/{{name}}" if namespaced else f"{base}/{plural}/{{name}}"


def document(resources: Iterable[Any], version: str) -> bytes:
    """Document{swagger=1, info=2: Info{title=1, version=2}, paths=8: Paths{path=2: NamedPathItem}}."""
    paths = b""
    for r in resources:
        item = field(8, patch_operation(r.group, r.version, r.kind))  # PathItem{patch=8}
        paths += field(2, field(1, path_of(r.group, r.version, r.name, r.namespaced)) + field(2, item))
    return field(1, "2.0") + field(2, field(1, "Kubernetes") + field(2, version)) + field(8, paths)


def document_json(resources: Iterable[Any], version: str) -> dict[str, Any]:
    """The same document as JSON, for clients that ask for application/json."""
    paths = {}
    for r in resources:
        paths[path_of(r.group, r.version, r.name, r.namespaced)] = {"patch": {
            "operationId": f"patch{r.kind}",
            "parameters": [{"in": "query", "name": n, "type": "string", "uniqueItems": True}
                           for n in QUERY_PARAMETERS],
            "x-kubernetes-group-version-kind": {"group": r.group, "kind": r.kind, "version": r.version},
        }}
    return {"swagger": "2.0", "info": {"title": "Kubernetes", "version": version}, "paths": paths, "definitions": {}}
