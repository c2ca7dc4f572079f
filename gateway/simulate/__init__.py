"""The modality simulator: plays a device profile's messages onto a serial line, with faults."""
