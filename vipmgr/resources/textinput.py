"""Reading untrusted YAML/JSON text with bounds: size, aliases, expansion, depth, types.

PyYAML builds aliases as shared nodes, so a 600-byte file of nine levels of
nine aliases composes instantly but expands to 9^9 nodes the moment anything
walks it (the line map, validation, JSON encoding). The limits are therefore
checked on the composed node graph, before anything is constructed: aliases
per document, nodes after expansion, nesting depth, recursive aliases. Values
are restricted to what JSON can hold (manifests are stored as JSON), so tags
like ``!!binary`` or ``!!set`` and implicit timestamps never reach a
``json.dumps`` deep in the store. Every refusal is a ``yaml.MarkedYAMLError``
(file:line:column) or an :class:`InputError` (one line naming the file).
"""

from __future__ import annotations

import sys
from typing import IO, Any, Iterator

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

MAX_MANIFEST_BYTES = 32 * 1024 * 1024  # per file; split larger inventories into several
MAX_ALIASES = 100  # per document
MAX_NODES = 100_000  # per document, counting every alias expansion
MAX_DEPTH = 64  # nesting of mappings and sequences
MAX_INT_DIGITS = 100


class InputError(ValueError):
    """The input cannot be read as text at all; the message is one line naming it."""


def read_bytes(stream: IO[bytes], source: str, limit: int) -> bytes:
    """At most ``limit`` bytes of ``stream``; more is refused before it is all read."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise InputError(f"{source}: is larger than the {limit:,}-byte limit; "
                         "split it into several files")
    return data


def decode_text(data: bytes, source: str) -> str:
    """UTF-8 text, or one line saying why the file is not (binary, other encoding)."""
    nul = data.find(b"\x00")
    if nul >= 0:
        raise InputError(f"{source}: is a binary file (NUL byte at offset {nul:,}), "
                         "not YAML or JSON text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{source}: is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                         f"{exc.start:,}); save it as UTF-8") from None
    return text.removeprefix("\ufeff")


def read_text_file(path: str, limit: int = MAX_MANIFEST_BYTES) -> tuple[str, str]:
    """(text, source) of a file, ``-`` meaning stdin; InputError for anything unreadable."""
    if path == "-":
        return decode_text(read_bytes(sys.stdin.buffer, "<stdin>", limit), "<stdin>"), "<stdin>"
    try:
        with open(path, "rb") as fh:
            return decode_text(read_bytes(fh, path, limit), path), path
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None


def _not_json(loader: "BoundedLoader", node: yaml.Node) -> Any:
    tag = node.tag.replace("tag:yaml.org,2002:", "!!")
    raise ConstructorError(None, None, f"tag {tag} is not allowed: manifests and "
                           "configs hold JSON values only (strings, numbers, booleans, "
                           "null, lists, mappings)", node.start_mark)


def _bounded_int(loader: "BoundedLoader", node: yaml.ScalarNode) -> int:
    if len(str(node.value)) > MAX_INT_DIGITS:
        raise ConstructorError(None, None, f"integer of {len(str(node.value)):,} digits; "
                               f"at most {MAX_INT_DIGITS} are accepted", node.start_mark)
    return yaml.constructor.SafeConstructor.construct_yaml_int(loader, node)


_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when present


class BoundedLoader(_BaseLoader):
    """A safe loader whose composer (iterative, over libyaml's events when available)
    enforces the limits of this module; PyYAML's own composer is recursive and
    unbounded, and in pure Python it made a 10,000-object file take 15 s."""

    def check_node(self) -> bool:
        if self.check_event(yaml.StreamStartEvent):
            self.get_event()
        return not self.check_event(yaml.StreamEndEvent)

    def get_node(self) -> yaml.Node | None:
        return None if self.check_event(yaml.StreamEndEvent) else self.compose_document()

    def get_single_node(self) -> yaml.Node | None:
        self.get_event()  # stream start
        document = None
        if not self.check_event(yaml.StreamEndEvent):
            document = self.compose_document()
        if not self.check_event(yaml.StreamEndEvent):
            event = self.get_event()
            raise ComposerError("expected a single document in the stream",
                                document.start_mark if document else None,
                                "but found another document", event.start_mark)
        self.get_event()
        return document

    def compose_document(self) -> yaml.Node:
        self.get_event()  # document start
        anchors: dict[str, yaml.Node] = {}
        aliases = 0
        root: yaml.Node | None = None
        stack: list[list[Any]] = []  # [collection node, pending mapping key or None]
        while True:
            event = self.get_event()
            if isinstance(event, yaml.DocumentEndEvent):
                break
            if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                stack.pop()[0].end_mark = event.end_mark
                continue
            if isinstance(event, yaml.AliasEvent):
                aliases += 1
                if aliases > MAX_ALIASES:
                    raise ComposerError(None, None, f"more than {MAX_ALIASES} aliases in one "
                                        "document; write the values out", event.start_mark)
                if event.anchor not in anchors:
                    raise ComposerError(None, None, f"found undefined alias {event.anchor!r}",
                                        event.start_mark)
                node = anchors[event.anchor]
            else:
                node = self._node(event)
                if event.anchor is not None:
                    anchors[event.anchor] = node
            if not stack:
                root = node
            elif isinstance(stack[-1][0], yaml.SequenceNode):
                stack[-1][0].value.append(node)
            elif stack[-1][1] is None:
                stack[-1][1] = node
            else:
                stack[-1][0].value.append((stack[-1][1], node))
                stack[-1][1] = None
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                stack.append([node, None])
                if len(stack) > MAX_DEPTH:
                    raise ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep",
                                        event.start_mark)
        assert root is not None
        check_expansion(root)
        return root

    def _node(self, event: yaml.Event) -> yaml.Node:
        tag = event.tag
        if isinstance(event, yaml.ScalarEvent):
            if tag is None or tag == "!":
                tag = self.resolve(yaml.ScalarNode, event.value, event.implicit)
            return yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark,
                                   style=event.style)
        kind = yaml.SequenceNode if isinstance(event, yaml.SequenceStartEvent) else yaml.MappingNode
        if tag is None or tag == "!":
            tag = self.resolve(kind, None, event.implicit)
        return kind(tag, [], event.start_mark, None, flow_style=event.flow_style)


# Implicit timestamps stay strings (as kubectl's YAML-to-JSON keeps them).
BoundedLoader.add_constructor("tag:yaml.org,2002:timestamp",
                              yaml.constructor.SafeConstructor.construct_yaml_str)
BoundedLoader.add_constructor("tag:yaml.org,2002:int", _bounded_int)
for _tag in ("binary", "set", "omap", "pairs"):
    BoundedLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _not_json)


def check_expansion(root: yaml.Node) -> None:
    """Refuse recursive aliases and documents whose expansion exceeds MAX_NODES or MAX_DEPTH.

    Shared nodes are measured once (memoized), so this is linear in the composed graph.
    """
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, height)
    busy: set[int] = set()

    def measure(node: yaml.Node, depth: int) -> tuple[int, int]:
        known = sizes.get(id(node))
        if known is None:
            if id(node) in busy:
                raise ComposerError(None, None, "an alias refers to a node that contains it "
                                    "(recursive alias)", node.start_mark)
            busy.add(id(node))
            count, height = 1, 0
            children: list[yaml.Node] = []
            if isinstance(node, yaml.MappingNode):
                children = [n for pair in node.value for n in pair]
            elif isinstance(node, yaml.SequenceNode):
                children = list(node.value)
            for child in children:
                c, h = measure(child, depth + 1)
                count, height = count + c, max(height, h + 1)
                if count > MAX_NODES:
                    break
            busy.discard(id(node))
            known = sizes[id(node)] = (count, height)
        if known[0] > MAX_NODES:
            raise ComposerError(None, None, f"expands to more than {MAX_NODES:,} values "
                                "(aliases of aliases); write the values out", root.start_mark)
        if depth + known[1] > MAX_DEPTH:
            raise ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep once "
                                "aliases are expanded", node.start_mark)
        return known

    measure(root, 0)


def iter_documents(loader: BoundedLoader) -> Iterator[yaml.Node | None]:
    """Composed documents one by one; None for an empty one (``---`` with nothing after)."""
    while loader.check_node():
        node = loader.get_node()
        empty = isinstance(node, yaml.ScalarNode) and node.value == "" and not node.style
        yield None if empty else node
