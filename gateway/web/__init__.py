"""Web panel (issue 5)."""
