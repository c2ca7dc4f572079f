"""Our own DICOM port: a hardened acceptor for C-ECHO, MWL C-FIND and C-STORE.

pynetdicom owns the DICOM state machine; this package owns the socket. ``server.py`` starts
the listener and bounds the associations served at once; ``gate.py`` is the front door, one
thread that takes every caller through TLS and its A-ASSOCIATE-RQ on non-blocking sockets,
``admission.py`` decides which of those unauthenticated callers it keeps, and ``handshake.py``
judges the request and holds the answers; ``guard.py`` checks every PDU's declared length
before its body is read, ``connection.py`` runs one association in its own thread,
``services.py`` declares what is answered and ``rxfiles.py`` routes received C-STORE datasets
to the spool's staging folder.
"""
