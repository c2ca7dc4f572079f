"""DIMSE senders: C-STORE and C-ECHO over plain TCP or TLS."""
