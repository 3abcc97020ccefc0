"""Strategic merge patch as kube-apiserver applies it to the built-in kinds (what kubectl apply sends).

Lists whose Go field carries ``patchStrategy:"merge"`` are merged element by element on
their ``patchMergeKey`` (containers by name, volumeMounts by mountPath, ...; the table below
is from k8s.io/api's struct tags for the fields the lab's clients send), lists of scalars
with that strategy (finalizers) are unions, every other list is replaced. Directives:
``$patch: replace|delete`` (map and list element), ``$retainKeys``, ``$setElementOrder/F``
(the final order of list F), ``$deleteFromPrimitiveList/F``; ``null`` deletes a key.
"""

from __future__ import annotations

from typing import Any

# field name -> merge key (k8s.io/api core/v1, apps/v1, meta/v1 struct tags)
MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name", "env": "name",
    "volumes": "name", "volumeMounts": "mountPath", "volumeDevices": "devicePath", "imagePullSecrets": "name",
    "hostAliases": "ip", "ownerReferences": "uid", "conditions": "type",
    "topologySpreadConstraints": "topologyKey",
}
PRIMITIVE_MERGE = {"finalizers"}
ORDER = "$setElementOrder/"
DELETE_FROM = "$deleteFromPrimitiveList/"


def merge_key(field: str, items: list[Any]) -> str | None:
    if field == "ports":  # a container's ports merge on containerPort, a Service's on port
        sample = next((i for i in items if isinstance(i, dict)), {})
        return "containerPort" if "containerPort" in sample else "port"
    return MERGE_KEYS.get(field)


def strategic_merge(target: Any, patch: Any) -> Any:
    """``target`` with the strategic merge ``patch`` applied (a new value; inputs untouched)."""
    if not isinstance(patch, dict):
        return patch
    if patch.get("$patch") == "replace":
        return {k: v for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith((ORDER, DELETE_FROM)) or key in ("$retainKeys", "$patch"):
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = merge_list(key, result.get(key), value)
        else:
            merged = strategic_merge(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
    for key, value in patch.items():
        if key.startswith(DELETE_FROM) and isinstance(result.get(key[len(DELETE_FROM):]), list):
            field = key[len(DELETE_FROM):]
            result[field] = [v for v in result[field] if v not in value]
        elif key.startswith(ORDER) and isinstance(result.get(key[len(ORDER):]), list):
            field = key[len(ORDER):]
            result[field] = ordered(result[field], value, merge_key(field, result[field]))
    if isinstance(patch.get("$retainKeys"), list):
        keep = set(patch["$retainKeys"])
        result = {k: v for k, v in result.items() if k in keep}
    return result


def merge_list(field: str, current: Any, patch: list[Any]) -> list[Any]:
    current = current if isinstance(current, list) else []
    if field in PRIMITIVE_MERGE:
        return current + [v for v in patch if v not in current]
    key = merge_key(field, patch or current)
    if not key or not all(isinstance(i, dict) for i in patch):
        return [i for i in patch if not (isinstance(i, dict) and i.get("$patch") == "replace")]
    result = [dict(i) if isinstance(i, dict) else i for i in current]
    for item in patch:
        index = next((n for n, c in enumerate(result) if isinstance(c, dict) and c.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(strategic_merge({}, item))
        else:
            result[index] = strategic_merge(result[index], item)
    return result


def ordered(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    """``items`` in ``$setElementOrder``'s order; items it does not name keep their place at the end."""
    def ident(item: Any) -> Any:
        return item.get(key) if key and isinstance(item, dict) else item

    wanted = [ident(o) for o in order]
    named = sorted((i for i in items if ident(i) in wanted), key=lambda i: wanted.index(ident(i)))
    return named + [i for i in items if ident(i) not in wanted]
