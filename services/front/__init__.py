"""The front: a small reverse proxy for `tickstream dev`, with the same routes as compose's nginx.

A dev tool (correct rather than fast): one port in front of the auth service, the simulator's
login dialog and any number of gateway replicas. See `services.front.routes` for the table.
"""
