"""Modality Worklist cache, MWL SCP and patient binding (issue 3)."""
