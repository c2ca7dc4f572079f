"""Signed fleet updates (issue 6)."""
