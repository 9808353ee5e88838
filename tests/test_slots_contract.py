"""The slot contract (ckdemo/slots.py) is signed by every implementation: each subclasses the
contract it serves, can be instantiated (no operation missing), and takes the contract's
arguments under the contract's names, so a handler or the RPC server written against
ckdemo.slots works with a physical, a remote and the HA virtual slot alike."""

from __future__ import annotations

import inspect

import pytest

from ckdemo import slots
from ckdemo.ha.group import HAGroup, HALoginCounter
from ckdemo.ha.session import VirtualSession
from ckdemo.members.rpcsession import RemoteSession
from ckdemo.members.rpcslot import RemoteSlot
from ckdemo.members.session import PhysicalSession
from ckdemo.members.slot import PhysicalSlot

SIGNED = [
    (slots.MemberSlot, PhysicalSlot),
    (slots.MemberSlot, RemoteSlot),
    (slots.Slot, HAGroup),
    (slots.MemberSession, PhysicalSession),
    (slots.MemberSession, RemoteSession),
    (slots.Session, VirtualSession),
    (slots.LoginCounter, HALoginCounter),
]


def operations(contract: type) -> list[str]:
    return sorted(
        name for name in dir(contract) if not name.startswith("_") and callable(getattr(contract, name))
    )


@pytest.mark.parametrize("contract, implementation", SIGNED, ids=[i.__name__ for _, i in SIGNED])
def test_every_implementation_signs_its_contract(contract, implementation):
    assert issubclass(implementation, contract)
    assert not implementation.__abstractmethods__, implementation.__abstractmethods__
    for name in operations(contract):
        wanted = inspect.signature(getattr(contract, name))
        given = inspect.signature(getattr(implementation, name))
        wanted_names = [p.name for p in wanted.parameters.values()]
        given_names = [
            p.name for p in given.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        assert given_names[: len(wanted_names)] == wanted_names, f"{implementation.__name__}.{name}{given}"
        extra = given_names[len(wanted_names) :]  # more parameters are fine when they have defaults
        assert all(given.parameters[p].default is not inspect.Parameter.empty for p in extra), (
            f"{implementation.__name__}.{name}{given} needs more than {contract.__name__}.{name}{wanted}"
        )


def test_a_slot_that_leaves_an_operation_out_cannot_be_made():
    """What the check above relies on: the contract is abstract, not a Protocol of good will."""

    class Partial(slots.Slot):
        slot_id = None

        def slot_info(self):
            return None

    with pytest.raises(TypeError, match="abstract"):
        Partial()


def test_every_session_operation_the_contract_names_is_used_by_a_front_door_or_the_ha_slot():
    """No operation in the contract that nobody drives (a contract is what callers rely on)."""
    import ckdemo
    from pathlib import Path

    text = "".join(
        p.read_text()
        for sub in ("handlers", "serve", "ha", "menu")
        for p in (Path(ckdemo.__file__).parent / sub).rglob("*.py")
    )
    unused = [name for name in operations(slots.Session) if f".{name}(" not in text]
    assert unused == []
