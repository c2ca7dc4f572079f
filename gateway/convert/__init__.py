"""Conversion of ingested files into conformant DICOM objects."""
