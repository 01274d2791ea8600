"""Internal helpers shared by every family."""
