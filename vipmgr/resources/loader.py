"""Reading multi-document YAML/JSON files into manifests that remember their line numbers.

Syntax errors name the file, line and column; duplicate keys (which YAML
silently resolves to the last one) are errors; validation problems are
mapped back to the line of the field they name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import yaml

from vipmgr.resources.errors import Problem, Problems, ValidationError
from vipmgr.resources.models import Resource, cross_object_problems, parse_manifest


@dataclass
class LoadedDoc:
    source: str
    index: int  # 1-based position in the file
    data: Any
    lines: dict[str, int] = field(default_factory=dict)  # field path -> 1-based line

    def line_of(self, path: str) -> int | None:
        """The line of ``path`` or of its nearest ancestor present in the file."""
        while path:
            if path in self.lines:
                return self.lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return self.lines.get("")

    def where(self, path: str) -> str:
        line = self.line_of(path)
        return f"{self.source}:{line}" if line else f"{self.source} (document {self.index})"


def _walk(node: yaml.Node, path: str, lines: dict[str, int], problems: Problems, source: str) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = f"{path}.{key}" if path else key
            if key in seen:
                problems.add(child, "is given twice in the same mapping; keep one",
                             f"{source}:{key_node.start_mark.line + 1}")
            seen.add(key)
            lines[child] = key_node.start_mark.line + 1
            _walk(value_node, child, lines, problems, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, f"{path}[{i}]", lines, problems, source)


def load_documents(text: str, source: str) -> list[LoadedDoc]:
    """All non-empty documents of ``text``; raises ValidationError on syntax problems."""
    problems = Problems()
    docs: list[LoadedDoc] = []
    loader = yaml.SafeLoader(text)
    try:
        index = 0
        while loader.check_node():
            node = loader.get_node()
            index += 1
            if node is None:
                continue
            lines: dict[str, int] = {}
            _walk(node, "", lines, problems, source)
            docs.append(LoadedDoc(source, index, loader.construct_document(node), lines))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ValidationError([Problem("<yaml>", f"{exc.problem or exc.context}", where)]) from None
    finally:
        loader.dispose()
    problems.raise_if_any()
    return docs


def parse_documents(docs: Iterable[LoadedDoc]) -> list[tuple[LoadedDoc, Resource]]:
    """Validate every document and the set as a whole; all problems or all objects."""
    problems = Problems()
    parsed: list[tuple[LoadedDoc, Resource]] = []
    seen: dict[tuple[str, str], LoadedDoc] = {}
    for doc in docs:
        local = Problems()
        obj = parse_manifest(doc.data, local)
        for p in local.items:
            problems.add(p.path, p.message, doc.where(p.path))
        if obj is None or local:
            continue
        ident = (obj.KIND, obj.key_name)
        if ident in seen:
            problems.add("metadata.name", f"{obj.KIND} {obj.key_name!r} appears twice in this input "
                         f"(first at {seen[ident].where('metadata.name')}); keep one",
                         doc.where("metadata.name"))
            continue
        seen[ident] = doc
        parsed.append((doc, obj))
    origin = {id(obj): doc for doc, obj in parsed}
    for p in cross_object_problems([o for _, o in parsed],
                                   lambda o: origin[id(o)].where("spec")).items:
        problems.add(p.path, p.message, p.source)
    problems.raise_if_any()
    return parsed
