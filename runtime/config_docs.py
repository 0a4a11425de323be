"""Generate docs/configuration.md from the config models' field descriptions.

Usage: python -m runtime.config_docs > docs/configuration.md
A test compares the file with this output, so the reference cannot drift from the code.
"""

from __future__ import annotations

import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from runtime import config as config_module

HEADER = """# Configuration reference

Generated from the typed models in `runtime/config.py` by
`python -m runtime.config_docs > docs/configuration.md`; do not edit by hand.

A config file is YAML with three top-level keys: `daemon`, `budgets` (a mapping of
budget name to budget) and `workloads` (a list). Unknown keys are rejected. Numeric
keys carry their unit in the name: `_seconds`, `_ratio` (a share, 0..1 unless stated),
`_per_replica_hour` (money per replica-hour). A source's `kind` selects its section.
"""


def _models(annotation) -> list[type[BaseModel]]:
    """Return the models named in an annotation, looking inside Optional, Union, tuple and dict."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found = []
    for arg in typing.get_args(annotation):
        found.extend(_models(arg))
    return found


def _default(field) -> str:
    if field.default is not PydanticUndefined:
        value = field.default
        return "none" if value is None else f"`{value}`"
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return "see below"
        return f"`{value!r}`" if not isinstance(value, tuple) or len(repr(value)) < 60 else "see below"
    return "required"


def _type_name(annotation) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " or ".join(f"`{value}`" for value in args)
    if origin is tuple:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"mapping of {_type_name(args[1])}"
    if origin is typing.Annotated:
        return _type_name(args[0])
    if args:
        return " or ".join(_type_name(arg) for arg in args)
    if annotation is type(None):
        return "none"
    return getattr(annotation, "__name__", str(annotation))


def render() -> str:
    lines = [HEADER]
    seen: set[type] = set()
    queue: list[tuple[str, type[BaseModel]]] = [("top level", config_module.AppConfig)]
    while queue:
        title, model = queue.pop(0)
        if model in seen:
            continue
        seen.add(model)
        lines.append(f"\n## {model.__name__} ({title})\n")
        if model.__doc__:
            lines.append(" ".join(model.__doc__.split()) + "\n")
        lines.append("| key | type | default | meaning |")
        lines.append("|---|---|---|---|")
        for name, field in model.model_fields.items():
            description = (field.description or "").replace("|", "\\|")
            nested_models = _models(field.annotation)
            if not description and nested_models:
                description = "See " + ", ".join(f"{nested.__name__}" for nested in nested_models) + " below."
            elif not description and name == "kind":
                description = "Selects this source type."
            lines.append(f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | {description} |")
            for nested in nested_models:
                queue.append((f"`{name}` of {model.__name__}", nested))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
