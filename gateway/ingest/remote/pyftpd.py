"""pyftpdlib's names the FTP receiver uses, imported in one place.

pyftpdlib runs on asyncore/asynchat, which Python 3.11 (Debian 12's) still ships but flags as
deprecated on import; on 3.12+ pyftpdlib brings its own copies (pyasyncore, pyasynchat). The
warning says nothing the gateway can act on, and the tests turn warnings into errors, so it is
silenced here, for that import only.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", r"The async(ore|hat) module", DeprecationWarning)
    from pyftpdlib.exceptions import AuthenticationFailed, _RetryError
    from pyftpdlib.filesystems import AbstractedFS
    from pyftpdlib.handlers import DTPHandler, FTPHandler
    from pyftpdlib.handlers.ftp.control import proto_cmds as pyftpdlib_commands
    from pyftpdlib.handlers.ftp.dispatchers import PassiveDTP
    from pyftpdlib.ioloop import _ERRNOS_DISCONNECTED, _ERRNOS_RETRY, IOLoop
    from pyftpdlib.servers import FTPServer

__all__ = [
    "_ERRNOS_DISCONNECTED",
    "_ERRNOS_RETRY",
    "AbstractedFS",
    "AuthenticationFailed",
    "DTPHandler",
    "FTPHandler",
    "FTPServer",
    "IOLoop",
    "PassiveDTP",
    "_RetryError",
    "pyftpdlib_commands",
]
