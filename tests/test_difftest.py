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
    for name, answer in (("sw:verify", "signature valid for this side's public key"), ("C_Decrypt", "CKR_OK"),
                         ("C_UnwrapKey", "CKR_OK"), ("C_Verify", "CKR_SIGNATURE_INVALID"),
                         ("C_GenerateKeyPair", "CKR_OK"), ("C_DigestKey", "CKR_OK")):
        assert answered(done, name, answer) > 0, (name, answer, difftest.coverage(done))


def test_a_refused_short_key_digest_is_an_allowed_difference_and_so_is_what_follows():
    step = difftest.Step(3, "digest a key", [])
    digest_key = difftest.Call(10, "C_DigestKey", (difftest.Ref("s", 1), difftest.Ref("o", 2)))
    final = difftest.Call(11, "C_DigestFinal", (difftest.Ref("s", 1), difftest.ROOM))
    (refused,) = difftest.compare(1, step, digest_key, ("CKR_OK",), ("CKR_KEY_INDIGESTIBLE",), "")
    assert refused.allowed == "C_DigestKey of a short sensitive key"
    (after,) = difftest.compare(1, step, final, ("CKR_OK", "00"), ("CKR_OPERATION_NOT_INITIALIZED",),
                                f"follows from: {refused.allowed}")
    assert after.allowed.startswith("follows from")
    (other,) = difftest.compare(1, step, final, ("CKR_OK", "00"), ("CKR_OK", "01"), "")
    assert not other.allowed and other.kind == "C_DigestFinal: other output"


@pytest.mark.xfail(strict=False, reason=(
    "HA slot defects (docs/DIFFTEST.md, 'Seen in that run and not fixed yet'): search order read a "
    "few at a time; copies of data objects; handles after a logout; more checks in another order"))
def test_the_ha_slot_answers_as_one_token(tmp_path, provision, run_ckdemo, ckdemo_bin):
    with difftest.servers(tmp_path, provision, run_ckdemo, ckdemo_bin) as both:
        done = difftest.run(both, SEED, SEQUENCES, CALLS, FAULTS)
    assert len(done.sequences) == SEQUENCES and sum(s.injected for s in done.sequences) >= SEQUENCES // 2
    assert not done.defects, difftest.report(done, f"seed {SEED}")
