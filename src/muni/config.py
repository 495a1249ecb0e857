"""Typed dataclass configs: JSON round trip and ``key=value`` overrides.

Every config is a plain ``@dataclass``; nested configs are dataclass fields. The CLI's
``--set key=value`` (dotted keys reach nested fields) goes through `apply_overrides`, which
refuses unknown keys, values of the wrong type and non-finite numbers with a `ConfigError`
naming them. Each config checks its ranges when it is built (`check_ranges` in its
``__post_init__``), so a bad value is refused before any data loads or any step runs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from typing import Any, TypeVar

from muni.errors import ConfigError

T = TypeVar("T")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-serialisable dict of a dataclass config (nested dataclasses become dicts)."""
    return dataclasses.asdict(cfg)


def to_json(cfg: Any) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=True)


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert `value` (JSON value or string from the CLI) to type `tp`, or raise ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        if len([a for a in args if a is not type(None)]) == 1:  # X | None: X's own message
            return _coerce(value, next(a for a in args if a is not type(None)), key)
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: cannot interpret {value!r} as {tp}")
    if origin is typing.Literal:
        for a in args:
            try:
                v = _coerce(value, type(a), key)
            except ConfigError:
                continue
            if v == a:
                return v
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v != ""] if value else []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        inner = args[0] if args else str
        out = [_coerce(v, inner, key) for v in value]
        return tuple(out) if origin is tuple else out
    if origin is dict or tp is dict:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{key}: expected a JSON object, got {value!r}") from e
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a JSON object, got {value!r}")
        if len(args) == 2:  # dict[K, V]: coerce every entry
            return {_coerce(k, args[0], key): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            return from_dict(tp, value, prefix=key + ".")
        raise ConfigError(f"{key}: expected a section, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value, 0)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def check_ranges(section: str, cfg: Any, rules: list[tuple[str, bool, str]]) -> None:
    """Raise `ConfigError` naming the first field whose rule fails.

    Parameters
    ----------
    section : str
        Prefix of the field names in messages, e.g. ``"model."``.
    cfg : dataclass instance
        The config, for the offending value.
    rules : list of (field, ok, wanted)
        ``ok`` the rule's outcome, ``wanted`` what the field must be ("an integer >= 1").

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class C:
    ...     n: int = 0
    >>> check_ranges("model.", C(), [("n", C().n >= 1, ">= 1")])
    Traceback (most recent call last):
    ...
    muni.errors.ConfigError: model.n must be >= 1, got 0
    """
    for name, ok, want in rules:
        if not ok:
            raise ConfigError(f"{section}{name} must be {want}, got {getattr(cfg, name)!r}")


def from_dict(cls: type[T], d: dict[str, Any], *, prefix: str = "") -> T:
    """Build dataclass `cls` from a dict; unknown keys raise ConfigError."""
    if not isinstance(d, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a JSON object")
    hints = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(prefix + u for u in unknown)}; "
                          f"known: {', '.join(sorted(prefix + n for n in names))}")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in d.items()}
    return cls(**kwargs)


def from_json(cls: type[T], text: str) -> T:
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"config is not valid JSON: {e}") from None
    return from_dict(cls, d)


def _json_or_str(value: str) -> Any:
    """A CLI value as JSON where it parses (0.25, true, [1, 2]), else the string itself."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def apply_overrides(cfg: T, overrides: list[str] | tuple[str, ...]) -> T:
    """Return a copy of `cfg` with ``key=value`` overrides applied (dotted keys for nesting;
    ``field.name=value`` sets one entry of a dict field).

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class C:
    ...     lr: float = 1e-3
    >>> apply_overrides(C(), ["lr=0.01"]).lr
    0.01
    """
    d = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        node, cls = d, type(cfg)
        for i, p in enumerate(parts):
            names = {f.name for f in dataclasses.fields(cls)}
            if p not in names:
                where = ".".join(parts[:i]) or "config"
                raise ConfigError(f"unknown config key {key!r} (no field {p!r} in {where}); "
                                  f"known: {', '.join(sorted(names))}")
            tp = _field_types(cls)[p]
            if i == len(parts) - 2 and (tp is dict or typing.get_origin(tp) is dict):
                # one entry of a dict field, e.g. model.kind_weights.audio=0.25
                node[p] = _coerce({**node[p], parts[-1]: _json_or_str(value)}, tp, ".".join(parts[:-1]))
                break
            if i < len(parts) - 1:
                if not dataclasses.is_dataclass(tp):
                    raise ConfigError(f"config key {'.'.join(parts[:i + 1])!r} is not a section")
                node, cls = node[p], tp
            else:
                if dataclasses.is_dataclass(tp):
                    raise ConfigError(f"config key {key!r} is a section; set one of its fields "
                                      f"({', '.join(f.name for f in dataclasses.fields(tp))})")
                node[p] = _coerce(value, tp, key)
    return from_dict(type(cfg), d)


def config_hash(cfg: Any, *extra: Any) -> str:
    """A short stable hash of a config (and optional extra JSON-able items)."""
    import hashlib

    blob = json.dumps([to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg, *extra],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
