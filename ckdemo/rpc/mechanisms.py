"""CK_MECHANISM on the wire (`M`), as `p11_rpc_buffer_add/get_mechanism` in 0.24.1.

u32 mechanism type, then the parameter: three u64 for CKM_RSA_PKCS_PSS, three u64 and a byte
array for CKM_RSA_PKCS_OAEP, and for every other mechanism a byte array (0xffffffff when there
is no parameter). The 0.24.1 *client* sends only its allowlist (parameterless mechanisms plus
these two) and always sends 0xffffffff for the parameterless ones; the *server* decodes any
type this way, which is what lets our own client send flat byte-string parameters (IVs ...).
"""

from __future__ import annotations

from dataclasses import dataclass

from .buffer import CodecError, Reader, Writer

CKM_RSA_PKCS_OAEP = 0x00000009
CKM_RSA_PKCS_PSS = 0x0000000D


@dataclass(frozen=True)
class RsaPkcsPssParams:
    hash_alg: int
    mgf: int
    salt_length: int


@dataclass(frozen=True)
class RsaPkcsOaepParams:
    hash_alg: int
    mgf: int
    source: int
    source_data: bytes | None = None


@dataclass(frozen=True)
class Mechanism:
    """`parameter` is None (no parameter), bytes, or the params object its type requires."""

    type: int
    parameter: bytes | RsaPkcsPssParams | RsaPkcsOaepParams | None = None


def write_mechanism(writer: Writer, mechanism: Mechanism) -> None:
    if not isinstance(mechanism, Mechanism):
        raise CodecError(f"not a Mechanism: {mechanism!r}")
    writer.u32(mechanism.type)
    parameter = mechanism.parameter
    if mechanism.type == CKM_RSA_PKCS_PSS:
        if not isinstance(parameter, RsaPkcsPssParams):
            raise CodecError("CKM_RSA_PKCS_PSS needs RsaPkcsPssParams")
        writer.u64(parameter.hash_alg)
        writer.u64(parameter.mgf)
        writer.u64(parameter.salt_length)
    elif mechanism.type == CKM_RSA_PKCS_OAEP:
        if not isinstance(parameter, RsaPkcsOaepParams):
            raise CodecError("CKM_RSA_PKCS_OAEP needs RsaPkcsOaepParams")
        writer.u64(parameter.hash_alg)
        writer.u64(parameter.mgf)
        writer.u64(parameter.source)
        writer.byte_array(parameter.source_data)
    else:
        if isinstance(parameter, (RsaPkcsPssParams, RsaPkcsOaepParams)):
            raise CodecError(f"mechanism {mechanism.type:#x} takes a byte-string parameter")
        writer.byte_array(parameter)


def read_mechanism(reader: Reader) -> Mechanism:
    mechanism_type = reader.u32()
    if mechanism_type == CKM_RSA_PKCS_PSS:
        return Mechanism(mechanism_type, RsaPkcsPssParams(reader.u64(), reader.u64(), reader.u64()))
    if mechanism_type == CKM_RSA_PKCS_OAEP:
        return Mechanism(
            mechanism_type, RsaPkcsOaepParams(reader.u64(), reader.u64(), reader.u64(), reader.byte_array())
        )
    return Mechanism(mechanism_type, reader.byte_array())
