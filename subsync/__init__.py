"""Code shared by the web receiver, the worker and the reconciler.

Configuration (`config`), the PostgreSQL pool (`db`), logging (`logs`), every
SQL statement (`store`, the event store in `store.events`), and the pure rules
every process applies the same way (`access`, `stripe_objects`, `transitions`,
`ledger`).
"""
