"""Strict YAML reading for configs and override values: one ConfigError sentence per problem.

A SafeLoader that also refuses a key given twice in one mapping (plain PyYAML keeps the last one silently),
names any tag it cannot build (``!!python/...``) and refuses aliases that expand past ``MAX_YAML_VALUES``
values or contain themselves. Booleans are YAML 1.2's: only true and false (see ``_BOOL_TAG`` below).
Messages echo user values through ``short_repr``, so no value, however large, makes a message longer than a
line.
"""

from __future__ import annotations

import re
import reprlib
from typing import Any

import yaml

from imas.errors import ConfigError

# A config has a few hundred values at most (a 256-colour palette is ~1000); far below this, a document that
# expands past it is an alias bomb ("billion laughs"), refused before anything walks or prints it.
MAX_YAML_VALUES = 100_000
_MESSAGE_VALUE_CHARS = 80

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = _MESSAGE_VALUE_CHARS
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 8
_repr.maxlevel = 3


def short_repr(value: Any, quote: bool = True) -> str:
    """repr() of a user value for a message, at most 80 characters (reprlib never builds the whole repr)."""
    text = _repr.repr(value) if quote else str(value)
    return text if len(text) <= _MESSAGE_VALUE_CHARS else text[: _MESSAGE_VALUE_CHARS - 3] + "..."


class _YamlProblem(Exception):
    """Raised inside the loader; the message is a predicate ("has a duplicate key ...") for load_yaml."""


def _tag_name(node: yaml.Node) -> str:
    """The node's tag as written ("!!python/name:x", not "tag:yaml.org,2002:python/name:x"), bounded."""
    prefix = "tag:yaml.org,2002:"
    tag = "!!" + node.tag[len(prefix) :] if node.tag.startswith(prefix) else node.tag
    return short_repr(tag, quote=False)


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and turns every construction failure into a _YamlProblem."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<: *base" merges; keys given next to it override the merged ones by design
            key = self.construct_object(key_node, deep=True)
            try:
                seen = key in first_line
            except TypeError:
                continue  # unhashable: SafeLoader itself reports it
            if seen:
                raise _YamlProblem(
                    f"has a duplicate key {short_repr(key)} at line {_line(key_node)} "
                    f"(first at line {first_line[key]})"
                )
            first_line[key] = _line(key_node)
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            # PyYAML's own constructors fail this way on e.g. "!!float abc" or "!!bool maybe".
            raise _YamlProblem(
                f"has a value at line {_line(node)} that its tag {_tag_name(node)} cannot build "
                f"({exc.__class__.__name__})"
            ) from None

    def construct_unsupported(self, node: yaml.Node) -> Any:
        raise _YamlProblem(f"uses the unsupported YAML tag {_tag_name(node)} at line {_line(node)}")


# Replaces SafeLoader's catch-all (which says "could not determine a constructor"), for this loader only.
_ConfigLoader.add_constructor(None, _ConfigLoader.construct_unsupported)

# Booleans as in YAML 1.2: only true / false (any case spelling PyYAML knows). PyYAML follows YAML 1.1, where
# yes / no / on / off are booleans too, so `cutmix: off` reached the schema as False and failed against the
# enum value "off" it looks like (and `class_names: [no, yes]` was refused as booleans). As strings they let
# every enum value be written plainly; the boolean keys still take them (imas.config.convert), so `flip: yes`
# keeps its meaning. Special-casing False for a few enum keys instead would also turn `cutmix: no` and
# `cutmix: false` into "off" and leave `cutmix: on` a puzzle, and would not help strings.
_BOOL_TAG = "tag:yaml.org,2002:bool"
_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ConfigLoader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _expanded_size(root: yaml.Node) -> int:
    """How many nodes the document has once every alias is expanded; linear in the composed nodes.

    Raises _YamlProblem for an alias inside its own anchor (the expansion would be infinite).
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise _YamlProblem(f"has a YAML alias inside its own anchor (the anchor at line {_line(node)})")
        open_nodes.add(key)
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = []
        total = 1 + sum(size(child) for child in children)
        open_nodes.discard(key)
        sizes[key] = total
        return total

    return size(root)


def load_yaml(text: str, what: str) -> Any:
    """Parse one YAML document; every problem becomes one ConfigError sentence that starts with `what`."""
    loader = _ConfigLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        values = _expanded_size(node)
        if values > MAX_YAML_VALUES:
            raise _YamlProblem(
                f"has YAML aliases that expand to {values} values (more than {MAX_YAML_VALUES}, "
                "far beyond any config)"
            )
        return loader.construct_document(node)
    except _YamlProblem as exc:
        raise ConfigError(f"{what} {exc}") from None
    except RecursionError:
        raise ConfigError(f"{what} nests lists or mappings too deeply to be a config") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{what} is not valid YAML{where}") from None
    finally:
        loader.dispose()
