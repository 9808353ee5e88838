"""`ckdemo serve`: the home's slots for any PKCS#11 application, over the p11-kit RPC protocol.

The second front door beside the menu: `p11-kit-client.so` connects to a Unix socket and speaks
protocol version 0 (ckdemo.rpc is the codec); each connection is one application with its own
session handles, login state and operations, driving the slots only through the declared
`ckdemo.slots.Slot` / `Session` protocol.
"""

from .exposed import ExposedSlot
from .server import Server

__all__ = ["Server", "ExposedSlot"]
