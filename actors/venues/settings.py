"""Typed venue settings: one frozen dataclass per venue, built from its ``venues.<venue>`` yaml section.

Every key a venue's yaml may set is a field with a default, so a key the code reads can always be
set, and a key the code does not know is refused. Build them with ``get_venue(name).settings(raw)``:
it fills the common connection keys from the venue's declaration (``Venue.connections``) and calls
:func:`build_settings`, which turns the raw mapping into the dataclass and raises
:class:`~actors.errors.ConfigError` naming ``venues.<venue>.<key>`` for an unknown key or a bad value. Durations are written like ``1430m`` or ``20s`` (type :data:`Seconds`)
and stored as seconds; a field made with :func:`choice` accepts only its listed values.
The dataclasses are plain data: picklable, safe to hand to Ray actors.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Mapping, NewType

from actors.errors import ConfigError
from actors.storage.layout import LayoutError, parse_duration

#: a duration in seconds; the yaml may write it as ``250ms``, ``20s``, ``1430m``, ``1h`` or a number
Seconds = NewType("Seconds", float)


def choice(default: Any, *allowed: Any) -> Any:
    """A setting that accepts only ``allowed`` values (the default among them)."""
    return dataclasses.field(default=default, metadata={"choices": tuple(allowed)})


@dataclass(frozen=True)
class VenueSettings:
    """Keys every venue's yaml may set (a venue's own dataclass adds its protocol's keys)."""

    market: str = "perp"
    ws_base: str = ""                          # e.g. wss://fstream.binance.com
    rest_base: str = ""                        # e.g. https://fapi.binance.com
    max_streams_per_connection: int = 100      # subscriptions (streams, topics, channels) per socket
    max_lifetime: Seconds | None = None        # planned reconnect after this long (None: never)
    heartbeat_interval: Seconds | None = None  # client heartbeat cadence (None: the server pings)
    # (a venue's ``Venue.settings`` fills ws_base .. heartbeat_interval from its declaration)


def build_settings(cls: type[VenueSettings], raw: Mapping[str, Any] | None, prefix: str) -> VenueSettings:
    """``cls`` from a yaml section; ConfigError naming ``<prefix>.<key>`` on an unknown key or bad value."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in (raw or {}).items():
        if key not in known:
            raise ConfigError(f"{prefix}.{key}: unknown key (allowed: {', '.join(known)})")
        values[key] = _coerce(value, hints[key], known[key].metadata.get("choices"), f"{prefix}.{key}")
    return cls(**values)


def _coerce(value: Any, hint: Any, choices: tuple | None, key: str) -> Any:
    """``value`` as the field's type (checked against ``choices``), or ConfigError."""
    kinds = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None:
        if type(None) in kinds or (choices and None in choices):
            return None
        raise ConfigError(f"{key}: must be set (null is not allowed)")
    kind = next(k for k in kinds if k is not type(None))
    try:
        if kind is Seconds:
            result: Any = parse_duration(value, key)
        elif kind is bool or kind is str:
            if not isinstance(value, kind):
                raise ValueError
            result = value
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise ValueError
            result = int(value)
        elif kind is float:
            if isinstance(value, bool):
                raise ValueError
            result = float(value)
        elif typing.get_origin(kind) is dict:
            if not isinstance(value, Mapping):
                raise ValueError
            result = {str(k): float(v) for k, v in value.items()}
        else:                                    # pragma: no cover - a field type this builder lacks
            raise TypeError(f"{key}: unsupported setting type {kind!r}")
    except LayoutError as exc:
        raise ConfigError(str(exc)) from None
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: {value!r} is not a {getattr(kind, '__name__', kind)}") from None
    if choices and result not in choices:
        raise ConfigError(f"{key}: {value!r} (allowed: {', '.join(map(str, choices))})")
    return result
