"""The one config base every stage's config derives from, and the one way overrides reach a config.

Strict on purpose: a misspelled key (in a `--config` JSON, a `--set`, or code) and an out-of-range value
are errors naming the key, never silently ignored. A partial section keeps the defaults of the keys it
leaves out, as its parent declared them (`{"sft": {"loop": {"epochs": 0.5}}}` keeps SFT's lr 1e-3, not
`LoopConfig`'s 3e-3).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

C = TypeVar("C", bound="Config")


class ConfigError(ValueError):
    """A config that does not validate; the message names the source and each offending key."""


class Config(BaseModel):
    """Base of every config: unknown keys and invalid assignments are refused."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    # a key a release renamed → its dotted place now: still read (saved runs, old config files), never written
    renamed_keys: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _keep_declared_defaults(cls, data: Any) -> Any:
        """Move renamed keys to their place, then fill a partial sub-section from the default its parent
        declares, not from its class's defaults."""
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for old, new in cls.renamed_keys.items():
            if old in out:
                *path, leaf = new.split(".")
                node = {leaf: out.pop(old)}
                for part in reversed(path):
                    node = {part: node}
                out = merge(out, node)
        for name, field in cls.model_fields.items():
            if isinstance(out.get(name), dict) and not field.is_required():
                default = field.get_default(call_default_factory=True)
                if isinstance(default, Config):
                    out[name] = merge(default.model_dump(), out[name])
        return out

    def replace(self: C, **changes: Any) -> C:
        """A copy with these fields changed, validated as a config file would be (`model_copy` is not)."""
        return build(type(self), self.model_dump(), changes, source=type(self).__name__)


def merge(base: dict, over: dict) -> dict:
    """`over` on top of `base`, recursing into dicts both hold."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """`KEY=VALUE` strings (VALUE as JSON when it parses, else a string) → {dotted key: value}."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. loop.lr=1e-3")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def build(cls: type[C], data: dict | None = None, overrides: dict[str, Any] | None = None,
          source: str = "config") -> C:
    """Validate `data` with dotted-key `overrides` applied ({"loop.lr": 1e-3}).
    Raises ConfigError naming `source` and the keys pydantic refused."""
    data = json.loads(json.dumps(data or {}, default=str))
    for key, value in (overrides or {}).items():
        node, parts = data, key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{source}: {'.'.join(parts[:-1])} is not a section, cannot set {key}")
            node = child
        node[parts[-1]] = value
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{source}: {describe(e)}") from None


def field_paths(config: Config, name: str, prefix: str = "") -> list[str]:
    """Dotted paths of every field called `name` in `config` and its sub-configs (`--seed` sets every
    `seed`: the stages keep one each, so a stage can be re-seeded alone)."""
    out = []
    for field in type(config).model_fields:
        value = getattr(config, field)
        if field == name:
            out.append(prefix + field)
        elif isinstance(value, Config):
            out += field_paths(value, name, f"{prefix}{field}.")
    return out


def describe(e: ValidationError) -> str:
    """One line per refused key: `key.path: message (got value)`."""
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
                     + (f" (got {err['input']!r})" if err["type"] != "missing" and not isinstance(err["input"], dict)
                        else "") for err in e.errors())
