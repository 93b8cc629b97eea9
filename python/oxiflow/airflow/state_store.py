"""An Airflow 3.3 state-store backend whose every write is a compare-and-swap.

Configure it in ``airflow.cfg`` (or ``AIRFLOW__STATE_STORE__BACKEND``)::

    [state_store]
    backend = oxiflow.airflow.state_store.OxiflowStateStoreBackend

    [oxiflow]
    # any oxiflow store URL; empty: .oxiflow/config.yaml and OXIFLOW_* as for the CLI
    state_store_url = s3://my-bucket/oxiflow
    state_store_prefix = airflow/state-store

Each key is one object, ``<prefix>/task/<dag>/<run>/<task>/<map_index>/<key>.json``
or ``<prefix>/asset/<id|name|uri>/<asset>/<key>.json``, holding ``{"value",
"expires_at", "revision"}``. Airflow's contract for ``set()`` is a blind
overwrite ("write or overwrite value"), so what a CAS can promise there is
narrower than a counter's safety; see ``docs/orchestrators.md``:

* every ``set()`` is one conditional PUT on the version it read (retried on
  a conflict), so concurrent ``set()``s are applied one after the other,
  each exactly once: the object's ``revision`` counts them all (N writers ×
  M sets end at revision N·M, never fewer), the final value is the last
  one applied, and no value is ever torn or mixed with another's
  ``expires_at``;
* a read-modify-write (a counter, appending to a list) cannot be made safe
  through ``get()`` then ``set()``, because the contract passes no version
  between them: use :meth:`OxiflowStateStoreBackend.update`, which reruns
  the caller's function on a conflict, so no increment is lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow.state import AssetScope, BaseStoreBackend, StoreScope, TaskScope

import oxiflow

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

DEFAULT_PREFIX = "airflow/state-store"
MAX_ATTEMPTS = 200
"""Conflicts one write retries before giving up with ``oxiflow.Conflict`` (each conflict is another writer's success)."""

_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")
_LONGEST = 200


def encode_segment(value: str) -> str:
    """One key segment for ``oxiflow.Store``: letters, digits and ``-`` kept, every other byte ``_XX`` (hex).

    Deterministic and, up to 200 characters, reversible (:func:`decode_segment`);
    never empty, never starting with ``.``, never containing ``..``. A longer
    encoding is cut to 150 characters plus ``.`` and a SHA-256 of the value
    (``.`` appears in no other encoding, so the two kinds never collide).
    """
    if not value:
        raise ValueError("an empty name cannot be a state store key segment")
    encoded = "".join(c if c in _SAFE else "".join(f"_{b:02X}" for b in c.encode()) for c in value)
    if len(encoded) > _LONGEST:
        encoded = f"{encoded[:150]}.{hashlib.sha256(value.encode()).hexdigest()}"
    return encoded


def decode_segment(segment: str) -> str:
    """The inverse of :func:`encode_segment` (not for a hashed long segment)."""
    if "." in segment:
        raise ValueError(f"{segment!r} is a hashed long segment: it cannot be decoded")
    out = bytearray()
    i = 0
    while i < len(segment):
        if segment[i] == "_":
            out.append(int(segment[i + 1 : i + 3], 16))
            i += 3
        else:
            out.extend(segment[i].encode())
            i += 1
    return out.decode()


def _backoff(attempt: int) -> None:
    # full jitter, 1 ms growing to at most 50 ms: the writer that beat us is done already
    time.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))


class OxiflowStateStoreBackend(BaseStoreBackend):
    """Task and asset state in an oxiflow store, each key a compare-and-swap object.

    Built with no arguments by Airflow (``[state_store] backend``), reading
    ``[oxiflow] state_store_url`` and ``state_store_prefix``; or with a
    ``store`` (``oxiflow.Store`` or ``State.store``) and ``prefix``.
    """

    def __init__(self, store: Any | None = None, prefix: str | None = None) -> None:
        if store is None or prefix is None:
            from airflow.configuration import conf

            if prefix is None:
                prefix = conf.get("oxiflow", "state_store_prefix", fallback="") or DEFAULT_PREFIX
            if store is None:
                url = conf.get("oxiflow", "state_store_url", fallback="") or None
                store = oxiflow.State(url).store
        self.store = store
        self.prefix = prefix.strip("/")
        self.conflicts = 0
        """Writes this instance retried because another writer changed the key first."""

    # --- keys -----------------------------------------------------------

    def scope_prefix(self, scope: StoreScope, *, all_map_indices: bool = False) -> str:
        """The key prefix (ending in ``/``) under which ``scope``'s keys live."""
        match scope:
            case TaskScope():
                parts = [self.prefix, "task", encode_segment(scope.dag_id), encode_segment(scope.run_id), encode_segment(scope.task_id)]
                if not all_map_indices:
                    parts.append(encode_segment(str(scope.map_index)))
                return "/".join(parts) + "/"
            case AssetScope():
                if scope.asset_id is not None:
                    kind, ident = "id", str(scope.asset_id)
                elif scope.name is not None:
                    kind, ident = "name", scope.name
                else:
                    assert scope.uri is not None
                    kind, ident = "uri", scope.uri
                return f"{self.prefix}/asset/{kind}/{encode_segment(ident)}/"
            case _:
                raise TypeError(f"unknown state store scope: {type(scope).__name__}")

    def object_key(self, scope: StoreScope, key: str) -> str:
        """The store key holding ``key`` of ``scope``."""
        return f"{self.scope_prefix(scope)}{encode_segment(key)}.json"

    # --- the one write ---------------------------------------------------

    def _read(self, object_key: str) -> tuple[dict[str, Any] | None, str | None]:
        found = self.store.get(object_key)
        if found is None:
            return None, None
        data, version = found
        try:
            doc = json.loads(bytes(data))
        except ValueError as err:
            raise oxiflow.Corrupt(f"state store object {object_key!r} is not JSON: {err}") from err
        if not isinstance(doc, dict) or not isinstance(doc.get("value"), str):
            raise oxiflow.Corrupt(f"state store object {object_key!r} is not an oxiflow state store entry")
        return doc, str(version)

    def _write(
        self,
        object_key: str,
        change: Callable[[str | None], str],
        expires_at: datetime | None,
    ) -> tuple[str, int]:
        """Read, apply ``change`` to the stored value, put if unchanged; again on a conflict."""
        expires = None
        if expires_at is not None:
            aware = expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=timezone.utc)
            expires = aware.astimezone(timezone.utc).isoformat()
        for attempt in range(MAX_ATTEMPTS):
            doc, version = self._read(object_key)
            value = change(None if doc is None else str(doc["value"]))
            revision = 1 if doc is None else int(doc.get("revision", 0)) + 1
            body = json.dumps({"value": value, "expires_at": expires, "revision": revision}, sort_keys=True)
            try:
                self.store.put(object_key, body.encode(), version=version)
            except oxiflow.Conflict:
                self.conflicts += 1
                _backoff(attempt)
                continue
            return value, revision
        raise oxiflow.Conflict(f"state store key {object_key!r} kept changing: {MAX_ATTEMPTS} writes lost the race")

    # --- BaseStoreBackend ------------------------------------------------

    def get(self, scope: StoreScope, key: str, *, session: Session | None = None) -> str | None:
        doc, _ = self._read(self.object_key(scope, key))
        return None if doc is None else str(doc["value"])

    def set(
        self,
        scope: StoreScope,
        key: str,
        value: str,
        *,
        expires_at: datetime | None = None,
        session: Session | None = None,
    ) -> None:
        self._write(self.object_key(scope, key), lambda _old: value, expires_at)

    def delete(self, scope: StoreScope, key: str, *, session: Session | None = None) -> None:
        self.store.delete(self.object_key(scope, key))

    def clear(self, scope: StoreScope, *, all_map_indices: bool = False, session: Session | None = None) -> None:
        prefix = self.scope_prefix(scope, all_map_indices=all_map_indices and isinstance(scope, TaskScope))
        for object_key in self._keys(prefix):
            self.store.delete(object_key)

    async def aget(self, scope: StoreScope, key: str, *, session: AsyncSession | None = None) -> str | None:
        return await asyncio.to_thread(self.get, scope, key)

    async def aset(
        self,
        scope: StoreScope,
        key: str,
        value: str,
        *,
        expires_at: datetime | None = None,
        session: AsyncSession | None = None,
    ) -> None:
        await asyncio.to_thread(self.set, scope, key, value, expires_at=expires_at)

    async def adelete(self, scope: StoreScope, key: str, *, session: AsyncSession | None = None) -> None:
        await asyncio.to_thread(self.delete, scope, key)

    async def aclear(
        self, scope: StoreScope, *, all_map_indices: bool = False, session: AsyncSession | None = None
    ) -> None:
        await asyncio.to_thread(self.clear, scope, all_map_indices=all_map_indices)

    def cleanup(self) -> None:
        """Delete entries whose ``expires_at`` has passed.

        The delete is unconditional (the store's delete takes no version): a
        ``set()`` landing between the read and the delete is lost with it, as
        with Airflow's own garbage collection of expired rows.
        """
        now = datetime.now(timezone.utc)
        for object_key in self._keys(f"{self.prefix}/"):
            doc, _ = self._read(object_key)
            if doc is None or not doc.get("expires_at"):
                continue
            if datetime.fromisoformat(str(doc["expires_at"])) <= now:
                self.store.delete(object_key)

    # --- beyond the contract ---------------------------------------------

    def update(
        self,
        scope: StoreScope,
        key: str,
        change: Callable[[str | None], str],
        *,
        expires_at: datetime | None = None,
    ) -> str:
        """Read-modify-write one key without a lost update; returns the value written.

        ``change(old)`` gets the stored JSON string (``None`` when absent) and
        returns the new one; when another writer got in between, it is called
        again on that writer's value. It must not have side effects.
        """
        value, _ = self._write(self.object_key(scope, key), change, expires_at)
        return value

    def revision(self, scope: StoreScope, key: str) -> int:
        """How many writes the key has taken since it was created (0 when absent)."""
        doc, _ = self._read(self.object_key(scope, key))
        return 0 if doc is None else int(doc.get("revision", 0))

    def _keys(self, prefix: str) -> list[str]:
        keys = []
        for item in self.store.list(prefix):
            key = item[0] if isinstance(item, tuple) else item
            key = getattr(key, "key", key)
            if str(key).endswith(".json"):
                keys.append(str(key))
        return keys
