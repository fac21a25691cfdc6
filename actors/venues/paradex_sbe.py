"""Paradex SBE market data: decoder and encoder of the two templates we archive (plain logic).

Schema: tradeparadex/paradex-py ``paradex_py/api/sbe/paradex_1_0.xml`` (schema id 1, version 1
negotiated with ``?sbeSchemaId=1&sbeSchemaVersion=1``); the notes this module relies on are in
``docs/protocols/paradex.md``. Little-endian throughout.

* Every message: an 8-byte header ``blockLength u16, templateId u16, schemaId u16, version u16``,
  the fixed root block (``blockLength`` bytes), then repeating groups, then variable data. The
  groups are found with the header's ``blockLength``, never with our own block size: fields a
  later version appends make the block longer, and the bytes we do not know are skipped.
* A group: ``blockLength u16, numInGroup u16``, then ``numInGroup`` entries of ``blockLength``
  bytes. A ``varString8``: ``length u8`` and that many UTF-8 bytes.
* Prices and sizes: ``int64`` mantissas, constant exponent -8 (not on the wire); null is
  ``INT64_MIN``. Times: ``int64`` microseconds since the epoch.
* Template 1 ``TradeEvent`` (50-byte block), 3 ``BookEvent`` (89-byte block, groups ``bids``
  and ``asks``). Any other template id decodes to None (skipped, not an error).

A frame that does not follow the schema (truncated, a block shorter than the template's, a null
in a required field) raises :class:`SbeError` naming what is wrong.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

SCHEMA_ID = 1
SCHEMA_VERSION = 1                     # what we negotiate (every Paradex environment caps at 1)
NEGOTIATION = f"sbeSchemaId={SCHEMA_ID}&sbeSchemaVersion={SCHEMA_VERSION}"
TRADE_EVENT, BBO_EVENT, BOOK_EVENT = 1, 2, 3

HEADER = struct.Struct("<HHHH")        # blockLength, templateId, schemaId, version
GROUP = struct.Struct("<HH")           # blockLength, numInGroup
LEVEL = struct.Struct("<qq")           # price, size
TRADE_BLOCK = struct.Struct("<qqqBqqqB")   # ts, seq, tradeId, side, price, size, createdAt, tradeType: 50 bytes
BOOK_BLOCK = struct.Struct("<qqB9q")       # ts, seq, pkgType, nine nullable prices/sizes: 89 bytes

NULL = -(2 ** 63)                      # INT64_MIN: a null price / size
SCALE = 100_000_000                    # 10 ** 8: the constant exponent -8
BUY, SELL = 1, 2                       # Side (254: not representable)
SNAPSHOT, DELTA = 0, 1                 # PkgType
FILL_TYPES = {1: "FILL", 2: "LIQUIDATION", 3: "UNWIND_TRANSFER", 4: "SETTLE_MARKET", 5: "RPI", 6: "BLOCK_TRADE"}
FILL_TYPE_IDS = {name: code for code, name in FILL_TYPES.items()}


class SbeError(ValueError):
    """A binary frame that does not follow the SBE schema."""


@dataclass(slots=True)
class Header:
    """The message header."""

    block_length: int
    template_id: int
    schema_id: int
    version: int


@dataclass(slots=True)
class TradeEvent:
    """Template 1 (``trades.{market}``); prices and sizes as mantissas (exponent -8)."""

    ts_us: int                 # feed publish time
    seq: int
    trade_id: int
    side: int                  # BUY 1, SELL 2 (aggressor), 254 not representable
    price: int
    size: int
    created_at_us: int         # matching engine time
    trade_type: int            # FillType code (FILL_TYPES)
    market: str

    @property
    def trade_type_name(self) -> str:
        """``FILL``, ``LIQUIDATION``, ... (an unlisted code as ``TYPE_<n>``)."""
        return FILL_TYPES.get(self.trade_type, f"TYPE_{self.trade_type}")


@dataclass(slots=True)
class BookEvent:
    """Template 3 (``order_book.{market}...``): a SNAPSHOT or a DELTA (size 0 removes a level)."""

    ts_us: int
    seq: int
    pkg_type: int              # SNAPSHOT 0, DELTA 1
    bids: list[tuple[int, int]] = field(default_factory=list)     # (price, size) mantissas
    asks: list[tuple[int, int]] = field(default_factory=list)
    market: str = ""
    # the nullable best-price fields, in block order (None: null)
    best_bid_price: int | None = None
    best_bid_size: int | None = None
    best_ask_price: int | None = None
    best_ask_size: int | None = None
    relative_spread: int | None = None
    best_bid_api_price: int | None = None
    best_bid_api_size: int | None = None
    best_ask_api_price: int | None = None
    best_ask_api_size: int | None = None


BEST_FIELDS = ("best_bid_price", "best_bid_size", "best_ask_price", "best_ask_size", "relative_spread",
               "best_bid_api_price", "best_bid_api_size", "best_ask_api_price", "best_ask_api_size")
NAMES = {TRADE_EVENT: ("TradeEvent", TRADE_BLOCK.size), BOOK_EVENT: ("BookEvent", BOOK_BLOCK.size)}


# -- numbers ---------------------------------------------------------------------------------
def to_float(mantissa: int | None) -> float | None:
    """A mantissa as a float (``m / 10**8``, exact for the decimals it stands for); None for null."""
    return None if mantissa is None or mantissa == NULL else mantissa / SCALE


def mantissa(text: str) -> int:
    """A decimal string (at most 8 decimals) as its exponent -8 mantissa, exactly."""
    sign = -1 if text.startswith("-") else 1
    whole, _, frac = text.lstrip("+-").partition(".")
    if len(frac) > 8 or not (whole or frac):
        raise ValueError(f"{text!r} is not a decimal with at most 8 decimals")
    return sign * (int(whole or "0") * SCALE + int(frac.ljust(8, "0")))


def _nullable(value: int) -> int | None:
    return None if value == NULL else value


# -- decoding --------------------------------------------------------------------------------
def read_header(frame: bytes) -> Header:
    """The message header of ``frame``."""
    if len(frame) < HEADER.size:
        raise SbeError(f"truncated: {len(frame)} bytes, the message header needs {HEADER.size}")
    return Header(*HEADER.unpack_from(frame, 0))


def decode(frame: bytes) -> TradeEvent | BookEvent | None:
    """One binary frame: a TradeEvent or BookEvent, None for any other template (skipped).

    Raises SbeError for a frame of another schema id or one that does not follow the schema."""
    if len(frame) < HEADER.size:
        raise SbeError(f"truncated: {len(frame)} bytes, the message header needs {HEADER.size}")
    block_length, template_id, schema_id, _ = HEADER.unpack_from(frame, 0)
    if schema_id != SCHEMA_ID:
        raise SbeError(f"schema id {schema_id} (expected {SCHEMA_ID})")
    known = NAMES.get(template_id)
    if known is None:
        return None
    name, minimum = known
    if block_length < minimum:
        raise SbeError(f"{name} block length {block_length} is shorter than its {minimum} bytes")
    end = HEADER.size + block_length
    if len(frame) < end:
        raise SbeError(f"truncated {name}: {len(frame)} bytes, its block ends at {end}")
    if template_id == TRADE_EVENT:
        ts, seq, trade_id, side, price, size, created, kind = TRADE_BLOCK.unpack_from(frame, HEADER.size)
        if price == NULL or size == NULL:
            raise SbeError(f"TradeEvent {trade_id}: null price or size")
        market, _ = _read_string(frame, end, name)
        return TradeEvent(ts, seq, trade_id, side, price, size, created, kind, market)
    ts, seq, pkg, *best = BOOK_BLOCK.unpack_from(frame, HEADER.size)
    if pkg not in (SNAPSHOT, DELTA):
        raise SbeError(f"BookEvent {seq}: package type {pkg} (expected 0 SNAPSHOT or 1 DELTA)")
    bids, pos = _read_levels(frame, end, "bids")
    asks, pos = _read_levels(frame, pos, "asks")
    market, _ = _read_string(frame, pos, name)
    return BookEvent(ts, seq, pkg, bids, asks, market, *map(_nullable, best))


def _read_levels(frame: bytes, pos: int, group: str) -> tuple[list[tuple[int, int]], int]:
    """A ``{price, size}`` group at ``pos``: its levels and the position after it."""
    if len(frame) < pos + GROUP.size:
        raise SbeError(f"truncated BookEvent: {len(frame)} bytes, the {group} group header needs {pos + GROUP.size}")
    entry, count = GROUP.unpack_from(frame, pos)
    pos += GROUP.size
    end = pos + entry * count
    if entry < LEVEL.size:
        raise SbeError(f"BookEvent {group} entries of {entry} bytes (a level needs {LEVEL.size})")
    if len(frame) < end:
        raise SbeError(f"truncated BookEvent: {len(frame)} bytes, {count} {group} of {entry} bytes end at {end}")
    if entry == LEVEL.size:
        levels = list(LEVEL.iter_unpack(memoryview(frame)[pos:end]))
    else:       # entries a later version made longer: the first 16 bytes are still price, size
        levels = [LEVEL.unpack_from(frame, at) for at in range(pos, end, entry)]
    if levels and min(map(min, levels)) == NULL:       # INT64_MIN is the smallest int64
        raise SbeError(f"BookEvent {group}: a level with a null price or size")
    return levels, end


def _read_string(frame: bytes, pos: int, name: str) -> tuple[str, int]:
    """A ``varString8`` at ``pos``: the text and the position after it."""
    if len(frame) <= pos:
        raise SbeError(f"truncated {name}: {len(frame)} bytes, the market name's length is at byte {pos}")
    end = pos + 1 + frame[pos]
    if len(frame) < end:
        raise SbeError(f"truncated {name}: {len(frame)} bytes, the market name ends at {end}")
    try:
        return bytes(frame[pos + 1:end]).decode("utf-8"), end
    except UnicodeDecodeError as exc:
        raise SbeError(f"{name}: market name is not UTF-8 ({exc})") from None


# -- encoding (the simulator) ----------------------------------------------------------------
def _frame(template: int, block: bytes, block_length: int, version: int, tail: bytes) -> bytes:
    if block_length < len(block):
        raise ValueError(f"block length {block_length} < {len(block)}")
    pad = bytes(block_length - len(block))          # fields of a later version: zeros
    return HEADER.pack(block_length, template, SCHEMA_ID, version) + block + pad + tail


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    if len(data) > 255:
        raise ValueError(f"varString8 holds at most 255 bytes, {text!r} has {len(data)}")
    return bytes((len(data),)) + data


def encode_trade(ev: TradeEvent, version: int = SCHEMA_VERSION, block_length: int = TRADE_BLOCK.size) -> bytes:
    """A TradeEvent frame (``block_length`` > 50 appends zero bytes, as a later version's fields)."""
    block = TRADE_BLOCK.pack(ev.ts_us, ev.seq, ev.trade_id, ev.side, ev.price, ev.size, ev.created_at_us,
                             ev.trade_type)
    return _frame(TRADE_EVENT, block, block_length, version, _string(ev.market))


def encode_book(ev: BookEvent, version: int = SCHEMA_VERSION, block_length: int = BOOK_BLOCK.size) -> bytes:
    """A BookEvent frame: the block, the ``bids`` and ``asks`` groups, the market name."""
    best = (NULL if v is None else v for v in (getattr(ev, f) for f in BEST_FIELDS))
    block = BOOK_BLOCK.pack(ev.ts_us, ev.seq, ev.pkg_type, *best)
    groups = b"".join(GROUP.pack(LEVEL.size, len(levels)) + b"".join(LEVEL.pack(p, s) for p, s in levels)
                      for levels in (ev.bids, ev.asks))
    return _frame(BOOK_EVENT, block, block_length, version, groups + _string(ev.market))
