"""Who the gateway says it is to other DICOM applications: one product identity, everywhere.

A PACS administrator tells products apart by the Implementation Class UID and Implementation
Version Name (PS3.7 D.3.3.2, PS3.10 7.1): every association we open or accept (A-ASSOCIATE-RQ
and -AC user information) and every file meta header we write ((0002,0012), (0002,0013)) carry
the two values below, and the conformance statement prints them.

Rules:

* The Implementation Class UID is fixed for the product: the same on every box, whatever the
  site's ``uid_root`` (which is the site's root for the objects it creates, not the product's).
  The product has no registered organisation root, so it is a UUID-derived UID under 2.25
  (PS3.5 B.2), computed once from UUID 3cac155f-001c-4e2f-82e9-9e698c3cd90c and written here.
  It does not change with the version: the version name says which release it is.
* The Implementation Version Name is ``EDGEGW_<version>``; VR SH allows 16 characters, so a
  version longer than 9 characters loses its local part (``+…``) first, then is cut at 16.
"""

from __future__ import annotations

from gateway import __version__

PRODUCT_UUID = "3cac155f-001c-4e2f-82e9-9e698c3cd90c"
IMPLEMENTATION_CLASS_UID = "2.25.80647188264074277410491733248631953676"
VERSION_NAME_PREFIX = "EDGEGW_"
MAX_VERSION_NAME = 16  # VR SH


def version_name(version: str) -> str:
    """``EDGEGW_<version>`` within SH's 16 characters (local version part dropped first)."""
    name = VERSION_NAME_PREFIX + version
    if len(name) > MAX_VERSION_NAME:
        name = VERSION_NAME_PREFIX + version.split("+", 1)[0]
    return name[:MAX_VERSION_NAME]


IMPLEMENTATION_VERSION_NAME = version_name(__version__)
