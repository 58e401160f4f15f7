"""YAML for configs from elsewhere: no aliases, bounded nesting, bounded size.

``yaml.safe_load`` builds no Python objects, but it still expands aliases (a 400-byte
"billion laughs" file becomes gigabytes) and recurses once per nesting level (20,000
nested ``[`` end in a RecursionError). A config needs neither, so both are refused::

    a: &a [x, x, x, x, x, x, x, x, x]
    b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]   # -> YAMLError: aliases are not allowed
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

MAX_DEPTH = 64
MAX_BYTES = 4 * 2**20  # a config is a few KB


class UnsafeYAML(yaml.YAMLError):
    """An alias or nesting beyond ``MAX_DEPTH``; ``problem`` says which, like PyYAML's."""

    def __init__(self, problem: str, mark: Any = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses aliases and repeated keys, counts nesting while composing,
    and reads ``1e-4`` as the number YAML 1.2 (and every user) means, not as text."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise UnsafeYAML("aliases (*name) are not allowed in a prunecli config", mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise UnsafeYAML(
                    f"nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        """``sparsity: 0.5`` then ``sparsity: 0.9`` in one section: PyYAML keeps the last
        silently; a config that says two things is refused, naming the line."""
        if not isinstance(node, yaml.MappingNode):  # ``!!map [1, 2]``: PyYAML's own error
            return super().construct_mapping(node, deep)
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<:``, YAML 1.1's alias helper
                raise yaml.constructor.ConstructorError(
                    None, None, "merge keys (<<) are not allowed in a prunecli config",
                    key_node.start_mark,
                )  # fmt: skip
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark
                )
            seen.add(key) if isinstance(key, str | int | float | bool) else None
        return super().construct_mapping(node, deep)


# YAML 1.1 (PyYAML) needs a dot in a float: ``1e-4`` would be the string "1e-4".
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load(text: str) -> Any:
    """Parse one YAML document safely (raises ``yaml.YAMLError``, ``UnsafeYAML`` included)."""
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_text(path: Path) -> str:
    """A config file's text: a regular file of at most ``MAX_BYTES`` (a FIFO or a device
    would block or never end). Raises OSError / ValueError with the reason."""
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise ValueError("not a regular file")
    if info.st_size > MAX_BYTES:
        raise ValueError(f"{info.st_size:,} bytes, more than a config's limit of {MAX_BYTES:,}")
    return path.read_text(encoding="utf-8")
