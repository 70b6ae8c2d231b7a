"""A stand-in for Upstox: OAuth login, the REST endpoints the project uses, and the V3 market
data feed, faithful enough that a client written against Upstox's documentation works with it
unchanged apart from the host.

Pure modules (no I/O): `clock` (IST, sessions, 03:30 expiry), `holidays`, `universe`
(instruments), `noise` and `market` (the seeded price model), `greeks`, `candles`, `protocol`
(feed requests, subscriptions and limits), `frames` (protobuf frames), `accounts` (users, tokens,
one-time codes), `ratelimit`. The asyncio/FastAPI shell: `feed` (the hub and tick loop),
`feed_routes`, `login`, `rest`, `admin`, `state`, `app`; `cli` runs it.
"""
