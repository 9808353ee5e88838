"""Object handles as one application sees them, after it logged out or closed its last session.

A token forgets handles then (SoftHSM2's HandleManager): at `C_Logout` every private object's
handle, when the application's last session with the token closes every object's handle. The
application finds the objects again under new handles, and a handle kept from before stays
invalid, also after a new login. The slots' own handles outlive both (the HA slot's are the
group's, shared by every application), so each connection names them for itself: the slot's
handle plus an epoch in the high bits, the epoch counting the logouts (private objects) and the
closes (every object) this application went through on that slot. An old name is
CK_INVALID_HANDLE (0) to the call, which then answers as a token does for a handle it does not
know. Until a connection's first logout or close nothing is renamed and nothing is looked at.

The fault lab's HSM restart (faulted.Renumbered) uses bits 32-47; these epochs live above them.
"""

from __future__ import annotations

from collections.abc import Callable

EPOCH_SHIFT = 48
HANDLE_MASK = (1 << 32) - 1
RENUMBERED_MASK = (1 << EPOCH_SHIFT) - 1  # the slot's handle and the fault lab's epoch
CLOSES = 1 << 8  # an epoch: closes x CLOSES + logouts (a private object's), in 16 bits

# where a request carries an object handle (argument 0 is the session in each), and where a
# reply gives one ("*": the list C_FindObjects returns)
HANDLE_ARGS = {
    "C_CopyObject": (1,),
    "C_DestroyObject": (1,),
    "C_GetObjectSize": (1,),
    "C_GetAttributeValue": (1,),
    "C_SetAttributeValue": (1,),
    "C_DigestKey": (1,),
    "C_EncryptInit": (2,),
    "C_DecryptInit": (2,),
    "C_SignInit": (2,),
    "C_VerifyInit": (2,),
    "C_SignRecoverInit": (2,),
    "C_VerifyRecoverInit": (2,),
    "C_WrapKey": (2, 3),
    "C_UnwrapKey": (2,),
    "C_DeriveKey": (2,),
}
HANDLE_REPLIES = {
    "C_CreateObject": (0,),
    "C_CopyObject": (0,),
    "C_GenerateKey": (0,),
    "C_UnwrapKey": (0,),
    "C_DeriveKey": (0,),
    "C_GenerateKeyPair": (0, 1),
    "C_FindObjects": ("*",),
}


class HandleNames:
    """One connection's names for object handles. slot_of(session handle) -> slot id or None;
    is_private(slot id, session handle, object handle) -> bool (read once, cached by the caller)."""

    def __init__(
        self, slot_of: Callable[[int], int | None], is_private: Callable[[int, int, int], bool]
    ) -> None:
        self.slot_of = slot_of
        self.is_private = is_private
        self.logouts: dict[int, int] = {}  # slot id -> logouts on it (wrapping at CLOSES)
        self.closes: dict[int, int] = {}  # slot id -> last sessions closed on it
        self.active = False

    def logged_out(self, slot_id: int) -> None:
        self.logouts[slot_id] = (self.logouts.get(slot_id, 0) + 1) % CLOSES
        self.active = True

    def all_closed(self, slot_id: int) -> None:
        self.closes[slot_id] = self.closes.get(slot_id, 0) + 1
        self.logouts.pop(slot_id, None)
        self.active = True

    def _epoch(self, slot_id: int, session: int, handle: int) -> int:
        closes, logouts = self.closes.get(slot_id, 0), self.logouts.get(slot_id, 0)
        if logouts and self.is_private(slot_id, session, handle):
            return (closes * CLOSES + logouts) & 0xFFFF
        return (closes * CLOSES) & 0xFFFF

    def inward(self, name: str, args: tuple) -> tuple:
        """The request's arguments with the slot's handles; an old name becomes 0."""
        places = HANDLE_ARGS.get(name)
        if not places or not args:
            return args
        slot_id = self.slot_of(args[0])
        if slot_id is None:
            return args  # no such session: the call answers that
        changed = list(args)
        for place in places:
            named = changed[place] if place < len(changed) else None
            if not isinstance(named, int) or not named:
                continue
            handle = named & RENUMBERED_MASK
            epoch = named >> EPOCH_SHIFT
            changed[place] = handle if epoch == self._epoch(slot_id, args[0], handle & HANDLE_MASK) else 0
        return tuple(changed)

    def outward(self, name: str, args: tuple, result: tuple) -> tuple:
        """The reply's values with this application's names for the handles it gives."""
        places = HANDLE_REPLIES.get(name)
        if not places or not args:
            return result
        slot_id = self.slot_of(args[0])
        if slot_id is None:
            return result
        session = args[0]

        def named(handle: int) -> int:
            return (
                handle | (self._epoch(slot_id, session, handle & HANDLE_MASK) << EPOCH_SHIFT) if handle else 0
            )

        changed = list(result)
        for place in places:
            if place == "*":
                changed[0] = tuple(named(h) for h in changed[0])
            elif place < len(changed) and isinstance(changed[place], int):
                changed[place] = named(changed[place])
        return tuple(changed)
