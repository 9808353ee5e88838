"""CKDemo's main menu as data: number, title, group, and the handler that serves it.

Numbers, titles and group headings follow CKDemo as Luna's documentation shows it. A handler is
named as "module:function" under ckdemo.handlers; None means ckdemo has no implementation yet,
and `unavailable` says why in one line.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    number: int
    title: str
    group: str
    handler: str | None = None  # "token:open_session"
    unavailable: str = ""  # why there is no handler (names the PKCS#11 / CA_ function)
    extension: str = ""  # a Luna-only choice: the vendor function it would call (handler gets the entry)


@dataclass(frozen=True)
class Group:
    heading: str
    columns: int = 3
    width: int = 14  # title column width, as CKDemo pads it


GROUPS = [
    Group("TOKEN FUNCTIONS"),
    Group("OBJECT MANAGEMENT FUNCTIONS"),
    Group("SECURITY FUNCTIONS"),
    Group("HIGH AVAILABILITY RECOVERY FUNCTIONS"),
    Group("KEY FUNCTIONS"),
    Group("CA FUNCTIONS"),
    Group("CCM FUNCTIONS"),
    Group("OTHERS"),
    Group("OFFBOARD KEY STORAGE:", columns=2, width=24),
    Group("SCRIPT EXECUTION:", columns=1, width=30),
    Group("HA TEST FUNCTIONS (ckdemo)", columns=3, width=14),
]


def _luna(function: str) -> tuple[str, str, str]:
    """handler, unavailable, extension of a Luna-only choice (others:luna_only detects the symbol)."""
    return "others:luna_only", f"Luna extension {function}: not part of standard PKCS#11", function


_T, _O, _S, _H, _K, _C, _M, _X, _B, _E, _HT = (g.heading for g in GROUPS)

MENU: list[Entry] = [
    Entry(1, "Open Session", _T, "token:open_session"),
    Entry(2, "Close Session", _T, "token:close_session"),
    Entry(3, "Login", _T, "token:login"),
    Entry(4, "Logout", _T, "token:logout"),
    Entry(5, "Change PIN", _T, "token:change_pin"),
    Entry(6, "Init Token", _T, "token:init_token"),
    Entry(7, "Init Pin", _T, "token:init_pin"),
    Entry(8, "Mechanism List", _T, "token:mechanism_list"),
    Entry(9, "Mechanism Info", _T, "token:mechanism_info"),
    Entry(10, "Get Info", _T, "token:get_info"),
    Entry(11, "Slot Info", _T, "token:slot_info"),
    Entry(12, "Token Info", _T, "token:token_info"),
    Entry(13, "Session Info", _T, "token:session_info"),
    Entry(14, "Get Slot List", _T, "token:get_slot_list"),
    Entry(15, "Wait for Slot Event", _T, "token:wait_for_slot_event"),
    Entry(16, "InitToken(ind)", _T, *_luna("CA_IndirectInitToken")),
    Entry(17, "InitPin (ind)", _T, *_luna("CA_IndirectInitPIN")),
    Entry(18, "Login (ind)", _T, *_luna("CA_IndirectLogin")),
    Entry(19, "CloneMofN", _T, *_luna("CA_CloneMofN")),
    Entry(20, "Create object", _O, "objects:create_object"),
    Entry(21, "Copy object", _O, "objects:copy_object"),
    Entry(22, "Destroy object", _O, "objects:destroy_object"),
    Entry(23, "Object size", _O, "objects:object_size"),
    Entry(24, "Get attribute", _O, "objects:get_attribute"),
    Entry(25, "Set attribute", _O, "objects:set_attribute"),
    Entry(26, "Find object", _O, "objects:find_object"),
    Entry(27, "Display Object", _O, "objects:display_object"),
    Entry(40, "Encrypt file", _S, "files:encrypt_file"),
    Entry(41, "Decrypt file", _S, "files:decrypt_file"),
    Entry(42, "Sign", _S, "crypto:sign"),
    Entry(43, "Verify", _S, "crypto:verify"),
    Entry(44, "Hash file", _S, "files:hash_file"),
    Entry(45, "Simple Generate Key", _S, "crypto:generate_key"),
    Entry(46, "Digest Key", _S, "crypto:digest_key"),
    Entry(50, "HA Init", _H, "ha:ha_init"),
    Entry(51, "HA Login", _H, "ha:ha_login"),
    Entry(52, "HA Status", _H, "ha:ha_status"),
    Entry(60, "Wrap key", _K, "keys:wrap_key"),
    Entry(61, "Unwrap key", _K, "keys:unwrap_key"),
    Entry(62, "Generate random number", _K, "crypto:generate_random"),
    Entry(63, "Derive Key", _K, "keys:derive_key"),
    Entry(64, "PBE Key Gen", _K, "keys:pbe_key_gen"),
    Entry(65, "Create known keys", _K, "keys:create_known_keys"),
    Entry(66, "Seed RNG", _K, "keys:seed_rng"),
    Entry(67, "EC User Defined Curves", _K, "keys:ec_curves"),
    Entry(70, "Set Domain", _C, *_luna("CA_SetDomain")),
    Entry(71, "Clone Key", _C, *_luna("CA_CloneObject")),
    Entry(72, "Set MofN", _C, *_luna("CA_SetMofN")),
    Entry(73, "Generate MofN", _C, *_luna("CA_GenerateMofN")),
    Entry(74, "Activate MofN", _C, *_luna("CA_ActivateMofN")),
    Entry(75, "Generate Token Keys", _C, *_luna("CA_GenerateTokenKeys")),
    Entry(76, "Get Token Cert", _C, *_luna("CA_GetTokenCertificateInfo")),
    Entry(77, "Sign Token Cert", _C, *_luna("CA_SetTokenCertificateSignature")),
    Entry(78, "Generate CertCo Cert", _C, *_luna("CA_GenerateCertCoCert")),
    Entry(79, "Modify MofN", _C, *_luna("CA_ModifyMofN")),
    Entry(86, "Dup. MofN Keys", _C, *_luna("CA_DuplicateMofN")),
    Entry(87, "Deactivate MofN", _C, *_luna("CA_DeactivateMofN")),
    Entry(80, "Module List", _M, *_luna("CA_GetModuleList")),
    Entry(81, "Module Info", _M, *_luna("CA_GetModuleInfo")),
    Entry(82, "Load Module", _M, *_luna("CA_LoadModule")),
    Entry(83, "Load Enc Mod", _M, *_luna("CA_LoadEncryptedModule")),
    Entry(84, "Unload Module", _M, *_luna("CA_UnloadModule")),
    Entry(85, "Module function Call", _M, *_luna("CA_PerformModuleCall")),
    Entry(90, "Self Test", _X, "others:self_test"),
    Entry(94, "Open Access", _X, "others:open_access"),
    Entry(95, "Close Access", _X, "others:close_access"),
    Entry(97, "Set App ID", _X, "others:set_app_id"),
    Entry(98, "Options", _X, "options:options"),
    Entry(101, "Extract Masked Object", _B, *_luna("CA_ExtractMaskedObject")),
    Entry(102, "Insert Masked Object", _B, *_luna("CA_InsertMaskedObject")),
    Entry(103, "Multisign With Value", _B, *_luna("CA_MultisignValue")),
    Entry(104, "Clone Object", _B, *_luna("CA_CloneObject")),
    Entry(105, "SIMExtract", _B, *_luna("CA_SIMExtract")),
    Entry(106, "SIMInsert", _B, *_luna("CA_SIMInsert")),
    Entry(107, "SimMultiSign", _B, *_luna("CA_SIMMultiSign")),
    Entry(108, "Execute Script", _E, *_luna("CA_PerformSelfTest/script execution")),
    Entry(109, "Execute Asynchronous Script", _E, *_luna("asynchronous script execution")),
    Entry(110, "Execute Single Part Script", _E, *_luna("single part script execution")),
    Entry(120, "Fail member", _HT, "ha:fail_member"),
    Entry(121, "Restore member", _HT, "ha:restore_member"),
    Entry(122, "Member stats", _HT, "ha:member_stats"),
    Entry(123, "Hang member", _HT, "ha:hang_member"),
    Entry(124, "Resume member", _HT, "ha:resume_member"),
    Entry(125, "Recover now", _HT, "ha:recover_now"),
]

QUIT = 0
HELP = 99

BY_NUMBER: dict[int, Entry] = {e.number: e for e in MENU}

# How many answers a choice reads on its usual path, one script line each, as its handler asks
# them (a script cannot tell a choice from an answer without this: `2` may be Close Session or
# a slot number). A replay that stops at a failure plans the steps it did not run with it
# (JUnit <skipped/>); a choice missing here, or whose count varies, is split at paragraphs.
# tests/test_junit.py checks it against real runs of every shipped script.
USUAL_ANSWERS: dict[int, int] = {
    1: 2,
    2: 1,
    3: 3,
    4: 1,
    7: 3,
    8: 1,
    9: 2,
    11: 1,
    12: 1,
    13: 1,
    14: 0,  # token functions
    22: 2,  # objects
    42: 5,
    43: 5,
    44: 3,
    45: 6,
    46: 3,  # security functions
    50: 2,
    51: 2,
    52: 1,
    122: 1,  # high availability
    60: 5,
    61: 8,
    62: 2,
    63: 6,
    64: 5,
    65: 2,
    66: 2,
    67: 2,  # key functions
    70: 0,
    90: 1,
    94: 0,
    95: 0,  # others
}
assert len(BY_NUMBER) == len(MENU), "duplicate menu number"
