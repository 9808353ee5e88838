"""Plain PKCS#11 data shapes shared by every layer (no python-pkcs11, no ctypes, no UI).

The member layer fills them from a real module; the HA layer fills them for the virtual slot;
handlers and the menu only read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# PKCS#11 user types (spec 2.40, CKU_*)
CKU_SO = 0
CKU_USER = 1
CKU_CONTEXT_SPECIFIC = 2

# Session states (spec: CKS_*)
SESSION_STATES = {
    0: "CKS_RO_PUBLIC_SESSION",
    1: "CKS_RO_USER_FUNCTIONS",
    2: "CKS_RW_PUBLIC_SESSION",
    3: "CKS_RW_USER_FUNCTIONS",
    4: "CKS_RW_SO_FUNCTIONS",
}

CK_UNAVAILABLE_INFORMATION = 0xFFFFFFFFFFFFFFFF
CK_EFFECTIVELY_INFINITE = 0


@dataclass(frozen=True)
class LibraryInfo:
    cryptoki_version: tuple[int, int]
    manufacturer_id: str
    library_description: str
    library_version: tuple[int, int]
    path: str = ""


@dataclass(frozen=True)
class SlotInfo:
    slot_id: int
    description: str
    manufacturer_id: str
    flags: int
    flag_names: tuple[str, ...]
    hardware_version: tuple[int, int]
    firmware_version: tuple[int, int]

    @property
    def token_present(self) -> bool:
        return bool(self.flags & 0x1)  # CKF_TOKEN_PRESENT


@dataclass(frozen=True)
class TokenInfo:
    label: str
    manufacturer_id: str
    model: str
    serial_number: str
    flags: int
    flag_names: tuple[str, ...]
    max_session_count: int
    session_count: int
    max_rw_session_count: int
    rw_session_count: int
    max_pin_len: int
    min_pin_len: int
    total_public_memory: int
    free_public_memory: int
    total_private_memory: int
    free_private_memory: int
    hardware_version: tuple[int, int]
    firmware_version: tuple[int, int]
    utc_time: str

    @property
    def initialized(self) -> bool:
        return bool(self.flags & 0x400)  # CKF_TOKEN_INITIALIZED


@dataclass(frozen=True)
class SessionInfo:
    handle: int
    slot_id: int
    state: int
    flags: int
    flag_names: tuple[str, ...]
    device_error: int

    @property
    def state_name(self) -> str:
        return SESSION_STATES.get(self.state, f"0x{self.state:x}")


@dataclass(frozen=True)
class MechanismInfo:
    mechanism: int
    name: str
    min_key_size: int
    max_key_size: int
    flags: int
    flag_names: tuple[str, ...] = field(default_factory=tuple)


# Object classes, key types and attributes the harness names (spec 2.40 values). Templates above
# the member layer are plain {CKA_*: value} dicts with these numbers.
CKO_DATA, CKO_PUBLIC_KEY, CKO_PRIVATE_KEY, CKO_SECRET_KEY = 0x0, 0x2, 0x3, 0x4
CKK_RSA, CKK_EC, CKK_GENERIC_SECRET, CKK_AES = 0x0, 0x3, 0x10, 0x1F
CKA_CLASS, CKA_TOKEN, CKA_PRIVATE, CKA_LABEL = 0x0, 0x1, 0x2, 0x3
CKA_APPLICATION, CKA_OBJECT_ID = 0x10, 0x12
CKA_VALUE, CKA_KEY_TYPE, CKA_ID, CKA_SENSITIVE = 0x11, 0x100, 0x102, 0x103
CKA_ENCRYPT, CKA_DECRYPT, CKA_WRAP, CKA_UNWRAP = 0x104, 0x105, 0x106, 0x107
CKA_SIGN, CKA_VERIFY, CKA_DERIVE = 0x108, 0x10A, 0x10C
CKA_ALWAYS_AUTHENTICATE = 0x202  # each use of the key asks for a context-specific login
CKA_MODULUS, CKA_MODULUS_BITS, CKA_PUBLIC_EXPONENT = 0x120, 0x121, 0x122
CKA_VALUE_LEN, CKA_EXTRACTABLE, CKA_MODIFIABLE = 0x161, 0x162, 0x170
CKA_EC_PARAMS, CKA_EC_POINT = 0x180, 0x181
CKA_TRUSTED, CKA_WRAP_WITH_TRUSTED = 0x86, 0x210
CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE, CKA_LOCAL = 0x165, 0x164, 0x163
CKA_KEY_GEN_MECHANISM, CKA_CHECK_VALUE = 0x166, 0x90
CKA_COPYABLE, CKA_DESTROYABLE = 0x171, 0x172
CKA_PRIVATE_EXPONENT, CKA_PRIME_1, CKA_PRIME_2 = 0x123, 0x124, 0x125
CKA_EXPONENT_1, CKA_EXPONENT_2, CKA_COEFFICIENT = 0x126, 0x127, 0x128
CKA_WRAP_TEMPLATE, CKA_UNWRAP_TEMPLATE, CKA_ALLOWED_MECHANISMS = 0x40000211, 0x40000212, 0x40000600

CLASS_NAMES = {
    CKO_DATA: "CKO_DATA",
    CKO_PUBLIC_KEY: "CKO_PUBLIC_KEY",
    CKO_PRIVATE_KEY: "CKO_PRIVATE_KEY",
    CKO_SECRET_KEY: "CKO_SECRET_KEY",
}
KEY_TYPE_NAMES = {
    CKK_RSA: "CKK_RSA",
    CKK_EC: "CKK_EC",
    CKK_GENERIC_SECRET: "CKK_GENERIC_SECRET",
    CKK_AES: "CKK_AES",
}

# Mechanisms the harness itself uses by number
CKM_RSA_PKCS_KEY_PAIR_GEN, CKM_EC_KEY_PAIR_GEN, CKM_AES_KEY_GEN = 0x0, 0x1040, 0x1080
CKM_SHA256_RSA_PKCS, CKM_ECDSA, CKM_AES_KEY_WRAP_PAD = 0x40, 0x1041, 0x210A


@dataclass(frozen=True)
class KeySpec:
    """What to generate: 'rsa' (bits), 'ec' (curve name), 'aes' or 'generic' (bytes)."""

    kind: str
    size: int | str
    label: str
    key_id: bytes
    token: bool = True
    sensitive: bool = True
    extractable: bool = False
    wrap_with_trusted: bool = False
    # CKA_PRIVATE of the secret or private key (a public key is public): TRUE is a token's default;
    # FALSE makes a key any session may use, logged in or not, as PKCS#11 allows
    private: bool = True
    # more attributes of the new key(s), given at generation because some can be given only then
    # (CKA_MODIFIABLE, CKA_COPYABLE, CKA_DESTROYABLE = FALSE): (CKA_*, value) pairs for the
    # secret or private key, and for the public key of a pair
    extra: tuple[tuple[int, object], ...] = ()
    public_extra: tuple[tuple[int, object], ...] = ()
    # True: a usage flag (CKA_SIGN, CKA_ENCRYPT ...) the spec does not give is the token's own
    # default, as for an application's template; False: python-pkcs11's defaults (the menu's keys)
    token_defaults: bool = False


# Mechanism parameters in plain terms; the member layer turns them into the library's own.
CKM_SHA_1, CKM_SHA256, CKM_SHA384, CKM_SHA512 = 0x220, 0x250, 0x260, 0x270
CKG_MGF1_SHA1, CKG_MGF1_SHA256, CKG_MGF1_SHA384, CKG_MGF1_SHA512 = 0x1, 0x2, 0x3, 0x4
CKD_NULL = 0x1


@dataclass(frozen=True)
class GCMParam:
    nonce: bytes
    aad: bytes = b""
    tag_bits: int = 128


@dataclass(frozen=True)
class OAEPParam:
    hash_mechanism: int = CKM_SHA_1  # SoftHSM 2.6 takes SHA-1 only
    mgf: int = CKG_MGF1_SHA1
    source: bytes | None = None


@dataclass(frozen=True)
class PSSParam:
    hash_mechanism: int
    mgf: int
    salt_length: int


@dataclass(frozen=True)
class ECDHParam:
    public_data: bytes  # the other party's EC point (DER OCTET STRING or raw)
    kdf: int = CKD_NULL
    shared_data: bytes | None = None


MechanismParam = bytes | GCMParam | OAEPParam | PSSParam | ECDHParam | None


# The key type each mechanism takes (what a token checks at Init): RSA PKCS, X.509, OAEP, PSS,
# SHA*-RSA(-PSS); ECDSA(-SHA*); the AES modes and CMAC. SoftHSM2 2.6.1 does not check it for
# RSA verification: C_Verify with an RSA mechanism and an EC key kills its process.
KEY_TYPE_OF = {
    **{m: 0x0 for m in (0x1, 0x3, 0x5, 0x6, 0x9, 0xD, 0xE, 0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47)},
    **{m: 0x3 for m in (0x1041, 0x1042, 0x1043, 0x1044, 0x1045, 0x1046)},
    **{
        m: 0x1F
        for m in (
            0x1081,
            0x1082,
            0x1085,
            0x1086,
            0x1087,
            0x1088,
            0x1089,
            0x108A,
            0x2104,
            0x2105,
            0x2106,
            0x2107,
            0x2108,
        )
    },
}
# HMAC mechanisms: the key type of their own (beside CKK_GENERIC_SECRET) and the shortest key in
# bytes SoftHSM2 takes (the hash length): CKM_MD5/SHA_1/SHA224/SHA256/SHA384/SHA512_HMAC
HMAC = {
    0x211: (0x27, 16),
    0x221: (0x28, 20),
    0x256: (0x2E, 28),
    0x251: (0x2B, 32),
    0x261: (0x2C, 48),
    0x271: (0x2D, 64),
}
