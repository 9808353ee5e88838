"""Plain mechanism parameters (ckdemo.model) to python-pkcs11's forms."""

from __future__ import annotations

from pkcs11 import KDF, MGF, Mechanism
from pkcs11.mechanisms import GCMParams

from ..model import ECDHParam, GCMParam, MechanismParam, OAEPParam, PSSParam


def to_pkcs11(param: MechanismParam):
    if param is None or isinstance(param, bytes):
        return param
    if isinstance(param, GCMParam):
        return GCMParams(param.nonce, param.aad or None, param.tag_bits)
    if isinstance(param, OAEPParam):
        return (Mechanism(param.hash_mechanism), MGF(param.mgf), param.source)
    if isinstance(param, PSSParam):
        return (Mechanism(param.hash_mechanism), MGF(param.mgf), param.salt_length)
    if isinstance(param, ECDHParam):
        return (KDF(param.kdf), param.shared_data, param.public_data)
    raise TypeError(f"unknown mechanism parameter {param!r}")
