"""The p11-kit RPC protocol, version 0, as p11-kit 0.24.1 (Debian 12) speaks it.

One codec for both directions: `ckdemo serve` decodes requests and encodes responses, a
remote-member client does the opposite. Pure Python; nothing here touches PKCS#11 libraries.
"""

from .attributes import UNAVAILABLE, Attribute, ValueType, value_type
from .buffer import CodecError, UnknownCallError
from .calls import BY_ID, BY_NAME, CALL_ERROR, CALLS, HANDSHAKE, PROTOCOL_VERSION, Call
from .codec import Message, decode_request, decode_response, encode_error, encode_request, encode_response
from .framing import Frame, FrameReader, encode_frame, negotiate_version, read_frame, write_frame
from .mechanisms import Mechanism, RsaPkcsOaepParams, RsaPkcsPssParams
from .structs import AttributeSize, BufferSize, Info, MechanismInfo, SessionInfo, SlotInfo, TokenInfo, Version
