"""`dicom-gateway demo`: the gateway on built-in defaults with a demo PACS on loopback."""
