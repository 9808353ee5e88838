"""What the HA slot keeps of each key besides the members' copies: so that a key is one key.

A key made on the HA slot lives on every member, but the members' copies are not made alike:
one member generated it, the others unwrapped or created theirs. A single token would answer
CKA_LOCAL, CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE, CKA_KEY_GEN_MECHANISM, CKA_VALUE_LEN and
CKA_CHECK_VALUE from how the key was made, and each copy answers from how *it* was made. So the
HA slot records, when the key is made, what one token would have answered (its **facts**) and
answers those attributes from the record, whichever member serves the call (docs/HA.md, "One
key, many copies").

A key the application wants unextractable (CKA_EXTRACTABLE FALSE, at creation or later) can no
longer be wrapped on a member, so no member could give it to a member that comes back, or is
added later. The record then also holds the key wrapped **once**, while it was still
extractable, under the group's domain key (`blob`): the domain key's CKA_UNWRAP_TEMPLATE lets it
come back on a member only as a sensitive, private key wrappable by trusted keys only, and the
only trusted keys are the domain keys (replication.py). Nothing here is key material in the clear.

Token objects' records are files in the group's folder of the home's state (0700), one per key,
written whole (a temporary file renamed): every process on the home sees them. Session objects'
records live in memory and go with their object.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..model import (
    CKA_ALWAYS_SENSITIVE,
    CKA_CHECK_VALUE,
    CKA_KEY_GEN_MECHANISM,
    CKA_LOCAL,
    CKA_NEVER_EXTRACTABLE,
    CKA_VALUE_LEN,
    CKA_WRAP_WITH_TRUSTED,
)

# what one token answers from how a key was made, and a copy answers from how it was copied
FACTS = (
    CKA_LOCAL,
    CKA_ALWAYS_SENSITIVE,
    CKA_NEVER_EXTRACTABLE,
    CKA_KEY_GEN_MECHANISM,
    CKA_VALUE_LEN,
    CKA_WRAP_WITH_TRUSTED,
    CKA_CHECK_VALUE,
)

Key = tuple  # replication.object_key: (class, CKA_ID, label)


@dataclass
class Kept:
    facts: dict[int, Any] = field(default_factory=dict)
    blob: bytes | None = None  # the key wrapped under the domain key of this generation
    generation: int | None = None

    def to_json(self, key: Key) -> dict:
        cls, key_id, label = key
        return {
            "class": cls,
            "id": bytes(key_id).hex(),
            "label": label,
            "facts": {f"{a:#x}": _encode(v) for a, v in self.facts.items()},
            "blob": self.blob.hex() if self.blob else None,
            "generation": self.generation,
        }

    @classmethod
    def from_json(cls, data: dict) -> Kept:
        blob = data.get("blob")
        return cls(
            {int(a, 16): _decode(v) for a, v in data.get("facts", {}).items()},
            bytes.fromhex(blob) if blob else None,
            data.get("generation"),
        )


def _encode(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return {"hex": bytes(value).hex()}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        return bytes.fromhex(value["hex"])
    return value


class Vault:
    """Records by object identity (class, CKA_ID, label): files for token objects under
    `folder` (None: in memory only), memory for session objects."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self._memory: dict[Key, Kept] = {}
        self._files: dict[Key, tuple[int, Kept]] = {}  # read cache: (file mtime_ns, record)
        self._lock = threading.Lock()

    def get(self, key: Key) -> Kept | None:
        with self._lock:
            kept = self._memory.get(key)
            if kept is not None or self.folder is None:
                return kept
            path = self._path(key)
            try:
                stamp = path.stat().st_mtime_ns
            except OSError:
                self._files.pop(key, None)
                return None
            cached = self._files.get(key)
            if cached and cached[0] == stamp:
                return cached[1]
            try:
                kept = Kept.from_json(json.loads(path.read_text()))
            except (OSError, ValueError, KeyError, TypeError):
                return None  # unreadable: as if nothing were kept (the members still answer)
            self._files[key] = (stamp, kept)
            return kept

    def put(self, key: Key, kept: Kept, token: bool) -> None:
        with self._lock:
            if not token or self.folder is None:
                self._memory[key] = kept
                return
            self._memory.pop(key, None)
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = self._path(key)
            temporary = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as out:
                json.dump(kept.to_json(key), out)
            os.replace(temporary, path)
            self._files[key] = (path.stat().st_mtime_ns, kept)

    def move(self, old: Key, new: Key) -> None:
        """The object's CKA_ID or label changed: its record follows it."""
        if old == new:
            return
        kept = self.get(old)
        if kept is None:
            return
        token = old not in self._memory
        self.put(new, kept, token)
        self.drop(old)

    def drop(self, key: Key) -> None:
        with self._lock:
            self._memory.pop(key, None)
            self._files.pop(key, None)
            if self.folder is not None:
                try:
                    self._path(key).unlink()
                except FileNotFoundError:
                    pass

    def _path(self, key: Key) -> Path:
        cls, key_id, label = key
        name = hashlib.sha256(b"%d\0%s\0%s" % (cls, bytes(key_id), label.encode())).hexdigest()[:32]
        return self.folder / f"{name}.json"
