"""Command-line tools over the Upstox REST API: `tickstream profile | history | holidays`."""
