"""The differential test in the suite (tests/difftest.py is the engine, scripts/difftest the long
run, docs/DIFFTEST.md the allowed differences and the figures): the same seeded application calls
to ONE SoftHSM2 token behind `p11-kit server` and to the HA slot of `ckdemo serve`, every answer
compared. First the engine itself: between two single tokens it must find nothing, while doing
real work (signatures verified, ciphertexts decrypted, keys wrapped and unwrapped, objects found).
"""

from __future__ import annotations

import difftest
import pytest
from conftest import requires_softhsm
from rpc_capture import tools_missing

pytestmark = [requires_softhsm, pytest.mark.skipif(bool(tools_missing()), reason=str(tools_missing()))]

SEED, SEQUENCES, CALLS, FAULTS = 7, 10, 150, 1  # half of the sequences with one member fault


def answered(done: difftest.Run, name: str, answer: str) -> int:
    return sum(s.coverage[(name, answer)] for s in done.sequences)


def test_the_engine_finds_nothing_between_two_single_tokens(tmp_path):
    with difftest.two_references(tmp_path) as both:
        done = difftest.run(both, SEED, SEQUENCES, CALLS)
    assert len(done.sequences) == SEQUENCES and not any(s.lost for s in done.sequences)
    assert sum(s.calls for s in done.sequences) >= SEQUENCES * CALLS
    assert not done.differences, difftest.report(done, "two single tokens")
    for name, answer in (
        ("sw:verify", "signature valid for this side's public key"),
        ("C_Decrypt", "CKR_OK"),
        ("C_UnwrapKey", "CKR_OK"),
        ("C_Verify", "CKR_SIGNATURE_INVALID"),
        ("C_GenerateKeyPair", "CKR_OK"),
        ("C_DigestKey", "CKR_OK"),
    ):
        assert answered(done, name, answer) > 0, (name, answer, difftest.coverage(done))


def test_a_refused_short_key_digest_is_an_allowed_difference_and_so_is_what_follows():
    step = difftest.Step(3, "digest a key", [])
    digest_key = difftest.Call(10, "C_DigestKey", (difftest.Ref("s", 1), difftest.Ref("o", 2)))
    final = difftest.Call(11, "C_DigestFinal", (difftest.Ref("s", 1), difftest.ROOM))
    (refused,) = difftest.compare(1, step, digest_key, ("CKR_OK",), ("CKR_KEY_INDIGESTIBLE",), "")
    assert refused.allowed == "C_DigestKey of a short sensitive key"
    (after,) = difftest.compare(
        1,
        step,
        final,
        ("CKR_OK", "00"),
        ("CKR_OPERATION_NOT_INITIALIZED",),
        f"follows from: {refused.allowed}",
    )
    assert after.allowed.startswith("follows from")
    (other,) = difftest.compare(1, step, final, ("CKR_OK", "00"), ("CKR_OK", "01"), "")
    assert not other.allowed and other.kind == "C_DigestFinal: other output"


def test_a_whole_search_is_compared_as_a_set_and_its_order_is_an_allowed_difference():
    """A search read a few objects at a time is collected from C_FindObjectsInit to
    C_FindObjectsFinal and compared as a set: SoftHSM2 lists objects in the order of their
    addresses in memory, the HA slot in the order it made them. Other objects are a defect."""
    session = difftest.Ref("s", 1)

    def search(ours: list[tuple], theirs: list[tuple], most: int = 2) -> list[difftest.Difference]:
        sequence, step = difftest.Sequence(1, 0), difftest.Step(3, "find objects", [])
        calls = [difftest.Call(10, "C_FindObjectsInit", (session, ()))]
        calls += [difftest.Call(11 + n, "C_FindObjects", (session, most)) for n in range(len(ours))]
        calls.append(difftest.Call(20, "C_FindObjectsFinal", (session,)))
        views = [(("CKR_OK",), ("CKR_OK",))] + [(("CKR_OK", a), ("CKR_OK", b)) for a, b in zip(ours, theirs)]
        views.append((("CKR_OK",), ("CKR_OK",)))
        return [
            d
            for call, pair in zip(calls, views)
            for d in difftest.follow_searches(sequence, step, call, pair)
        ]

    assert search([("o1", "o2"), ("o3",)], [("o1", "o2"), ("o3",)]) == []
    (order,) = search([("o1", "o2"), ("o3",)], [("o3", "o1"), ("o2",)])
    assert order.allowed == "the order of a search's results" and order.step == 3
    (fewer,) = search([("o1", "o2"), ("o3",)], [("o1", "o2"), ()])
    assert not fewer.allowed and fewer.kind == f"{difftest.SEARCH}: other objects (3 vs 2)"
    (other,) = search([("o1", "o2"), ()], [("o1", "o4"), ()])
    assert not other.allowed and other.kind == f"{difftest.SEARCH}: other objects"
    # f1, f2 ...: handles the sequence has no name for, named per side in its own order
    assert search([("o1", "f1"), ("f2",)], [("f2", "o1"), ("f1",)])[0].allowed
    (renamed,) = search([("o1", "o2"), ()], [("o1", "f1"), ()])
    assert renamed.kind.endswith("under its old handle on one side, under a new one on the other")
    assert search([("o1", "o2")], [("o2", "o3")]) == []  # read in part on both: its own order
    (longer,) = search([("o1", "o2")], [("o2",)])
    assert not longer.allowed and longer.kind == f"{difftest.SEARCH}: other objects (2+ vs 1)"


def test_the_ha_slot_answers_as_one_token(tmp_path, provision, run_ckdemo, ckdemo_bin):
    with difftest.servers(tmp_path, provision, run_ckdemo, ckdemo_bin) as both:
        done = difftest.run(both, SEED, SEQUENCES, CALLS, FAULTS)
    assert len(done.sequences) == SEQUENCES and sum(s.injected for s in done.sequences) >= SEQUENCES // 2
    assert not done.defects, difftest.report(done, f"seed {SEED}")


def test_a_private_keys_big_integer_is_compared_without_its_length():
    """An EC private key's CKA_VALUE is 31 bytes in one key of 256 (SoftHSM2 drops the scalar's
    leading zero byte), on either side: not a difference; a secret key's value length is one."""
    Attribute = difftest.Attribute

    def view(call, length, value=True):
        return difftest.attribute_view(
            call, Attribute(difftest.CKA_VALUE, b"\1" * length if value else None, length)
        )

    ec = difftest.Call(
        1,
        "C_GetAttributeValue",
        (),
        masked=frozenset({difftest.CKA_VALUE}),
        varying=frozenset({difftest.CKA_VALUE}),
    )
    assert view(ec, 31) == view(ec, 32) and view(ec, 31, value=False) == view(ec, 32, value=False)
    aes = difftest.Call(1, "C_GetAttributeValue", (), masked=frozenset({difftest.CKA_VALUE}))
    assert view(aes, 16) != view(aes, 32)
