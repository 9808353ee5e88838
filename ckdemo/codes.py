"""CKR names and values in one table, and the one error type that carries them.
(Placeholder: the full table is being written.)"""
from __future__ import annotations

CKR_OK = 0x0


class CKRError(Exception):
    """A PKCS#11 call returned something other than CKR_OK."""

    def __init__(self, ckr: int, function: str, detail: str = "") -> None:
        self.ckr = ckr
        self.function = function
        self.detail = detail
        super().__init__(f"{function} returned {describe(ckr)}" + (f": {detail}" if detail else ""))

    @property
    def name(self) -> str:
        return ckr_name(self.ckr)


def ckr_name(code: int) -> str:
    return {0: "CKR_OK"}.get(code, f"0x{code:08X}")


def describe(code: int) -> str:
    return f"{ckr_name(code)} (0x{code:08X})"
