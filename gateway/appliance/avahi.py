"""The mDNS announcement of the panel: an Avahi service file for ``_https._tcp``.

Written at every boot to ``/run/dicom-gateway/avahi.service`` (the image links
``/etc/avahi/services/dicom-gateway.service`` to it), so the port follows the configuration's
``[web] port`` and the version follows the release without anything written to flash. The
instance name is the host name (Avahi's ``%h``), the TXT records carry the device serial (the
sticker on the box) and the software version, so a browser's or a tool's mDNS list tells two
boxes apart.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

AVAHI_FILE = "/run/dicom-gateway/avahi.service"
SERVICE_TYPE = "_https._tcp"


def service_xml(port: int, serial: str, version: str) -> str:
    """The service-group file avahi-daemon reads from /etc/avahi/services/."""
    return (
        '<?xml version="1.0" standalone="no"?>\n'
        '<!DOCTYPE service-group SYSTEM "avahi-service.dtd">\n'
        "<!-- Written at boot by dicom-gateway appliance firstboot; edits are lost. -->\n"
        "<service-group>\n"
        '  <name replace-wildcards="yes">DICOM edge gateway %h</name>\n'
        "  <service>\n"
        f"    <type>{SERVICE_TYPE}</type>\n"
        f"    <port>{int(port)}</port>\n"
        f"    <txt-record>serial={escape(serial)}</txt-record>\n"
        f"    <txt-record>version={escape(version)}</txt-record>\n"
        "    <txt-record>path=/</txt-record>\n"
        "  </service>\n"
        "</service-group>\n"
    )
