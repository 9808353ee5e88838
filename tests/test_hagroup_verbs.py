"""LunaCM's `hagroup` verbs as Luna users type them, on real SoftHSM2 tokens.

- listgroups, recover, haonly -enable/-disable/-show, synchronize -enable/-disable,
  addmember/removemember, recoverymode, beside ckdemo's own spellings;
- `hagroup show` / `listgroups` on a Luna client's Chrystoki.conf when the Luna library is not on
  this machine: the groups from the file, and the members' live state only when the library loads;
- a change made while a menu runs: the menu re-reads the file before the next choice (tmux drives
  the real menu in a terminal while `ckdemo hagroup ...` runs in another process).

Token state is read back with pkcs11-tool; the menu's own view is what a person would read.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import MEMBERS, USER_PIN, no_traceback, requires_softhsm
from test_ha_demo import token_serials

pytestmark = requires_softhsm

LUNA_TEMPLATE = Path(__file__).resolve().parent / "data" / "luna-Chrystoki.conf"
GROUP = "ckdemo-ha"
LUNA_GROUP = "lunaHA"
MISSING_LUNA_LIBRARY = "/usr/safenet/lunaclient/lib/libCryptoki2_64.so"


def ok(done) -> str:
    no_traceback(done.stdout, done.stderr)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def refused(done) -> str:
    """A refusal: exit 2, exactly one line on stderr (no Usage block, no traceback)."""
    no_traceback(done.stdout, done.stderr)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ckdemo: "), done.stderr
    return lines[0]


def members_line(home: Path) -> str:
    [line] = [
        l.strip()
        for l in (home / "Chrystoki.conf").read_text().splitlines()
        if l.strip().startswith("VirtualToken00Members")
    ]
    return line


# ------------------------------------------------------------------------ a Luna client file


@pytest.fixture(scope="module")
def luna_tokens(tmp_path_factory, provision) -> Path:
    return provision(tmp_path_factory.mktemp("luna") / "home")


@pytest.fixture
def luna(tmp_path, luna_tokens, run_ckdemo):
    """tests/data/luna-Chrystoki.conf with this home's member serials; `library` chooses whether
    LibUNIX64 is SoftHSM2 (loads here) or Luna's libCryptoki2_64.so (not on this machine)."""
    serials = token_serials(luna_tokens)
    log_dir = tmp_path / "halog"
    log_dir.mkdir()
    template = LUNA_TEMPLATE.read_text()
    for n, label in enumerate(MEMBERS, start=1):
        template = template.replace(f"@MEMBER{n}@", serials[label])
    template = template.replace("@LOGDIR@", str(log_dir))

    def run(*args: str, library: bool = True):
        conf = tmp_path / "Chrystoki.conf"
        if not conf.exists():
            text = (
                template
                if library
                else template.replace("/usr/lib/softhsm/libsofthsm2.so", MISSING_LUNA_LIBRARY)
            )
            conf.write_text(text)
        return run_ckdemo(
            tmp_path / "unused-home",
            "--config",
            str(conf),
            *args,
            env={"SOFTHSM2_CONF": str(luna_tokens / "softhsm2.conf")},
        )

    return SimpleNamespace(
        run=run, serials=[serials[m] for m in MEMBERS], logs=log_dir, path=tmp_path / "Chrystoki.conf"
    )


def test_show_a_luna_file_without_the_luna_library(luna):
    assert not Path(MISSING_LUNA_LIBRARY).exists()
    out = ok(luna.run("hagroup", "show", library=False))
    m1, m2, m3 = luna.serials
    lines = out.splitlines()
    assert lines[0] == f"HA group {LUNA_GROUP}  serial 1{m1}"
    assert [line.split() for line in lines[3:6]] == [
        ["1", m1, "-", "-", "-"],
        ["2", m2, "-", "-", "-"],
        ["3", m3, "-", "-", "-"],
    ]
    assert (
        f"reconnAtt = 3 (attempts); AutoReconnectInterval = 7 s; HAOnly = 1; "
        f"haLogStatus = enabled; haLogPath = {luna.logs}" in lines
    )
    [why] = [line for line in lines if line.startswith("Members' live state not shown:")]
    assert f"cannot use PKCS#11 library {MISSING_LUNA_LIBRARY}" in why
    assert "Recovery mode:     activeBasic (inside an application call)" in out


def test_listgroups_a_luna_file_without_the_luna_library(luna):
    out = ok(luna.run("hagroup", "listgroups", library=False))
    m1, m2, m3 = luna.serials
    assert f"HA Group Label:   {LUNA_GROUP}\n" in out
    assert f"HA Group Number:  1{m1}\n" in out
    assert f"Group Members:    {m1}, {m2}, {m3}\n" in out
    assert "Synchronization:  enabled (HASynchronize)\n" in out
    assert re.search(rf"(?m)^2 +{m2} +- +not known$", out), out
    assert "HA auto recovery:  enabled, 3 attempts, every 7 s\n" in out
    assert "HA only:           enabled (HAOnly)\n" in out
    assert f"HA log:            enabled, {luna.logs}\n" in out
    assert out.count(f"Members' live state not shown: cannot use PKCS#11 library {MISSING_LUNA_LIBRARY}") == 1


def test_the_same_luna_file_with_a_library_that_loads_shows_live_state(luna):
    out = ok(luna.run("hagroup", "listgroups"))
    m1, m2, m3 = luna.serials
    for n, (serial, label) in enumerate(zip(luna.serials, MEMBERS), start=1):
        assert re.search(rf"(?m)^{n} +{serial} +{label} +alive \(CKR_OK\)$", out), out
    assert "live state not shown" not in out
    show = ok(luna.run("hagroup", "show"))
    assert [line.split() for line in show.splitlines()[3:6]] == [
        ["1", m1, "member1", "yes", "CKR_OK"],
        ["2", m2, "member2", "yes", "CKR_OK"],
        ["3", m3, "member3", "yes", "CKR_OK"],
    ]


def test_edits_on_a_luna_file_without_the_library(luna):
    """haonly, synchronize and removemember by serial need no library; addmember needs to see
    the token, so without the library it is refused, saying why."""
    m1, m2, m3 = luna.serials
    ok(luna.run("hagroup", "haonly", "-disable", library=False))
    ok(luna.run("hagroup", "synchronize", "-group", LUNA_GROUP, "-disable", library=False))
    ok(luna.run("hagroup", "removemember", "-group", LUNA_GROUP, "-serial", m2, library=False))
    text = luna.path.read_text()
    assert "   HAOnly = 0;\n" in text and "   lunaHA = 0;\n" in text
    assert f"   VirtualToken00Members = {m1},{m3};\n" in text
    line = refused(luna.run("hagroup", "addmember", "-serial", m2, library=False))
    assert f"no token with serial {m2} that ckdemo can see" in line
    assert f"cannot use PKCS#11 library {MISSING_LUNA_LIBRARY}" in line
    assert luna.path.read_text() == text


# ------------------------------------------------------------------------ a default home


def test_listgroups_on_a_fresh_home(run_ckdemo, home):
    serials = token_serials(home)
    out = ok(run_ckdemo(home, "hagroup", "listgroups"))
    m1, m2, m3 = (serials[m] for m in MEMBERS)
    assert out.startswith(f"HA Group Label:   {GROUP}\nHA Group Number:  1{m1}\n"), out
    assert f"Group Members:    {m1}, {m2}, {m3}\n" in out
    for n, label in enumerate(MEMBERS, start=1):
        assert re.search(rf"(?m)^{n} +{serials[label]} +{label} +alive \(CKR_OK\)$", out), out
    assert "HA auto recovery:  enabled, unlimited attempts, every 60 s\n" in out
    assert "HA only:           disabled (HAOnly)\n" in out


def test_haonly_in_lunacm_spellings_and_ours(run_ckdemo, home):
    conf = home / "Chrystoki.conf"
    assert ok(run_ckdemo(home, "hagroup", "haonly", "--show")).startswith("HAOnly = 0 ")
    out = ok(run_ckdemo(home, "hagroup", "haonly", "-enable"))
    assert out.splitlines()[0] == f"Updated {conf}: HAOnly = 1"
    assert "keeps the old value until it restarts" in out  # HAOnly cannot change under a menu
    assert "   HAOnly = 1;\n" in conf.read_text()
    assert ok(run_ckdemo(home, "hagroup", "haonly", "-show")).startswith("HAOnly = 1 ")
    ok(run_ckdemo(home, "hagroup", "haonly", "--disable"))
    assert "   HAOnly = 0;\n" in conf.read_text()
    ok(run_ckdemo(home, "hagroup", "haonly", "on"))
    assert "   HAOnly = 1;\n" in conf.read_text()
    before = conf.read_bytes()
    for args in (("haonly",), ("haonly", "off", "--enable"), ("haonly", "--enable", "--disable")):
        assert "give exactly one of on, off, --enable, --disable, --show" in refused(
            run_ckdemo(home, "hagroup", *args)
        )
    assert conf.read_bytes() == before


def test_retry_and_interval_take_lunacm_spellings(run_ckdemo, home):
    out = ok(run_ckdemo(home, "hagroup", "retry", "-count", "2"))
    assert "A running ckdemo menu applies it before its next choice" in out
    ok(run_ckdemo(home, "hagroup", "interval", "-interval", "7"))
    text = (home / "Chrystoki.conf").read_text()
    assert "   reconnAtt = 2;\n" in text and "   AutoReconnectInterval = 7;\n" in text


def test_recoverymode_sets_luna_s_key_and_shows_it(run_ckdemo, home):
    conf = home / "Chrystoki.conf"
    shown = run_ckdemo(home, "hagroup", "recoverymode")
    assert shown.returncode == 0 and "Recovery mode: activeBasic" in shown.stdout, shown.stderr
    done = run_ckdemo(home, "hagroup", "recoverymode", "-mode", "activeenhanced")  # any case
    assert done.returncode == 0, done.stderr
    assert "VirtualTokenActiveRecovery = activeEnhanced" in conf.read_text()
    assert (
        "Recovery mode:     activeEnhanced (in the background"
        in run_ckdemo(home, "hagroup", "listgroups").stdout
    )
    assert run_ckdemo(home, "hagroup", "recoverymode", "--mode", "activeBasic").returncode == 0
    assert "VirtualTokenActiveRecovery = activeBasic" in conf.read_text()
    refused_mode = run_ckdemo(home, "hagroup", "recoverymode", "-mode", "fast")
    assert refused_mode.returncode == 2 and "'fast' is not one of" in refused_mode.stderr
    text = conf.read_text().replace(
        "VirtualTokenActiveRecovery = activeBasic", "VirtualTokenActiveRecovery = sometimes"
    )
    conf.write_text(text)
    bad = run_ckdemo(home, "hagroup", "recoverymode")
    assert bad.returncode == 2 and "'sometimes': one of activeBasic, activeEnhanced" in bad.stderr


def test_hasynchronize_switch_decides_what_ha_login_completes(run_ckdemo, menu, home, independent):
    """A key on member1 only (put there by pkcs11-tool, as a killed writer leaves it): with
    HASynchronize off, HA login (51) leaves member2 and member3 without it and says so; on, HA
    login copies it to them."""
    made = independent(
        home,
        "--token-label",
        "member1",
        "--login",
        "--pin",
        USER_PIN,
        "--keygen",
        "--key-type",
        "AES:16",
        "--id",
        "5050",
        "--label",
        "solo-key",
        "--extractable",
    )  # a sensitive, unextractable key could not be copied
    assert made.returncode == 0, made.stderr

    def holders() -> list[str]:
        found = []
        for member in MEMBERS:
            listing = independent(
                home,
                "--token-label",
                member,
                "--login",
                "--pin",
                USER_PIN,
                "--list-objects",
                "--type",
                "secrkey",
            )
            assert listing.returncode == 0, listing.stderr
            if "solo-key" in listing.stdout:
                found.append(member)
        return found

    out = ok(run_ckdemo(home, "hagroup", "synchronize", "-group", GROUP, "-disable"))
    assert out.splitlines()[0].endswith(f"HASynchronize {GROUP} = 0")
    assert f"   {GROUP} = 0;\n" in (home / "Chrystoki.conf").read_text()
    assert f"HASynchronize {GROUP} = 0" in ok(run_ckdemo(home, "hagroup", "show"))
    login = "51\n${HA_SLOT}\n${CKDEMO_USER_PIN}\n0\n"
    code, transcript = menu(home, login)
    assert code == 0, transcript
    assert "1 object(s) on some members only (HASynchronize off" in transcript
    assert holders() == ["member1"]

    ok(run_ckdemo(home, "hagroup", "synchronize", "--enable"))
    code, transcript = menu(home, login)
    assert code == 0, transcript
    assert "completed at HA login: 2 object(s) copied" in transcript  # to member2 and member3
    assert holders() == list(MEMBERS)


def test_removemember_and_addmember_by_label_and_serial(run_ckdemo, menu, home):
    serials = token_serials(home)
    m1, m2, m3 = (serials[m] for m in MEMBERS)
    out = ok(run_ckdemo(home, "hagroup", "removemember", "-label", "member3"))
    assert out.splitlines()[0].endswith(f"HA group {GROUP} members = {m1},{m2}")
    assert members_line(home) == f"VirtualToken00Members = {m1},{m2};"
    # the HA group a new process builds has two members
    code, transcript = menu(home, "52\n${HA_SLOT}\n0\n")
    assert code == 0, transcript
    assert re.findall(r"(?m)^   HSM (\S+) +- CKR_OK$", transcript) == [m1, m2]

    ok(run_ckdemo(home, "hagroup", "removemember", "--serial", m1))  # the primary leaves...
    show = ok(run_ckdemo(home, "hagroup", "show"))
    assert show.splitlines()[0] == f"HA group {GROUP}  serial 1{m1}"  # ...the group serial stays
    assert f"VirtualToken00SN = 1{m1};" in (home / "Chrystoki.conf").read_text()

    before = (home / "Chrystoki.conf").read_bytes()
    assert refused(run_ckdemo(home, "hagroup", "removemember", "--serial", m2)) == (
        f"ckdemo: HSM {m2} is the last member of HA group {GROUP}: a group needs one member "
        "(`ckdemo hagroup deletegroup -label L` deletes the group)"
    )
    assert refused(run_ckdemo(home, "hagroup", "removemember", "--serial", m3)) == (
        f"ckdemo: HSM {m3} is not a member of HA group {GROUP} (members: {m2})"
    )
    assert "no token with serial 0123456789abcdef that ckdemo can see" in refused(
        run_ckdemo(home, "hagroup", "addmember", "--serial", "0123456789abcdef")
    )
    assert "no token labelled 'member9'" in refused(
        run_ckdemo(home, "hagroup", "addmember", "--label", "member9")
    )
    assert "name the member with one of --serial, --label" in refused(
        run_ckdemo(home, "hagroup", "addmember", "--serial", m1, "--label", "member1")
    )
    assert "no HA group 'other'" in refused(
        run_ckdemo(home, "hagroup", "addmember", "-group", "other", "-serial", m1)
    )
    assert (home / "Chrystoki.conf").read_bytes() == before

    ok(run_ckdemo(home, "hagroup", "addmember", "-group", GROUP, "-serial", m1))
    ok(run_ckdemo(home, "hagroup", "addmember", "--label", "member3"))
    assert members_line(home) == f"VirtualToken00Members = {m2},{m1},{m3};"
    assert refused(run_ckdemo(home, "hagroup", "addmember", "--label", "member3")) == (
        f"ckdemo: HSM {m3} is already a member of HA group {GROUP}"
    )


def test_recover_without_a_server_tries_the_members_missing_at_start(run_ckdemo, home):
    serials = token_serials(home)
    m3 = serials["member3"]
    [token_dir] = [d for d in (home / "tokens").iterdir() if d.name.replace("-", "").endswith(m3)]
    aside = home.parent / "member3-aside"
    shutil.move(str(token_dir), aside)
    try:
        out = ok(run_ckdemo(home, "hagroup", "recover"))
    finally:
        shutil.move(str(aside), token_dir)
    assert "No ckdemo serve runs for this home: recovering in this process" in out
    assert f"HSM {m3} (-): still down" in out
    statuses = dict(re.findall(r"(?m)^   HSM (\S+) +- (CKR_\w+)$", out))
    assert statuses[m3] != "CKR_OK" and statuses[serials["member1"]] == "CKR_OK"
    back = ok(run_ckdemo(home, "hagroup", "recover"))
    assert "Every member this process reaches is in service: nothing to recover here." in back
    assert set(re.findall(r"(?m)^   HSM \S+ +- (CKR_\w+)$", back)) == {"CKR_OK"}


def test_recover_goes_through_a_running_server(home, ckdemo_bin, run_ckdemo):
    from rpc_capture import tools_missing

    if tools_missing():
        pytest.skip(tools_missing())
    from test_serve import start_server, stop_server

    served = start_server(ckdemo_bin, home, None, home.parent / "serve.log")
    try:
        ok(run_ckdemo(home, "member", "fail", "member1"))
        ok(run_ckdemo(home, "hagroup", "status"))  # the server sees member1 down
        ok(run_ckdemo(home, "member", "restore", "member1"))
        out = ok(run_ckdemo(home, "hagroup", "recover"))
    finally:
        assert stop_server(served) == 0, served.log()
    member1 = token_serials(home)["member1"]
    assert f"HSM {member1} (member1): recovered" in out
    assert "No ckdemo serve runs" not in out
    assert set(re.findall(r"(?m)^   HSM \S+ +- (CKR_\w+)$", out)) == {"CKR_OK"}
    assert f"control: manual recovery of HSM {member1}: recovered" in served.log()


# ------------------------------------------------------------------------ the re-read, as a unit


def test_config_watch_applies_x_and_n_through_the_policy_and_names_the_rest(tmp_path):
    from ckdemo.config.chrystoki import ChrystokiConf
    from ckdemo.config.watch import ConfigWatch
    from ckdemo.ha.policy import RecoveryPolicy

    path = tmp_path / "Chrystoki.conf"
    path.write_text("VirtualToken = {\n   VirtualToken00Label = g;\n   VirtualToken00Members = a,b;\n}\n")
    policy = RecoveryPolicy(clock=lambda: 0.0)
    group = SimpleNamespace(label="g", policy=policy)
    watch = ConfigWatch(path, ChrystokiConf.load(path), [group])
    assert watch.poll() == [] and (policy.interval_s, policy.retries) == (60.0, -1)
    assert watch.poll() == []  # unchanged file: not even read
    conf = ChrystokiConf.load(path)
    conf.set("HAConfiguration", "AutoReconnectInterval", "5")
    conf.set("HAConfiguration", "reconnAtt", "2")
    conf.set("HAConfiguration", "HAOnly", "1")
    conf.save(path)
    notices = watch.poll()
    assert (policy.interval_s, policy.retries) == (5.0, 2)
    assert notices == [
        "Chrystoki.conf changed: recovery every 5 s, 2 attempts, from this choice on",
        "Chrystoki.conf changed HAOnly: this menu keeps 0 until it restarts",
    ]
    assert watch.poll() == []
    path.write_text(path.read_text().replace("reconnAtt = 2", "reconnAtt = two"))
    [bad] = watch.poll()
    assert "cannot be used" in bad and "reconnAtt = 'two' is not a number" in bad
    assert policy.retries == 2  # a value that cannot be used changes nothing


# ------------------------------------------------------------------------ a change while a menu runs


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_a_running_menu_picks_up_interval_and_retry_and_names_haonly(home, ckdemo_bin, run_ckdemo, tmp_path):
    from test_terminal import PROMPT, Terminal, since

    pane = Terminal([str(ckdemo_bin), "--home", str(home)], tmp_path / "exit-code")
    try:
        screen = pane.wait_for_prompt(PROMPT)
        pane.answer(PROMPT, "122")
        screen = pane.wait_for_prompt("Select a slot:")
        [ha_slot] = re.findall(r"slot#(\d+) - HA Virtual Card Slot", screen)
        pane.answer("Select a slot:", ha_slot)
        screen = since(pane.wait_for_prompt(PROMPT), "Select a slot: " + ha_slot)
        assert "Recovery (activeBasic, inside a call): every 60 s, unlimited attempts" in screen

        # member2 fails, then its failure is lifted: with X = 60 s it stays out
        pane.answer(PROMPT, "120")
        pane.answer("Select a slot:", ha_slot)
        pane.answer("Select a member:", "2")
        pane.answer(PROMPT, "121")
        pane.answer("Select a slot:", ha_slot)
        pane.answer("Select a member:", "2")
        pane.wait_for_prompt(PROMPT)

        # another terminal changes X and N
        assert "A running ckdemo menu applies it before its next choice" in ok(
            run_ckdemo(home, "hagroup", "interval", "--seconds", "0.5")
        )
        ok(run_ckdemo(home, "hagroup", "retry", "-count", "2"))
        time.sleep(0.6)  # X of the new setting, so the next call is due to recover member2
        pane.answer(PROMPT, "52")
        pane.answer("Select a slot:", ha_slot)
        screen = since(pane.wait_for_prompt(PROMPT), "Select a slot: " + ha_slot)
        assert (
            "(Chrystoki.conf changed: recovery every 0.5 s, 2 attempts, from this choice on)" in pane.screen()
        )
        member2 = token_serials(home)["member2"]
        assert re.search(rf"(?m)^   HSM {member2} +- CKR_OK$", screen), screen  # recovered

        pane.answer(PROMPT, "122")
        pane.answer("Select a slot:", ha_slot)
        screen = since(pane.wait_for_prompt(PROMPT), "Select a slot: " + ha_slot)
        assert "Recovery (activeBasic, inside a call): every 0.5 s, 2 attempts" in screen

        # HAOnly cannot change under a running menu: it says so and keeps its slot list
        ok(run_ckdemo(home, "hagroup", "haonly", "-enable"))
        pane.answer(PROMPT, "14")
        screen = since(pane.wait_for_prompt(PROMPT), "Enter your choice : 14")
        assert "(Chrystoki.conf changed HAOnly: this menu keeps 0 until it restarts)" in pane.screen()
        assert "member1" in screen and "HA Virtual Card Slot" in screen
        pane.answer(PROMPT, "0")
        assert pane.wait_for_exit() == "0"
    finally:
        pane.close()


def test_addstandby_and_removestandby_as_lunacm_spells_them(run_ckdemo, menu, home):
    """A member made standby: listgroups and show say so, and in a menu run its calls stay at 0
    while the others sign (HA Status adds a line for it); removestandby makes it active again."""
    serials = token_serials(home)
    m3 = serials["member3"]
    said = ok(run_ckdemo(home, "hagroup", "addstandby", "-group", GROUP, "-serial", m3))
    assert f"standby = {m3}" in said
    assert f"VirtualToken00Standby = {m3}" in (home / "Chrystoki.conf").read_text()
    listed = ok(run_ckdemo(home, "hagroup", "listgroups"))
    assert f"Standby Members:  {m3}" in listed and m3 not in next(
        l for l in listed.splitlines() if l.startswith("Group Members:")
    )
    assert re.search(rf"3 +{m3} +member3 +standby", ok(run_ckdemo(home, "hagroup", "show")))
    # a menu run: HA login, open a session, 12 random calls, HA Status, 122; then members 1 and 2
    # failed (120), a random call (member3 serves it), HA Status and 122 again
    code, out = menu(
        home,
        f"51\n5\n{USER_PIN}\n1\n5\ny\n"
        + "62\n${LAST_SESSION}\n16\n" * 12
        + "52\n5\n122\n5\n"
        + "120\n5\n1\n120\n5\n2\n62\n${LAST_SESSION}\n16\n52\n5\n122\n5\n0\n",
    )
    assert code == 0, out
    idle, promoted = out.split("Enter your choice : 120", 1)
    assert f"HSM {m3}: standby member, idle while an active member serves" in idle
    rows = {r[1]: r for r in (line.split() for line in idle.splitlines()) if len(r) >= 5 and r[0] in "123"}
    assert rows[m3][4] == "0", rows  # member3 served no call
    # 122's State says standby as 52 does, not active
    assert (rows[serials["member1"]][3], rows[m3][3]) == ("active", "standby"), rows
    assert f"HSM {m3}: standby member, serving: every active member has failed" in promoted
    stats = promoted[promoted.rindex("Enter your choice : 122") :]
    assert re.search(rf"3 +{m3} +member3 +standby \(serving\) +1 ", stats), stats
    assert re.search(rf"1 +{serials['member1']} +member1 +(failed|down) ", stats), stats
    # refusals: not a member; every member standby
    assert "is not a member of" in refused(
        run_ckdemo(home, "hagroup", "addstandby", "-serial", "0123456789abcdef")
    )
    ok(run_ckdemo(home, "hagroup", "addstandby", "-serial", serials["member2"]))
    assert "one must stay active" in refused(
        run_ckdemo(home, "hagroup", "addstandby", "-serial", serials["member1"])
    )
    ok(run_ckdemo(home, "hagroup", "removestandby", "-serial", m3))
    ok(run_ckdemo(home, "hagroup", "removestandby", "--label", "member2"))
    assert "Standby" not in (home / "Chrystoki.conf").read_text()


def test_lunacm_spellings_creategroup_deletegroup_group_option_and_any_case(run_ckdemo, home):
    serials = token_serials(home)
    m3 = serials["member3"]
    conf = home / "Chrystoki.conf"
    assert "Standby Members:" in ok(run_ckdemo(home, "hagroup", "listGroups"))  # any case
    assert "is a member of HA group ckdemo-ha already: a token is in one group only" in refused(
        run_ckdemo(home, "hagroup", "createGroup", "-label", "second", "-serial", m3)
    )
    ok(run_ckdemo(home, "hagroup", "removemember", "-group", GROUP, "-serial", m3))
    said = ok(
        run_ckdemo(
            home, "hagroup", "creategroup", "-label", "second", "-serial", m3, "-password", "not-stored"
        )
    )
    assert "HA group second created with member" in said and "not-stored" not in conf.read_text()
    assert f"VirtualToken01Members = {m3}" in conf.read_text()
    only = ok(run_ckdemo(home, "hagroup", "listgroups", "-group", "second"))
    assert "HA Group Label:   second" in only and "ckdemo-ha" not in only
    assert f"HA Group Number:  1{m3}" in only  # Luna: 1 + the first member's serial
    assert "an HA group 'second' exists already" in refused(
        run_ckdemo(home, "hagroup", "creategroup", "-label", "second", "-serial", serials["member1"])
    )
    ok(run_ckdemo(home, "hagroup", "retry", "-group", "second", "-count", "4"))
    assert "no HA group 'third'" in refused(
        run_ckdemo(home, "hagroup", "interval", "-group", "third", "-interval", "5")
    )
    assert "no HA group 'third'" in refused(run_ckdemo(home, "hagroup", "recover", "-group", "third"))
    ok(run_ckdemo(home, "hagroup", "log", "-enable"))
    assert "haLogStatus = enabled" in conf.read_text()
    ok(run_ckdemo(home, "hagroup", "log", "-disable"))
    assert "give exactly one of on, off, -enable, -disable" in refused(
        run_ckdemo(home, "hagroup", "log", "on", "-disable")
    )
    ok(run_ckdemo(home, "hagroup", "deleteGroup", "-group", "second"))  # -group as elsewhere
    assert "VirtualToken01" not in conf.read_text()
    ok(run_ckdemo(home, "hagroup", "addmember", "-group", GROUP, "-serial", m3))
