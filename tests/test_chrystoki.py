"""Chrystoki.conf / crystoki.ini reader-writer: parse, edit in place, lossless round trip, safe save."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ckdemo.config.chrystoki import ChrystokiConf, ChrystokiSyntaxError

DATA = Path(__file__).parent / "data"
LINUX_CONF = DATA / "chrystoki_ha.conf"
WINDOWS_INI = DATA / "crystoki_ha.ini"

BRIEF_EXAMPLE = """\
Chrystoki2 = {
   LibUNIX = /usr/safenet/lunaclient/lib/libCryptoki2.so;
   LibUNIX64 = /usr/safenet/lunaclient/lib/libCryptoki2_64.so;
}
Luna = {
   DefaultTimeOut = 500000;
   PEDTimeout1 = 100000;
}
CardReader = {
   RemoteCommand = 1;
}
VirtualToken = {
   VirtualToken00Label = myHAgroup;
   VirtualToken00SN = 1154438865287;
   VirtualToken00Members = 154438865287,1238700701509;
}
HAConfiguration = {
   reconnAtt = -1;
   AutoReconnectInterval = 60;
   HAOnly = 1;
}
HASynchronize = {
   myHAgroup = 1;
}
"""


def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    """Pairs of lines that differ, assuming the line count did not change."""
    a, b = before.splitlines(keepends=True), after.splitlines(keepends=True)
    assert len(a) == len(b)
    return [(x, y) for x, y in zip(a, b) if x != y]


# -- parsing ----------------------------------------------------------------------------------


def test_parse_example_sections_in_file_order():
    conf = ChrystokiConf.parse(BRIEF_EXAMPLE)
    assert conf.sections() == [
        "Chrystoki2",
        "Luna",
        "CardReader",
        "VirtualToken",
        "HAConfiguration",
        "HASynchronize",
    ]
    assert conf.dialect == "conf"


def test_parse_example_values_without_semicolon_or_spaces():
    conf = ChrystokiConf.parse(BRIEF_EXAMPLE)
    assert conf.section("VirtualToken") == {
        "VirtualToken00Label": "myHAgroup",
        "VirtualToken00SN": "1154438865287",
        "VirtualToken00Members": "154438865287,1238700701509",
    }
    assert conf.get("Chrystoki2", "LibUNIX64") == "/usr/safenet/lunaclient/lib/libCryptoki2_64.so"
    assert conf.get("HAConfiguration", "reconnAtt") == "-1"


def test_section_is_a_copy_and_absent_section_is_empty():
    conf = ChrystokiConf.parse(BRIEF_EXAMPLE)
    conf.section("Luna")["DefaultTimeOut"] = "1"
    assert conf.get("Luna", "DefaultTimeOut") == "500000"
    assert conf.section("NoSuchSection") == {}


def test_get_default_for_absent_key_or_section():
    conf = ChrystokiConf.parse(BRIEF_EXAMPLE)
    assert conf.get("Luna", "NoSuchKey") is None
    assert conf.get("Nope", "reconnAtt", "5") == "5"


def test_lookup_falls_back_to_case_insensitive_match():
    conf = ChrystokiConf.parse(BRIEF_EXAMPLE)
    assert conf.get("haconfiguration", "reconnatt") == "-1"
    assert conf.get("HAConfiguration", "HAONLY") == "1"
    assert conf.sections()[4] == "HAConfiguration"  # the spelling in the file is kept


def test_exact_key_wins_over_case_insensitive_match():
    conf = ChrystokiConf.parse("S = {\n   haonly = 0;\n   HAOnly = 1;\n}\n")
    assert conf.get("S", "HAOnly") == "1"
    assert conf.get("S", "haonly") == "0"


def test_linux_file_with_spaced_section_names_comments_and_empty_values():
    conf = ChrystokiConf.load(LINUX_CONF)
    assert "LunaSA Client" in conf.sections()
    assert "Secure Trusted Channel" in conf.sections()
    assert conf.get("LunaSA Client", "ServerHtl00") == ""
    assert conf.get("Secure Trusted Channel", "SoftTokenDir") == "/usr/safenet/lunaclient/config/stc/token"
    assert conf.get("HAConfiguration", "AutoReconnectInterval") == "60"  # after an in-section comment


def test_windows_ini_dialect_with_paths_containing_spaces():
    conf = ChrystokiConf.load(WINDOWS_INI)
    assert conf.dialect == "ini"
    assert conf.sections()[:3] == ["Chrystoki2", "Luna", "LunaSA Client"]
    assert conf.get("Chrystoki2", "LibNT") == r"C:\Program Files\SafeNet\LunaClient\cryptoki.dll"
    assert conf.get("VirtualToken", "VirtualToken00Members") == "154438865287,1238700701509"


def test_value_keeps_everything_after_the_first_equals_sign():
    conf = ChrystokiConf.parse("Misc = {\n   Extra = a=b; c = d ;\n   Path = /opt/luna client/bin;\n}\n")
    assert conf.get("Misc", "Extra") == "a=b; c = d"
    assert conf.get("Misc", "Path") == "/opt/luna client/bin"


def test_value_without_trailing_semicolon_is_accepted():
    conf = ChrystokiConf.parse("Luna = {\n   DefaultTimeOut = 500000\n}\n")
    assert conf.get("Luna", "DefaultTimeOut") == "500000"


# -- syntax errors carry source:line ----------------------------------------------------------


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("Luna = {\n   DefaultTimeOut = 1;\n", 1, "unterminated section 'Luna'"),
        ("Luna = {\n}\nDefaultTimeOut = 1;\n", 3, "outside a section"),
        ("Luna = {\n   DefaultTimeOut 500000;\n}\n", 2, "missing '='"),
        ("Luna = {\n   A = 1;\nMisc = {\n}\n}\n", 3, "opened inside section 'Luna'"),
        ("}\n", 1, "without an open section"),
        ("Luna = {\n}\nluna = {\n}\n", 3, "already defined at line 1"),
        ("Luna = {\n   A = 1;\n   A = 2;\n}\n", 3, "repeated"),
        ("Luna = {\n}\n[Misc]\n", 3, "ini-style header"),
        ("[Luna]\nA=1\nB\n", 3, "missing '='"),
        ("A=1\n[Luna]\n", 1, "outside a section"),
    ],
)
def test_syntax_errors_name_source_and_line(text, line, words):
    with pytest.raises(ChrystokiSyntaxError) as caught:
        ChrystokiConf.parse(text, source="/etc/Chrystoki.conf")
    assert str(caught.value).startswith(f"/etc/Chrystoki.conf:{line}: ")
    assert words in str(caught.value)


def test_syntax_error_is_a_value_error():
    assert issubclass(ChrystokiSyntaxError, ValueError)


def test_load_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        ChrystokiConf.load(tmp_path / "Chrystoki.conf")


def test_load_names_the_path_in_errors(tmp_path):
    path = tmp_path / "Chrystoki.conf"
    path.write_text("Luna = {\n")
    with pytest.raises(ChrystokiSyntaxError, match=f"^{path}:1: "):
        ChrystokiConf.load(path)


# -- round trip -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [LINUX_CONF, WINDOWS_INI], ids=["conf", "ini"])
def test_round_trip_is_byte_identical(path, tmp_path):
    out = tmp_path / path.name
    ChrystokiConf.load(path).save(out)
    assert out.read_bytes() == path.read_bytes()


@pytest.mark.parametrize(
    "text",
    [
        BRIEF_EXAMPLE,
        BRIEF_EXAMPLE.replace("\n", "\r\n"),
        "# only a comment, no newline at end",
        "",
        "\tLuna={\n\t\tA=1;   \n\n\t}  \n# tail\n",
    ],
)
def test_dumps_returns_the_text_unchanged(text):
    assert ChrystokiConf.parse(text).dumps() == text


def test_comments_and_blank_lines_survive_an_edit():
    original = LINUX_CONF.read_text()
    conf = ChrystokiConf.parse(original)
    conf.set("HAConfiguration", "AutoReconnectInterval", "120")
    out = conf.dumps()
    for line in original.splitlines():
        if line.strip().startswith("#") or not line.strip():
            assert line in out.splitlines()
    assert changed_lines(original, out) == [
        ("   AutoReconnectInterval = 60;\n", "   AutoReconnectInterval = 120;\n")
    ]


# -- set / remove -----------------------------------------------------------------------------


def test_set_existing_key_rewrites_only_its_value():
    conf = ChrystokiConf.parse(BRIEF_EXAMPLE)
    conf.set("HAConfiguration", "reconnAtt", "3")
    assert changed_lines(BRIEF_EXAMPLE, conf.dumps()) == [("   reconnAtt = -1;\n", "   reconnAtt = 3;\n")]
    assert conf.get("HAConfiguration", "reconnAtt") == "3"


def test_set_through_case_insensitive_match_keeps_the_files_spelling():
    conf = ChrystokiConf.parse(BRIEF_EXAMPLE)
    conf.set("haconfiguration", "reconnatt", "5")
    assert "   reconnAtt = 5;\n" in conf.dumps()
    assert "reconnatt" not in conf.dumps()


def test_set_keeps_the_lines_own_spacing_and_terminator():
    text = "Luna = {\n\tDefaultTimeOut=500000 ;\r\n}\n"
    conf = ChrystokiConf.parse(text)
    conf.set("Luna", "DefaultTimeOut", "1")
    assert conf.dumps() == "Luna = {\n\tDefaultTimeOut=1 ;\r\n}\n"


def test_set_new_key_in_existing_section_leaves_every_other_line_identical():
    conf = ChrystokiConf.parse(BRIEF_EXAMPLE)
    conf.set("HAConfiguration", "haLogStatus", "enabled")
    before, after = BRIEF_EXAMPLE.splitlines(keepends=True), conf.dumps().splitlines(keepends=True)
    assert len(after) == len(before) + 1
    added = after.index("   haLogStatus = enabled;\n")
    assert after[:added] + after[added + 1 :] == before
    assert after[added - 1] == "   HAOnly = 1;\n"  # after the section's last entry
    assert list(conf.section("HAConfiguration")) == [
        "reconnAtt",
        "AutoReconnectInterval",
        "HAOnly",
        "haLogStatus",
    ]


def test_set_new_key_copies_the_neighbours_style_in_ini():
    original = WINDOWS_INI.read_bytes().decode()
    conf = ChrystokiConf.parse(original)
    conf.set("HAConfiguration", "haLogStatus", "enabled")
    out = conf.dumps()
    assert "HAOnly=1\r\nhaLogStatus=enabled\r\n[HASynchronize]\r\n" in out
    assert out.replace("haLogStatus=enabled\r\n", "", 1) == original


@pytest.mark.parametrize(
    "text, section, key, value, expected",
    [
        pytest.param(
            "CardReader = {\n}\n",
            "CardReader",
            "RemoteCommand",
            "1",
            "CardReader = {\n   RemoteCommand = 1;\n}\n",
            id="new key in an empty section goes after the header",
        ),
        pytest.param(
            "[Luna]\r\nDefaultTimeOut=500000",
            "Misc",
            "PE1746Enabled",
            "0",
            "[Luna]\r\nDefaultTimeOut=500000\r\n[Misc]\r\nPE1746Enabled=0\r\n",
            id="new section in ini and a missing final newline",
        ),
        pytest.param(
            "",
            "HAConfiguration",
            "HAOnly",
            "1",
            "HAConfiguration = {\n   HAOnly = 1;\n}\n",
            id="new section in an empty file",
        ),
    ],
)
def test_set_writes_exactly(text, section, key, value, expected):
    conf = ChrystokiConf.parse(text)
    conf.set(section, key, value)
    assert conf.dumps() == expected


def test_set_in_missing_section_appends_it_at_the_end():
    conf = ChrystokiConf.parse(BRIEF_EXAMPLE)
    conf.set("Secure Trusted Channel", "SoftTokenDir", "/usr/safenet/lunaclient/config/stc/token")
    assert conf.dumps() == BRIEF_EXAMPLE + (
        "Secure Trusted Channel = {\n   SoftTokenDir = /usr/safenet/lunaclient/config/stc/token;\n}\n"
    )
    assert conf.sections()[-1] == "Secure Trusted Channel"


def test_set_empty_value_and_value_with_equals():
    conf = ChrystokiConf.parse(BRIEF_EXAMPLE)
    conf.set("Luna", "PEDTimeout1", "")
    conf.set("Luna", "Extra", "a=b")
    reread = ChrystokiConf.parse(conf.dumps())
    assert reread.get("Luna", "PEDTimeout1") == ""
    assert reread.get("Luna", "Extra") == "a=b"


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("Luna", "A", "1\nHAOnly = 0"),  # would inject a second line
        ("Luna", "A", " padded "),  # would read back stripped
        ("Luna", "", "1"),  # no key
        ("Lu{na", "A", "1"),  # not a section header once written
        ("Luna", "A=B", "1"),  # the key would end at the first '='
    ],
)
def test_set_refuses_what_would_not_read_back_and_leaves_the_text_alone(section, key, value):
    conf = ChrystokiConf.parse(BRIEF_EXAMPLE)
    with pytest.raises(ValueError):
        conf.set(section, key, value)
    assert conf.dumps() == BRIEF_EXAMPLE
    assert conf.get("Luna", "DefaultTimeOut") == "500000"


def test_value_ending_in_semicolon_is_refused_where_it_cannot_read_back():
    conf = ChrystokiConf.parse("[Luna]\nA=1\n")
    with pytest.raises(ValueError, match="read back"):
        conf.set("Luna", "A", "x;")  # ini entries carry no terminator, so the ';' would be lost
    assert conf.dumps() == "[Luna]\nA=1\n"


def test_remove_key_deletes_only_its_line():
    conf = ChrystokiConf.parse(BRIEF_EXAMPLE)
    conf.remove("HAConfiguration", "HAOnly")
    assert conf.dumps() == BRIEF_EXAMPLE.replace("   HAOnly = 1;\n", "")
    assert conf.get("HAConfiguration", "HAOnly") is None


def test_remove_absent_key_or_section_changes_nothing():
    conf = ChrystokiConf.parse(BRIEF_EXAMPLE)
    conf.remove("HAConfiguration", "NoSuchKey")
    conf.remove("NoSuchSection", "HAOnly")
    conf.remove_section("NoSuchSection")
    assert conf.dumps() == BRIEF_EXAMPLE


def test_remove_section_conf():
    conf = ChrystokiConf.parse(BRIEF_EXAMPLE)
    conf.remove_section("cardreader")
    assert conf.dumps() == BRIEF_EXAMPLE.replace("CardReader = {\n   RemoteCommand = 1;\n}\n", "")
    assert "CardReader" not in conf.sections()


def test_remove_section_ini_keeps_the_next_header():
    conf = ChrystokiConf.parse("[Luna]\nA=1\nB=2\n[Misc]\nC=3\n")
    conf.remove_section("Luna")
    assert conf.dumps() == "[Misc]\nC=3\n"


def test_edits_after_a_removal_use_the_new_positions():
    conf = ChrystokiConf.parse(BRIEF_EXAMPLE)
    conf.remove_section("Chrystoki2")
    conf.set("HASynchronize", "myHAgroup", "0")
    conf.set("Luna", "PEDTimeout2", "200000")
    reread = ChrystokiConf.parse(conf.dumps())
    assert reread.get("HASynchronize", "myHAgroup") == "0"
    assert list(reread.section("Luna")) == ["DefaultTimeOut", "PEDTimeout1", "PEDTimeout2"]


# -- save -------------------------------------------------------------------------------------


def test_save_writes_mode_0600_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "Chrystoki.conf"
    target.write_text("old\n")
    os.chmod(target, 0o644)
    conf = ChrystokiConf.parse(BRIEF_EXAMPLE)
    conf.set("HAConfiguration", "AutoReconnectInterval", "120")
    conf.save(target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["Chrystoki.conf"]
    assert ChrystokiConf.load(target).get("HAConfiguration", "AutoReconnectInterval") == "120"


def test_save_that_fails_keeps_the_old_file_and_cleans_up(tmp_path, monkeypatch):
    target = tmp_path / "Chrystoki.conf"
    target.write_text(BRIEF_EXAMPLE)
    conf = ChrystokiConf.parse(BRIEF_EXAMPLE)
    conf.set("HAConfiguration", "HAOnly", "0")

    def refuse(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        conf.save(target)
    assert target.read_text() == BRIEF_EXAMPLE
    assert os.listdir(tmp_path) == ["Chrystoki.conf"]


def test_save_keeps_crlf_line_endings(tmp_path):
    target = tmp_path / "crystoki.ini"
    conf = ChrystokiConf.load(WINDOWS_INI)
    conf.set("HAConfiguration", "reconnAtt", "3")
    conf.save(target)
    raw = target.read_bytes()
    assert b"reconnAtt=3\r\n" in raw
    assert raw.count(b"\r\n") == raw.count(b"\n")
