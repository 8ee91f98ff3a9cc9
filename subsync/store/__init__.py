"""Every SQL statement of the product, one module per table family.

Each module owns the writes to its tables: no other module inserts, updates
or deletes their rows. A read that joins another family's tables lives with
the family whose question it answers: `subscriptions.connected_accounts`
(the accounts the reconciliation walks) also reads events, invoices and
customers; `entitlements.customers_to_reconcile` reads subscriptions; an
invoice's upsert returns its subscription's access. The `*_queries` modules
only read.

| module | tables |
|---|---|
| `events` | `stripe_events`, `event_replays`: intake, claim, finish, fail, the outbox sweep, replays |
| `event_queries` | the same, read for on-call (lists, one event, the backlog of /metrics) |
| `subscriptions` | `subscriptions`, `subscription_items`, `subscription_changes` (audit), `access_changes` (feed) |
| `invoices` | `invoices` |
| `customers` | `customers` |
| `payments` | `payments`, the ledger |
| `entitlements` | `customer_entitlements`, `entitlement_summaries`, and the view `customer_access` |
| `reactivations` | `reactivations`: each suspended subscription brought back |
| `state_queries` | the state tables read for on-call (`subscriptions show`, `events show`) |
| `jobs` | `reconciliation_runs`, `job_state`, `job_runs`, and the scheduled jobs' advisory locks |
| `locks` | advisory locks on Stripe objects, which serialise every writer of one object |

Lock order, always: the event row (the worker's), then the objects'
advisory locks (in key order), then invoice rows.
"""
