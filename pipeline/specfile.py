"""Reading a study spec file: the bytes a spec may hold, and YAML that is safe to walk.

:func:`read_spec_file` returns the document a spec file holds (:func:`read_spec_text` the
one a spec's text holds), or raises the one-line :class:`~pipeline.specerrors.SpecError`
naming the file; :func:`apply_overrides` applies the command line's ``--set KEY=VALUE``;
``pipeline.studyspec`` validates what they return. Nothing is written.
"""

from __future__ import annotations

import copy
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from pipeline.specerrors import SpecError

MAX_SPEC_BYTES = 1_000_000
"""Largest spec file read (a spec is a page of YAML)."""
MAX_SPEC_VALUES = 100_000
"""Most values (scalars, lists, mappings) a spec may hold once YAML aliases are expanded."""
MAX_OVERRIDE_CHARS = 10_000
"""Longest ``--set`` value."""
_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def read_spec_file(path: str | Path) -> object:
    """The YAML document in a spec file (:func:`load_yaml`), not yet validated.

    The file is looked at (``os.stat``) before it is opened: only a regular file of at most
    :data:`MAX_SPEC_BYTES` is read, so a FIFO, a device (``/dev/zero``), a directory or a
    huge file is refused at once and never hangs or fills memory.

    Raises:
        SpecError: a missing or unreadable file, one that is not a regular file, one too
            large, binary or not UTF-8, bad YAML (duplicate keys included), or YAML whose
            aliases expand too far (one line, naming the file).
    """
    source = str(path)
    try:
        _check_regular(os.stat(path), source)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
        with os.fdopen(fd, "rb") as file:
            _check_regular(os.fstat(file.fileno()), source)  # the file opened is the one seen
            raw = file.read(MAX_SPEC_BYTES + 1)
    except SpecError:
        raise
    except FileNotFoundError:
        raise SpecError(f"{source}: file not found") from None
    except IsADirectoryError:
        raise SpecError(f"{source}: is a directory, not a spec file") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        what = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise SpecError(f"{source}: cannot read: {what}".replace("\n", " ")) from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(f"{source}: larger than {MAX_SPEC_BYTES} bytes; not a study spec")
    if b"\x00" in raw:
        raise SpecError(f"{source}: binary file (it contains a NUL byte); a spec is YAML text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{source}: not UTF-8 text (byte offset {exc.start})") from None
    return read_spec_text(text, source)


_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _check_regular(info: os.stat_result, source: str) -> None:
    """Refuse what is not a regular file of at most MAX_SPEC_BYTES, before reading it."""
    if stat.S_ISDIR(info.st_mode):
        raise SpecError(f"{source}: is a directory, not a spec file")
    if not stat.S_ISREG(info.st_mode):
        kind = next((words for test, words in _KINDS if test(info.st_mode)), "not a file")
        raise SpecError(f"{source}: is {kind}, not a regular file; a spec is a YAML file")
    if info.st_size > MAX_SPEC_BYTES:
        raise SpecError(
            f"{source}: larger than {MAX_SPEC_BYTES} bytes ({info.st_size}); not a study spec"
        )


class _SpecLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with the same key twice (YAML says keys
    are unique; PyYAML would keep the last one silently). Keys merged in with ``<<`` may
    be overridden, as YAML's merge key allows."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:  # unhashable: the base class refuses it
                    continue
                seen[key] = line if first is None else first
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"duplicate key {_short(key)} (first at line {first}); a key may be"
                        " given once in a mapping",
                        key_node.start_mark,
                    )
        return super().construct_mapping(node, deep=deep)


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys: what it does, with
    :class:`_SpecLoader` (a ``SafeLoader``: no Python tags) for ``SafeLoader``."""
    loader = _SpecLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_spec_text(text: str, source: str) -> object:
    """The YAML document in a spec's text (``yaml.safe_load``), not yet validated: the
    checks :func:`read_spec_file` makes of a file once it is decoded.

    Raises:
        SpecError: text too large or binary, bad YAML, or YAML whose aliases expand too far
            (one line, naming ``source``).
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SPEC_BYTES:
        raise SpecError(f"{source}: larger than {MAX_SPEC_BYTES} bytes; not a study spec")
    if "\x00" in text:
        raise SpecError(f"{source}: binary file (it contains a NUL byte); a spec is YAML text")
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        what = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"{source}: invalid YAML{where}: {what}".replace("\n", " ")) from None
    except RecursionError:
        raise SpecError(f"{source}: invalid YAML: nested too deeply") from None
    except ValueError as exc:  # a scalar YAML's resolver matched but Python cannot make
        what = "an integer too long to read" if "digits" in str(exc) else str(exc)
        raise SpecError(f"{source}: invalid YAML: {what}".replace("\n", " ")) from None
    check_expansion(data, source)
    return data


def check_expansion(data: object, source: str) -> None:
    """Refuse YAML whose aliases expand to a huge (an alias bomb) or a recursive document.

    ``yaml.safe_load`` shares aliased nodes, so such a document is small in memory, but
    anything that walks it (validation, error messages) would see every expanded value.

    Raises:
        SpecError: more than :data:`MAX_SPEC_VALUES` values once expanded, a node that
            contains itself, or nesting too deep to walk.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: object) -> int:
        if not isinstance(node, dict | list):
            return 1
        ident = id(node)
        if ident in sizes:
            return sizes[ident]
        if ident in open_nodes:
            raise SpecError(f"{source}: invalid YAML: an alias refers to a node that contains it")
        open_nodes.add(ident)
        children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_SPEC_VALUES:
                break
        open_nodes.discard(ident)
        sizes[ident] = total
        return total

    try:
        total = size(data)
    except RecursionError:
        raise SpecError(f"{source}: invalid YAML: nested too deeply") from None
    if total > MAX_SPEC_VALUES:
        raise SpecError(
            f"{source}: invalid YAML: more than {MAX_SPEC_VALUES} values once aliases are"
            " expanded (an alias bomb?)"
        )


MAX_OVERRIDES = 64
"""Most ``--set`` overrides one command takes."""


def apply_overrides(data: object, overrides: Sequence[str]) -> object:
    """The spec document with ``--set KEY=VALUE`` overrides applied, in order.

    ``KEY`` is a dotted path into the document's mappings (``trial.max_epochs``,
    ``space.seed``, ``name``); ``VALUE`` is YAML (``5``, ``[0, 1, 2]``, ``null``), so an
    override says what the same line in the file would. A missing mapping on the way is
    created; the result is validated like a file, so an override changes the spec hash as an
    edit does. The input is not changed.

    Raises:
        SpecError: a malformed override (one line naming it and what is allowed).
    """
    if len(overrides) > MAX_OVERRIDES:
        raise SpecError(f"--set: at most {MAX_OVERRIDES} overrides, got {len(overrides)}")
    doc = copy.deepcopy(data)
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(_KEY_RE.fullmatch(p) for p in parts):
            raise SpecError(
                f"--set {item!r}: must be KEY=VALUE with KEY a dotted path of names, "
                "e.g. trial.max_epochs=5"
            )
        if len(text) > MAX_OVERRIDE_CHARS:
            raise SpecError(f"--set {key}: the value is longer than {MAX_OVERRIDE_CHARS} chars")
        try:
            value = load_yaml(text) if text.strip() else None
        except yaml.YAMLError as exc:
            what = getattr(exc, "problem", None) or "not YAML"
            raise SpecError(f"--set {key}: the value is not YAML: {what}") from None
        if not isinstance(doc, dict):
            raise SpecError(f"--set {key}: the spec is not a mapping")
        node: dict[str, Any] = doc
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise SpecError(f"--set {key}: {where} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return doc


def overridden_text(data: object, source: str, overrides: Sequence[str]) -> str:
    """The spec text stored for a study run with overrides: the document as YAML, headed by
    where it came from (the file's comments are not kept)."""
    head = f"# {source} with " + " ".join(f"--set {o}" for o in overrides)
    return head + "\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
