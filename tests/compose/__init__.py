"""The compose stack, checked by scripts/compose-smoke."""
