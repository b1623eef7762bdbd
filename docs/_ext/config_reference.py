"""``config-reference``: a table of a pydantic config model, built from its field descriptions.

The field descriptions in ``src/hierlab/**/config.py`` are the one source of the config
reference: this directive walks a model (nested sections become dotted names) and writes
one row per field -- name, type, default, description. A field without a description is a
warning, so the docs build (``-W``) fails until the field says what it means.

    ```{config-reference} hierlab.train.config.TrainingConfig
    :prefix: training
    ```
"""

from __future__ import annotations

import importlib
import types
import typing
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from pydantic import BaseModel
from pydantic_core import PydanticUndefined
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

log = logging.getLogger(__name__)


def _import(path: str) -> type[BaseModel]:
    module, _, name = path.rpartition(".")
    obj = getattr(importlib.import_module(module), name)
    if not (isinstance(obj, type) and issubclass(obj, BaseModel)):
        raise TypeError(f"{path} is not a pydantic model")
    return obj


def type_name(ann: Any) -> str:
    """A short, YAML-minded spelling of a field's annotation (None -> null)."""
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if ann is type(None):
        return "null"
    if origin is typing.Literal:
        return " | ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is not None:
        inner = ", ".join(type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return getattr(ann, "__name__", str(ann))


def _default(field: Any) -> str:
    if field.default is not PydanticUndefined:
        value = field.default
    elif field.default_factory is not None:
        value = field.default_factory()
    else:
        return "(required)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value == int(value) and abs(value) >= 1e5:
        return f"{value:.3g}"
    if isinstance(value, int) and abs(value) >= 100_000:
        return f"{value:_}"
    if isinstance(value, tuple):
        return str(list(value))
    if isinstance(value, list):
        return "[" + ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v)
                               for v in value) + "]"
    return str(value)


def _submodel(ann: Any) -> type[BaseModel] | None:
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def rows(model: type[BaseModel], prefix: str) -> list[tuple[str, str, str, str | None]]:
    """``(dotted name, type, default, description)`` of every leaf field of ``model``."""
    out = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}.{name}" if prefix else name
        sub = _submodel(field.annotation)
        if sub is not None:
            out += rows(sub, dotted)
            continue
        out.append((dotted, type_name(field.annotation), _default(field), field.description))
    return out


class ConfigReference(SphinxDirective):
    """``config-reference MODEL_PATH`` with an optional ``:prefix:`` for the dotted names."""

    required_arguments = 1
    option_spec = {"prefix": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        path = self.arguments[0]
        model = _import(path)
        table_rows = rows(model, self.options.get("prefix", ""))
        table = nodes.table(classes=["config-reference"])
        group = nodes.tgroup(cols=4)
        table += group
        for width in (22, 14, 12, 52):
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        group += head
        head += self._row(["field", "type", "default", "meaning"], literal=False)
        body = nodes.tbody()
        group += body
        for dotted, typ, default, desc in table_rows:
            if not desc:
                log.warning("config field %s (%s) has no description", dotted, path,
                            location=self.get_location())
            body += self._row([dotted, typ, default, desc or ""], literal=True)
        return [table]

    @staticmethod
    def _row(cells: list[str], literal: bool) -> nodes.row:
        row = nodes.row()
        for i, text in enumerate(cells):
            entry = nodes.entry()
            para = nodes.paragraph()
            para += nodes.literal(text=text) if literal and i < 3 else nodes.Text(text)
            entry += para
            row += entry
        return row


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("config-reference", ConfigReference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
