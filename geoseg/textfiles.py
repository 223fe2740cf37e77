"""Small text files users hand geoseg (job files, lists of scenes, class tables): read bounded.

A file named where a text file belongs may be anything: a FIFO, ``/dev/zero``, a multi-gigabyte log, or
a YAML "billion laughs" whose aliases expand 574 bytes into gigabytes. :func:`read_text` reads only
regular files up to a size, and :func:`load_yaml` refuses a document whose aliases would expand it beyond
:data:`MAX_YAML_NODES` values, before anything is built from it.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import yaml

from geoseg.errors import ConfigError

#: The most values a YAML document may stand for once its aliases are written out.
MAX_YAML_NODES = 100_000


def read_text(path: Path, limit: int, what: str) -> str:
    """The UTF-8 text of the regular file ``path`` of at most ``limit`` bytes; :class:`ConfigError` otherwise."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path}: {what} is not a regular file; give a text file")
        if info.st_size > limit:
            raise ConfigError(f"{path}: {what} is {info.st_size:,} bytes, more than the {limit:,} geoseg reads; "
                              f"split it")
        return path.read_bytes()[:limit].decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: {what} cannot be read ({exc.strerror}); check the path") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: {what} is not UTF-8 text; give a text file") from None


def load_yaml(text: str, path: Path, what: str) -> Any:
    """``yaml.safe_load(text)``, refusing documents whose aliases expand beyond :data:`MAX_YAML_NODES` values
    (:class:`ConfigError`); YAML syntax errors are raised as ``yaml.YAMLError``."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_YAML_NODES:
            raise ConfigError(f"{path}: {what} expands to over {MAX_YAML_NODES:,} values through YAML aliases "
                              f"(&anchor / *alias); write it out without nesting aliases")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, seen: dict[int, int]) -> int:
    """How many nodes ``node`` stands for once every alias is written out (shared nodes counted each time)."""
    key = id(node)
    if key in seen:
        return seen[key]
    seen[key] = MAX_YAML_NODES + 1  # a node that contains itself expands for ever
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, seen) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, seen) + _expanded_size(v, seen) for k, v in node.value)
    else:
        size = 1
    seen[key] = min(size, MAX_YAML_NODES + 1)
    return seen[key]
