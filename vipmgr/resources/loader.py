"""Reading multi-document YAML/JSON files into manifests that remember their line numbers.

Syntax errors name the file, line and column; duplicate keys (which YAML
silently resolves to the last one) are errors; validation problems are
mapped back to the line of the field they name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import yaml

from vipmgr.resources.errors import Problem, Problems, ValidationError
from vipmgr.resources.crosscheck import check_objects
from vipmgr.resources.models import Resource, parse_manifest
from vipmgr.resources.textinput import BoundedLoader, iter_documents


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
    """All non-empty documents of ``text``; raises ValidationError on syntax problems
    and on input beyond the limits of :mod:`vipmgr.resources.textinput`."""
    problems = Problems()
    docs: list[LoadedDoc] = []
    loader = None
    try:
        loader = BoundedLoader(text)
        for index, node in enumerate(iter_documents(loader), 1):
            if node is None:
                continue
            lines: dict[str, int] = {}
            _walk(node, "", lines, problems, source)
            docs.append(LoadedDoc(source, index, loader.construct_document(node), lines))
    except yaml.YAMLError as exc:
        raise ValidationError([yaml_problem(exc, source)]) from None
    finally:
        if loader is not None:
            loader.dispose()
    problems.raise_if_any()
    return docs


def yaml_problem(exc: yaml.YAMLError, source: str) -> Problem:
    """A YAML error as file:line:column plus what is wrong."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context
    else:  # ReaderError: a character YAML does not allow, e.g. a control character
        mark, what = None, str(exc).splitlines()[0]
        if isinstance(exc, yaml.reader.ReaderError) and isinstance(exc.character, int):
            what = (f"character 0x{exc.character:02x} at offset {exc.position:,} is not "
                    "allowed in YAML")
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
    return Problem("<yaml>", str(what), where)


def parse_documents(docs: Iterable[LoadedDoc], *,
                    across: bool = True) -> list[tuple[LoadedDoc, Resource]]:
    """Validate every document and (``across``) the set as a whole; all problems or all
    objects. ``delete -f`` passes across=False: deleting a conflict must stay possible."""
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
    if across and not problems:
        where = where_in(parsed)
        problems.items += check_objects([o for _, o in parsed], where=where).errors
    problems.raise_if_any()
    return parsed


def where_in(parsed: Iterable[tuple[LoadedDoc, Resource]]) -> Callable[[Resource, str], str]:
    """``where(obj, path)`` for objects read from files: the file and line of the field."""
    origin = {id(obj): doc for doc, obj in parsed}
    return lambda obj, path: origin[id(obj)].where(path)
