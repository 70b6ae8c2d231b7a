"""`tickstream dev`: the whole system as local processes, the same topology as docker compose.

`services.dev.topology` says what runs (pure); `services.dev.stack.DevStack` runs it (and is what
the whole-system tests drive) with `launch` (command lines, preflight), `supervisor` and `process`
(the child processes) and `readiness` (waiting until each answers); `services.dev.command` is
the command line.
"""
