"""Ingest sources: folder watcher, serial reader, device profiles."""
