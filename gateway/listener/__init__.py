"""Our own DICOM port: a hardened acceptor for C-ECHO, MWL C-FIND and C-STORE.

pynetdicom owns the DICOM state machine; this package owns the socket. ``server.py`` accepts
and bounds concurrency, ``handshake.py`` does the TLS handshake and reads the A-ASSOCIATE-RQ
against a deadline, ``guard.py`` checks every PDU's declared length before its body is read,
``connection.py`` runs one association, ``services.py`` declares what is answered and
``rxfiles.py`` routes received C-STORE datasets to the spool's staging folder.
"""
