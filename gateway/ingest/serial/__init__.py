"""Serial ingest: a legacy device's RS-232 output, through a device profile, into the queue."""
