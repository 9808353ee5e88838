"""RFC 7512 pkcs11 URIs choose a slot as pkcs11-tool and p11tool users write them: the parser
against the RFC's own examples, and `ckdemo bench --slot pkcs11:...` / `--token-label` on a home's
real SoftHSM2 slots."""

from __future__ import annotations

import pytest

from conftest import no_traceback, requires_softhsm
from ckdemo.uri import URIError, parse


def test_the_rfc_examples_parse_and_decode():
    uri = parse(
        "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;"
        "model=1.0;object=my-certificate;type=cert?pin-value=secret"
    )
    assert uri.path["token"] == "The Software PKCS#11 Softtoken"
    assert uri.path["manufacturer"] == "Snake Oil, Inc." and uri.query == {"pin-value": "secret"}
    assert uri.matches(
        {
            "label": "The Software PKCS#11 Softtoken  ",
            "manufacturer": "Snake Oil, Inc.",
            "model": "1.0",
            "serial": "x",
        }
    )
    assert not uri.matches({"label": "other", "manufacturer": "Snake Oil, Inc.", "model": "1.0"})
    assert parse("pkcs11:slot-id=20480").matches({"label": "ha"}, 20480)
    assert not parse("pkcs11:slot-id=20480").matches({"label": "ha"}, 1)
    assert parse("PKCS11:serial=abc").path == {"serial": "abc"}  # the scheme in any case


@pytest.mark.parametrize(
    "text, says",
    [
        ("token=x", "is not a pkcs11 URI"),
        ("pkcs11:tokn=x", "'tokn=x' is not a pkcs11 URI path attribute"),
        ("pkcs11:token=a;token=b", "token given twice"),
        ("pkcs11:token=a?pin=1", "'pin=1' is not a pkcs11 URI query attribute"),
        ("pkcs11:slot-id=ten", "slot-id is a number"),
    ],
)
def test_what_cannot_be_a_pkcs11_uri_is_one_line(text, says):
    with pytest.raises(URIError, match=says):
        parse(text)


@requires_softhsm
def test_bench_chooses_its_slot_by_uri_or_token_label(run_ckdemo, shared_home):
    for args in (("--slot", "pkcs11:token=member2"), ("--token-label", "member2")):
        done = run_ckdemo(shared_home, "bench", "--op", "random", "--count", "50", *args)
        no_traceback(done.stdout, done.stderr)
        assert done.returncode == 0 and "slot#2" in done.stdout, done.stdout + done.stderr
    ha = run_ckdemo(
        shared_home, "bench", "--op", "random", "--count", "50", "--slot", "pkcs11:model=HA%20virtual%20token"
    )
    assert ha.returncode == 0 and "%" in ha.stdout, ha.stdout + ha.stderr  # member shares: the HA slot
    missing = run_ckdemo(shared_home, "bench", "--slot", "pkcs11:token=nope")
    assert missing.returncode == 2 and missing.stderr.startswith("ckdemo: no slot matches"), missing.stderr


@requires_softhsm
def test_the_menu_takes_a_pkcs11_uri_where_it_asks_for_a_slot(menu, shared_home):
    code, out = menu(shared_home, "12\npkcs11:token=member2\n12\npkcs11:model=HA%20virtual%20token\n0\n")
    assert code == 0, out
    labels = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.strip().startswith("Label")]
    assert labels == ["member2", "ckdemo-ha"], out
    for answer, says in (
        ("pkcs11:token=nope", "pkcs11:token=nope matches no slot(s)."),
        ("pkcs11:tokn=x", "'tokn=x' is not a pkcs11 URI path attribute"),
        ("two", "a number is needed. A pkcs11: URI names a slot too"),
    ):
        code, out = menu(shared_home, f"12\n{answer}\n0\n")
        assert code == 1 and says in out, out
        no_traceback(out)
