"""Book sync for venues whose stream carries diffs and whose REST API serves the snapshot.

The rule Binance documents (and WOO X follows with other ids): buffer the diffs, fetch a REST
snapshot, drop the buffered diffs the snapshot already holds, start at the diff that *bridges*
the snapshot, then require every diff to *chain* to the previous one. A break writes a ``gap``
event, drops the book and syncs again from a fresh snapshot (``resync`` event) before any book
row is written again; a snapshot too old to be bridged by the buffer gives a ``stale`` event and
is fetched again; a failed or unreadable snapshot is an ``error`` event and is retried. A diff
at or before the last applied one (a repeated or reordered frame) is dropped, not a gap.

A venue supplies only its rules: the ids of an update (:meth:`SnapshotSyncClient.update_ids`),
the bridge condition, the chain condition (default: ``prev`` equals the last applied id), the
snapshot URL and body, and where an update keeps its levels and time.
"""
from __future__ import annotations

from abc import abstractmethod
from collections import deque
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

import orjson

from actors.venues.base import STALE_LIMIT, Action, BookState, FetchSnapshot, VenueClient, quote

MAX_BUFFERED_UPDATES = 20_000
SNAPSHOT_RETRY_NS = 1_000_000_000


class UpdateIds(NamedTuple):
    """The ids of one diff: the id it chains to, and the first and last update ids it holds.

    A NamedTuple: built for every diff on the hot path, where a frozen dataclass costs ~1 us."""

    prev: int | None
    first: int
    last: int


@dataclass
class SyncState(BookState):
    buffer: deque = field(default_factory=deque)      # (update, ts_local) while unsynced
    fetching: bool = False
    snapshot: tuple[int, list, list] | None = None     # loaded snapshot waiting for its bridging diff
    retry_at: int = 0


class SnapshotSyncClient(VenueClient):
    """A client that syncs books from diffs plus REST snapshots (see module docstring)."""

    state_type = SyncState

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        #: the venue keeps the default chain rule (inlined in ``on_update``: the per-diff path)
        self.plain_chain = type(self).chains is SnapshotSyncClient.chains
    #: the venue's name of the snapshot's id (event details)
    snapshot_id_name: ClassVar[str] = "id"

    # -- the venue's rules ---------------------------------------------------------------
    @abstractmethod
    def update_ids(self, update: dict) -> UpdateIds:
        """The ids of a diff."""

    @abstractmethod
    def bridges(self, ids: UpdateIds, snapshot_id: int) -> bool:
        """True for the first diff to apply on top of the snapshot ``snapshot_id``."""

    def chains(self, ids: UpdateIds, last: int | None) -> bool:
        """True when a diff follows the last applied one without a gap."""
        return ids.prev == last

    @abstractmethod
    def snapshot_url(self, symbol: str) -> str:
        """The REST URL of a symbol's snapshot."""

    @abstractmethod
    def parse_snapshot(self, body: bytes) -> tuple[int, list, list]:
        """``(snapshot id, bids, asks)`` of a REST answer (raises on a bad body)."""

    @abstractmethod
    def update_levels(self, update: dict) -> tuple[list, list]:
        """``(bids, asks)`` of a diff, as ``[[price, size], ...]``."""

    @abstractmethod
    def update_time(self, update: dict) -> int | None:
        """The diff's exchange time in ns."""

    # -- the shared sync -----------------------------------------------------------------
    def on_update(self, symbol: str, update: dict, ts_local: int) -> list[Action]:
        """One diff of ``symbol``'s book."""
        st: SyncState = self.states.get(symbol)  # type: ignore[assignment]
        if st is None:
            return []
        if st.synced:
            ids = self.update_ids(update)
            if ids.prev != st.last_seq if self.plain_chain else not self.chains(ids, st.last_seq):
                if st.last_seq is not None and ids.last <= st.last_seq and st.stale < STALE_LIMIT:
                    st.stale += 1                    # already applied: a repeated or reordered frame
                    return []
                return self._gap(symbol, st, update, ids, ts_local)
            st.stale = 0
            return self._apply(symbol, st, update, ids, ts_local)
        st.buffer.append((update, ts_local))
        if len(st.buffer) > MAX_BUFFERED_UPDATES:
            st.buffer.popleft()
        if st.snapshot is not None:
            return self._bridge(symbol, st, ts_local)
        return self.fetch(symbol, st, ts_local)

    def fetch(self, symbol: str, st: SyncState, ts_local: int, force: bool = False) -> list[Action]:
        """Ask for a snapshot unless one is on its way (or a failed one waits for its retry time)."""
        if st.fetching or (not force and ts_local < st.retry_at):
            return []
        st.fetching = True
        return [FetchSnapshot(symbol, self.snapshot_url(symbol))]

    def recover(self, symbol: str, ts_local: int) -> list[Action]:
        return self.fetch(symbol, self.states[symbol], ts_local, force=True)  # type: ignore[arg-type]

    def on_snapshot(self, symbol: str, body: bytes | None, ts_local: int,
                    error: str | None = None) -> list[Action]:
        st: SyncState = self.states.get(symbol)  # type: ignore[assignment]
        if st is None:
            return []
        st.fetching = False
        if error is not None or body is None:
            self._snapshot_failed(symbol, st, ts_local, f"snapshot failed: {error}")
            return []
        try:
            st.snapshot = self.parse_snapshot(body)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            self._snapshot_failed(symbol, st, ts_local, f"bad snapshot ({exc}): {quote(body)}")
            return []
        if st.synced:
            st.snapshot = None
            return []
        return self._bridge(symbol, st, ts_local)

    def _snapshot_failed(self, symbol: str, st: SyncState, ts_local: int, detail: str) -> None:
        self.sink.event(symbol, ts_local, "l2book", "error", detail[:2000])
        st.retry_at = ts_local + SNAPSHOT_RETRY_NS

    def _gap(self, symbol: str, st: SyncState, update: dict, ids: UpdateIds, ts_local: int) -> list[Action]:
        self.gap(symbol, st, ts_local, ids.last, ids.prev)
        st.buffer.clear()
        st.buffer.append((update, ts_local))
        st.snapshot = None
        return self.fetch(symbol, st, ts_local, force=True)

    def _bridge(self, symbol: str, st: SyncState, ts_local: int) -> list[Action]:
        """Apply the loaded snapshot and the buffered diffs once a diff bridges it."""
        snap_id, bids, asks = st.snapshot  # type: ignore[misc]
        while st.buffer:                             # drop what the snapshot already holds
            ids = self.update_ids(st.buffer[0][0])
            if ids.last > snap_id or self.bridges(ids, snap_id):
                break
            st.buffer.popleft()
        if not st.buffer:
            return []                                # wait for the bridging diff
        ids = self.update_ids(st.buffer[0][0])
        if not self.bridges(ids, snap_id):           # snapshot older than everything buffered
            v = self.venue
            self.sink.event(symbol, ts_local, "l2book", "stale",
                            f"snapshot {self.snapshot_id_name} {snap_id} is not bridged by the first buffered "
                            f"diff ({v.prev_name} {ids.prev}, {v.seq_name} {ids.last})", snap_id, ids.first)
            st.snapshot = None
            return self.fetch(symbol, st, ts_local, force=True)
        st.book.load_snapshot(bids, asks)
        st.snapshot = None
        self.synced_event(symbol, st, ts_local, f"{self.snapshot_id_name} {snap_id}", snap_id, ids.last)
        st.last_seq = None
        buffered, st.buffer = list(st.buffer), deque()
        for update, ts in buffered:
            ids = self.update_ids(update)
            if st.last_seq is not None and not self.chains(ids, st.last_seq):
                return self._gap(symbol, st, update, ids, ts)
            actions = self._apply(symbol, st, update, ids, ts)
            if not st.synced:
                return actions
        return []

    def _apply(self, symbol: str, st: SyncState, update: dict, ids: UpdateIds, ts_local: int) -> list[Action]:
        bids, asks = self.update_levels(update)
        try:
            ts_exchange = self.update_time(update)
        except (KeyError, TypeError, ValueError, IndexError):     # raise as before: after the levels applied
            st.book.apply_levels(bids, asks)
            st.last_seq = ids.last
            raise
        actions = self.apply_and_write(symbol, st, bids, asks, ts_local, ts_exchange, ids.last)
        st.last_seq = ids.last                   # (nothing above reads it)
        return actions

