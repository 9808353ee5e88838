"""serve's dispatch table against the protocol: every version-0 call is answered by the method
of its group named after it, or refused for a reason written down; nothing is found by
reflection, and a connection is composed (one state, one object per group), not inherited."""

from ckdemo.rpc.calls import BY_NAME, CALLS
from ckdemo.rpc.structs import Info, Version
from ckdemo.serve.connection import Connection
from ckdemo.serve.dispatch import GROUPS, HANDLERS, UNSUPPORTED
from ckdemo.serve.state import ConnectionState


def test_every_call_of_the_protocol_is_answered_or_refused_with_its_reason():
    names = {call.name for call in CALLS if call.name.startswith("C_")}
    assert set(HANDLERS) | set(UNSUPPORTED) == names
    assert not set(HANDLERS) & set(UNSUPPORTED)
    assert all(reason.strip() for reason in UNSUPPORTED.values())


def test_each_call_goes_to_the_method_of_its_group_named_after_it():
    for group, table in GROUPS.items():
        for name, method in table.items():
            assert method is getattr(group, name), name
    assert len(HANDLERS) == sum(len(table) for table in GROUPS.values())


def test_no_group_method_named_after_a_call_is_left_out_of_the_table():
    for group, table in GROUPS.items():
        assert {name for name in dir(group) if name.startswith("C_")} == set(table), group.__name__


def test_a_connection_is_one_state_and_groups_over_it_not_mixins():
    assert Connection.__bases__ == (object,) and ConnectionState.__bases__ == (object,)
    assert all(group.__bases__ == (object,) for group in GROUPS)
    connection = Connection(
        1, [], Info(Version(2, 40), "m", 0, "d", Version(1, 0)), print, lambda where, error: None
    )
    assert set(connection.handlers) == {BY_NAME[name].id for name in HANDLERS}
    for call_id, method in connection.handlers.items():
        assert method.__self__.state is connection.state  # this connection's own group objects
