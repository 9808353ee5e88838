"""serve's dispatch table against the protocol: every version-0 call is answered by the method
named after it, or refused for a reason written down; nothing is found by reflection."""
from ckdemo.rpc.calls import CALLS
from ckdemo.serve.connection import Connection
from ckdemo.serve.dispatch import BY_ID, HANDLERS, UNSUPPORTED


def test_every_call_of_the_protocol_is_answered_or_refused_with_its_reason():
    names = {call.name for call in CALLS if call.name.startswith("C_")}
    assert set(HANDLERS) | set(UNSUPPORTED) == names
    assert not set(HANDLERS) & set(UNSUPPORTED)
    assert all(reason.strip() for reason in UNSUPPORTED.values())


def test_each_call_goes_to_the_method_named_after_it():
    for name, method in HANDLERS.items():
        assert method is getattr(Connection, name), name
    assert len(BY_ID) == len(HANDLERS)


def test_no_connection_method_named_after_a_call_is_left_out_of_the_table():
    methods = {name for name in dir(Connection) if name.startswith("C_")}
    assert methods == set(HANDLERS)
