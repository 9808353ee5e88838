"""Key replication between members without plaintext: wrap under the group's domain key.

The domain key is an AES-256 key with CKA_TRUSTED, identical on every member, sensitive and
never extractable (FACTS: "Replicating keys between SoftHSM2 members"). Its value is drawn
from member 1's RNG and crosses host memory once, at HA Init, as a Luna cloning-domain secret
does; application keys are generated with CKA_WRAP_WITH_TRUSTED and only ever leave a member
wrapped under it (CKM_AES_KEY_WRAP_PAD).
"""
from __future__ import annotations

from typing import Any

from ..model import (CKA_CLASS, CKA_DECRYPT, CKA_DERIVE, CKA_EC_PARAMS, CKA_EC_POINT, CKA_ENCRYPT,
                     CKA_EXTRACTABLE, CKA_ID, CKA_KEY_TYPE, CKA_LABEL, CKA_MODULUS, CKA_PRIVATE,
                     CKA_PUBLIC_EXPONENT, CKA_SENSITIVE, CKA_SIGN, CKA_TOKEN, CKA_TRUSTED, CKA_UNWRAP,
                     CKA_VALUE, CKA_VERIFY, CKA_WRAP, CKA_WRAP_WITH_TRUSTED, CKK_AES, CKK_EC, CKK_RSA,
                     CKM_AES_KEY_WRAP_PAD, CKO_PRIVATE_KEY, CKO_PUBLIC_KEY, CKO_SECRET_KEY)

DOMAIN_KEY_LABEL = "ckdemo HA domain key"
DOMAIN_KEY_ID = b"ckdemo-ha-domain"
DOMAIN_KEY_BYTES = 32

# capability attributes copied to a replica, by object class
CAPABILITIES = {
    CKO_PRIVATE_KEY: (CKA_SIGN, CKA_DECRYPT, CKA_UNWRAP, CKA_DERIVE),
    # (not CKA_VALUE_LEN: SoftHSM 2.6.1 refuses it in an unwrap template and stores 0 on every
    # unwrapped secret key; the key value itself is intact)
    CKO_SECRET_KEY: (CKA_ENCRYPT, CKA_DECRYPT, CKA_WRAP, CKA_UNWRAP, CKA_SIGN, CKA_VERIFY, CKA_DERIVE),
    CKO_PUBLIC_KEY: (CKA_VERIFY, CKA_ENCRYPT, CKA_WRAP),
}
PUBLIC_VALUES = {CKK_RSA: (CKA_MODULUS, CKA_PUBLIC_EXPONENT), CKK_EC: (CKA_EC_PARAMS, CKA_EC_POINT)}
IDENTITY = (CKA_CLASS, CKA_KEY_TYPE, CKA_ID, CKA_LABEL, CKA_TOKEN, CKA_PRIVATE)


def domain_key_template(value: bytes) -> dict[int, Any]:
    return {CKA_CLASS: CKO_SECRET_KEY, CKA_KEY_TYPE: CKK_AES, CKA_VALUE: value, CKA_TOKEN: True,
            CKA_PRIVATE: False, CKA_SENSITIVE: True, CKA_EXTRACTABLE: False, CKA_TRUSTED: True,
            CKA_WRAP: True, CKA_UNWRAP: True, CKA_ENCRYPT: False, CKA_DECRYPT: False,
            CKA_ID: DOMAIN_KEY_ID, CKA_LABEL: DOMAIN_KEY_LABEL}


def find_domain_key(session) -> int | None:
    found = session.find_objects({CKA_CLASS: CKO_SECRET_KEY, CKA_ID: DOMAIN_KEY_ID})
    return found[0] if found else None


def identity(session, handle: int) -> dict[int, Any]:
    return session.get_attributes(handle, list(IDENTITY))


def replicate(source, handle: int, target) -> int:
    """Copy one key object from the source member session to the target member session."""
    ident = identity(source, handle)
    cls = ident[CKA_CLASS]
    capabilities = source.get_attributes(handle, list(CAPABILITIES.get(cls, ())))
    template = {k: v for k, v in ident.items() if k != CKA_CLASS}
    template.update(capabilities)
    if cls == CKO_PUBLIC_KEY:
        values = source.get_attributes(handle, list(PUBLIC_VALUES[ident[CKA_KEY_TYPE]]))
        return target.create_object({CKA_CLASS: cls, **template, **values})
    source_domain, target_domain = find_domain_key(source), find_domain_key(target)
    if source_domain is None or target_domain is None:
        from ..codes import CKR_KEY_NOT_WRAPPABLE, CKRError
        raise CKRError(CKR_KEY_NOT_WRAPPABLE, "C_WrapKey", "no HA domain key: run HA Init (50) first")
    wrapped = source.wrap_key(source_domain, handle, CKM_AES_KEY_WRAP_PAD)
    template.pop(CKA_KEY_TYPE, None)
    sensitive = source.get_attributes(handle, [CKA_SENSITIVE])[CKA_SENSITIVE]
    template.update({CKA_SENSITIVE: bool(sensitive), CKA_EXTRACTABLE: True,
                     CKA_WRAP_WITH_TRUSTED: True})
    return target.unwrap_key(target_domain, cls, ident[CKA_KEY_TYPE], wrapped,
                             CKM_AES_KEY_WRAP_PAD, template)


def object_key(ident: dict[int, Any]) -> tuple:
    """How objects are matched across members: class, CKA_ID and label (never handles)."""
    return (ident[CKA_CLASS], bytes(ident.get(CKA_ID) or b""), ident.get(CKA_LABEL) or "")
