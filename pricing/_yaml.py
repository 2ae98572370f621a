"""A YAML loader that keeps money exact and refuses ambiguous documents.

PyYAML's safe loader turns ``0.15`` into a binary float (0.1499999...) and lets
a later duplicate key silently replace an earlier one (a second ``acme:`` rate
card would win without a word). For a price book both are billing errors, so:

- YAML floats become ``Decimal`` built from the scalar's own text;
- timestamps stay strings (the book model parses them and insists on a zone);
- a duplicate key in any mapping is an error naming the key and its line.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import yaml


class _ExactLoader(yaml.SafeLoader):
    pass


def _decimal(loader: yaml.SafeLoader, node: yaml.Node) -> Decimal:
    text = str(loader.construct_scalar(node))  # type: ignore[arg-type]
    try:
        value = Decimal(text.replace("_", ""))
    except InvalidOperation:
        value = Decimal("NaN")  # .inf / .nan: rejected by the money validator with a path
    return value


def _string(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    return str(loader.construct_scalar(node))  # type: ignore[arg-type]


def _mapping(loader: yaml.SafeLoader, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
    assert isinstance(node, yaml.MappingNode)  # the resolver only sends mappings here
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return dict(loader.construct_mapping(node, deep=deep))


_ExactLoader.add_constructor("tag:yaml.org,2002:float", _decimal)
_ExactLoader.add_constructor("tag:yaml.org,2002:timestamp", _string)
_ExactLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_yaml(text: str) -> Any:
    """Parse YAML text with exact decimals and no duplicate keys (raises ``yaml.YAMLError``)."""
    return yaml.load(text, Loader=_ExactLoader)
