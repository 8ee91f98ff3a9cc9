"""Every SQL statement of the product, one module per table family.

| module | tables |
|---|---|
| `events` | `stripe_events`, `event_replays`: intake, claim, finish, fail, the outbox sweep, replays |
| `event_queries` | the same, read for on-call (lists, one event, the backlog of /metrics) |
| `subscriptions` | `subscriptions` and its audit trail `subscription_changes` (with NOTIFY) |
| `invoices` | `invoices` |
| `customers` | `customers` |
| `payments` | `payments`, the ledger |
| `entitlements` | `customer_entitlements`, `entitlement_summaries`, and the view `customer_access` |
| `state_queries` | the state tables read for on-call (`subscriptions show`, `events show`) |
| `jobs` | `reconciliation_runs`, `job_state`, `job_runs`, and the scheduled jobs' advisory locks |
| `locks` | advisory locks on Stripe objects, which serialise every writer of one object |

Lock order, always: the event row (the worker's), then the objects'
advisory locks (in key order), then invoice rows.
"""
