-- subsync schema. Applied by `flask --app webhooks db init` on every deploy:
-- every statement is idempotent (IF NOT EXISTS), so running it twice changes
-- nothing. Times are timestamptz in UTC; amounts are integers in the
-- currency's minor unit. Columns named in docs/interface.md are the
-- interface; the others are ours and are commented.

-- One row per Stripe event id, ever. The receiver inserts with
-- ON CONFLICT (id) DO NOTHING, so a redelivery never makes a second row.
CREATE TABLE IF NOT EXISTS stripe_events (
    id           text PRIMARY KEY,
    type         text NOT NULL,
    api_version  text,
    livemode     boolean NOT NULL DEFAULT false,
    account      text,
    created_at   timestamptz NOT NULL,
    payload      jsonb NOT NULL,
    status       text NOT NULL DEFAULT 'received'
                 CHECK (status IN ('received', 'processing', 'processed', 'ignored', 'failed')),
    attempts     integer NOT NULL DEFAULT 0,
    last_error   text,
    received_at  timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz,
    -- ours: data.object.id, so an engineer can list every event of one object.
    object_id    text,
    -- ours: when the outbox sweep or a replay last queued the event, or a
    -- failed one's retry was handed to the broker.
    enqueued_at  timestamptz,
    -- ours: how many times it was queued again by hand (CLI replay, or a
    -- resend from Stripe's dashboard of a failed event). Changes it then
    -- makes are recorded with source 'replay'.
    replays      integer NOT NULL DEFAULT 0,
    -- ours: a failed event's next retry is due then; null when none is
    -- coming (a permanent error, or its attempts used up).
    retry_at     timestamptz
);
ALTER TABLE stripe_events ADD COLUMN IF NOT EXISTS retry_at timestamptz;
-- The outbox: only unfinished events, so the sweep's scan stays tiny.
CREATE INDEX IF NOT EXISTS stripe_events_unfinished_idx
    ON stripe_events (received_at) WHERE status IN ('received', 'processing');
-- Failed events, for on-call (`events list --status failed`, bulk replay,
-- the failed-events gauge of /metrics): few rows, so a tiny index.
CREATE INDEX IF NOT EXISTS stripe_events_failed_idx
    ON stripe_events (received_at) WHERE status = 'failed';
CREATE INDEX IF NOT EXISTS stripe_events_received_at_idx ON stripe_events (received_at DESC);
CREATE INDEX IF NOT EXISTS stripe_events_object_idx ON stripe_events (object_id);
-- The connected accounts we hold events of (the reconciliation and the backfill cover each).
CREATE INDEX IF NOT EXISTS stripe_events_account_idx ON stripe_events (account) WHERE account IS NOT NULL;
-- ours: payloads (2 to 6 KB, over the TOAST threshold) compressed with lz4
-- where the server has it: cheaper for PostgreSQL per ack than the default
-- pglz. Skipped once set, so `db init` does not
-- lock the table at every deploy; nested so PostgreSQL 13 parses it.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        IF (SELECT attcompression FROM pg_attribute
             WHERE attrelid = 'stripe_events'::regclass AND attname = 'payload') <> 'l' THEN
            ALTER TABLE stripe_events ALTER COLUMN payload SET COMPRESSION lz4;
        END IF;
    END IF;
END
$$;

-- One row per Stripe subscription: the latest known state.
CREATE TABLE IF NOT EXISTS subscriptions (
    id                   text PRIMARY KEY,
    customer_id          text,
    status               text NOT NULL,
    access               text NOT NULL
                         CHECK (access IN ('full', 'grace', 'restricted', 'suspended', 'none')),
    current_period_start timestamptz,
    current_period_end   timestamptz,
    cancel_at_period_end boolean NOT NULL DEFAULT false,
    cancel_at            timestamptz,
    canceled_at          timestamptz,
    ended_at             timestamptz,
    trial_end            timestamptz,
    price_id             text,
    currency             text,
    metadata             jsonb NOT NULL DEFAULT '{}'::jsonb,
    latest_invoice_id    text,
    owed_amount          bigint,
    -- Stripe's time of the newest snapshot applied: an event's `created`,
    -- or the `Date` of the API answer a reconciler or grace check read.
    stripe_updated_at    timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    -- ours: cancellation_details.reason; tells a payment failure (suspended)
    -- from a customer's own cancellation (none).
    cancellation_reason  text,
    livemode             boolean NOT NULL DEFAULT false,
    -- the connected account (Connect) the subscription belongs to; null: the platform's own.
    account              text,
    -- ours: set when a same-second snapshot with the same progress key but a
    -- different state was applied on a guess; the grace check asks Stripe,
    -- and any snapshot applied from a later second clears it.
    confirm_requested_at timestamptz
);
ALTER TABLE subscriptions ADD COLUMN IF NOT EXISTS account text;
ALTER TABLE subscriptions ADD COLUMN IF NOT EXISTS confirm_requested_at timestamptz;
CREATE INDEX IF NOT EXISTS subscriptions_customer_idx ON subscriptions (customer_id);
-- The reconciliation and the backfill cover each connected account that has rows here.
CREATE INDEX IF NOT EXISTS subscriptions_account_idx ON subscriptions (account) WHERE account IS NOT NULL;

-- One row per item of a subscription, replaced as a set with each applied
-- snapshot: an item that left the subscription is gone. Before basil every
-- item has the subscription's period; from basil on each its own.
CREATE TABLE IF NOT EXISTS subscription_items (
    id                   text PRIMARY KEY,
    subscription_id      text NOT NULL,
    price_id             text,
    product_id           text,
    quantity             integer,
    current_period_start timestamptz,
    current_period_end   timestamptz,
    account              text
);
CREATE INDEX IF NOT EXISTS subscription_items_subscription_idx ON subscription_items (subscription_id);
-- The only rows whose access time alone can change (full -> grace ->
-- restricted): the per-minute refresh reads this index and nothing else.
CREATE INDEX IF NOT EXISTS subscriptions_time_dependent_idx
    ON subscriptions (current_period_end)
    WHERE status = 'active' AND access IN ('full', 'grace');
-- The rows the grace check is to confirm with Stripe: few at any time.
CREATE INDEX IF NOT EXISTS subscriptions_confirm_requested_idx
    ON subscriptions (id) WHERE confirm_requested_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS invoices (
    id                   text PRIMARY KEY,
    subscription_id      text,
    customer_id          text,
    status               text,
    amount_due           bigint,
    amount_paid          bigint,
    currency             text,
    -- the service period billed (the subscription line's period), not the
    -- invoice-level period, which on a renewal covers the period just ended.
    period_start         timestamptz,
    period_end           timestamptz,
    attempt_count        integer NOT NULL DEFAULT 0,
    next_payment_attempt timestamptz,
    created_at           timestamptz,
    paid_at              timestamptz,
    -- ours: as on subscriptions, the Stripe time of the snapshot applied.
    stripe_updated_at    timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    account              text
);
ALTER TABLE invoices ADD COLUMN IF NOT EXISTS account text;
CREATE INDEX IF NOT EXISTS invoices_subscription_idx ON invoices (subscription_id, created_at DESC);

-- The payment ledger: one row per fact (fact_key), however often Stripe
-- repeats it, whatever the order.
CREATE TABLE IF NOT EXISTS payments (
    id                  bigserial PRIMARY KEY,
    -- the event that stated the fact; null for one the reconciliation found
    -- implied by Stripe's objects (source 'reconcile').
    stripe_event_id     text UNIQUE,
    -- ours: what makes the fact unique, e.g. 'invoice:in_1:completed',
    -- 'invoice:in_1:failed:2', 'checkout:cs_1:expired', 'refund:re_1',
    -- 'dispute:du_1:opened', 'dispute:du_1:closed'.
    fact_key            text NOT NULL UNIQUE,
    customer_id         text,
    subscription_id     text,
    invoice_id          text,
    checkout_session_id text,
    amount              bigint NOT NULL,
    currency            text,
    status              text NOT NULL
                        CONSTRAINT payments_status_check
                        CHECK (status IN ('COMPLETED', 'FAILED', 'EXPIRED', 'CANCELLED',
                                          'REFUNDED', 'DISPUTED', 'DISPUTE_WON', 'DISPUTE_LOST')),
    occurred_at         timestamptz NOT NULL,
    account             text,
    -- ours: who recorded it: 'webhook' (an event), 'reconcile' (source_id: the run).
    source              text NOT NULL DEFAULT 'webhook' CHECK (source IN ('webhook', 'reconcile')),
    source_id           text
);
ALTER TABLE payments ADD COLUMN IF NOT EXISTS account text;
ALTER TABLE payments ADD COLUMN IF NOT EXISTS source text NOT NULL DEFAULT 'webhook';
ALTER TABLE payments ADD COLUMN IF NOT EXISTS source_id text;
ALTER TABLE payments ALTER COLUMN stripe_event_id DROP NOT NULL;
CREATE INDEX IF NOT EXISTS payments_customer_idx ON payments (customer_id, occurred_at DESC);
CREATE INDEX IF NOT EXISTS payments_subscription_idx ON payments (subscription_id);
-- Databases made before refunds and disputes: the status's CHECK gains their
-- statuses. Replaced only while it lacks them, so `db init` does not scan the
-- ledger at every deploy.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint
                WHERE conname = 'payments_status_check' AND conrelid = 'payments'::regclass
                  AND pg_get_constraintdef(oid) NOT LIKE '%DISPUTE_LOST%') THEN
        ALTER TABLE payments DROP CONSTRAINT payments_status_check;
        ALTER TABLE payments ADD CONSTRAINT payments_status_check
            CHECK (status IN ('COMPLETED', 'FAILED', 'EXPIRED', 'CANCELLED',
                              'REFUNDED', 'DISPUTED', 'DISPUTE_WON', 'DISPUTE_LOST'));
    END IF;
END
$$;

-- The audit trail of every change to a subscription row.
CREATE TABLE IF NOT EXISTS subscription_changes (
    id              bigserial PRIMARY KEY,
    subscription_id text NOT NULL,
    changed_at      timestamptz NOT NULL DEFAULT now(),
    source          text NOT NULL
                    CONSTRAINT subscription_changes_source_check
                    CHECK (source IN ('webhook', 'reconcile', 'grace', 'replay', 'reactivate')),
    source_id       text,
    before          jsonb,
    after           jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS subscription_changes_subscription_idx
    ON subscription_changes (subscription_id, changed_at);
CREATE INDEX IF NOT EXISTS subscription_changes_source_idx ON subscription_changes (source_id);
-- Databases made before reactivations: the source's CHECK gains 'reactivate'.
-- Replaced only while it lacks it, so `db init` does not scan the audit
-- trail at every deploy.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint
                WHERE conname = 'subscription_changes_source_check'
                  AND pg_get_constraintdef(oid) NOT LIKE '%reactivate%') THEN
        ALTER TABLE subscription_changes DROP CONSTRAINT subscription_changes_source_check;
        ALTER TABLE subscription_changes ADD CONSTRAINT subscription_changes_source_check
            CHECK (source IN ('webhook', 'reconcile', 'grace', 'replay', 'reactivate'));
    END IF;
END
$$;

-- Every change of a subscription's access, in commit order (its writers
-- take one lock from insert to commit): an application reads the rows after
-- the last id it processed, woken by NOTIFY subscription_access, and catches
-- up after its own downtime without missing or repeating one.
CREATE TABLE IF NOT EXISTS access_changes (
    id              bigserial PRIMARY KEY,
    subscription_id text NOT NULL,
    customer_id     text,
    account         text,
    from_access     text,
    to_access       text NOT NULL,
    changed_at      timestamptz NOT NULL DEFAULT now(),
    source          text NOT NULL,
    source_id       text
);
CREATE INDEX IF NOT EXISTS access_changes_customer_idx ON access_changes (customer_id, id);

CREATE TABLE IF NOT EXISTS reconciliation_runs (
    id                bigserial PRIMARY KEY,
    started_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz,
    status            text NOT NULL DEFAULT 'running'
                      CHECK (status IN ('running', 'succeeded', 'failed')),
    dry_run           boolean NOT NULL DEFAULT false,
    scanned           integer NOT NULL DEFAULT 0,
    drifted           integer NOT NULL DEFAULT 0,
    fixed             integer NOT NULL DEFAULT 0,
    created           integer NOT NULL DEFAULT 0,
    missing_in_stripe integer NOT NULL DEFAULT 0,
    error             text,
    -- ours: each account's figures ("platform", "acct_..."), the columns being their totals.
    accounts          jsonb NOT NULL DEFAULT '{}'::jsonb
);
ALTER TABLE reconciliation_runs ADD COLUMN IF NOT EXISTS accounts jsonb NOT NULL DEFAULT '{}'::jsonb;
-- ours: the rest of a run's figures (reconciler/reconcile.py, Figures).
ALTER TABLE reconciliation_runs ADD COLUMN IF NOT EXISTS left_alone_newer integer NOT NULL DEFAULT 0;
ALTER TABLE reconciliation_runs ADD COLUMN IF NOT EXISTS terminal_here integer NOT NULL DEFAULT 0;
ALTER TABLE reconciliation_runs ADD COLUMN IF NOT EXISTS invoices_scanned integer NOT NULL DEFAULT 0;
ALTER TABLE reconciliation_runs ADD COLUMN IF NOT EXISTS invoices_drifted integer NOT NULL DEFAULT 0;
ALTER TABLE reconciliation_runs ADD COLUMN IF NOT EXISTS invoices_fixed integer NOT NULL DEFAULT 0;
ALTER TABLE reconciliation_runs ADD COLUMN IF NOT EXISTS ledger_added integer NOT NULL DEFAULT 0;
ALTER TABLE reconciliation_runs ADD COLUMN IF NOT EXISTS entitlements_scanned integer NOT NULL DEFAULT 0;
ALTER TABLE reconciliation_runs ADD COLUMN IF NOT EXISTS entitlements_drifted integer NOT NULL DEFAULT 0;
ALTER TABLE reconciliation_runs ADD COLUMN IF NOT EXISTS entitlements_fixed integer NOT NULL DEFAULT 0;
ALTER TABLE reconciliation_runs ADD COLUMN IF NOT EXISTS entitlements_skipped integer NOT NULL DEFAULT 0;
ALTER TABLE reconciliation_runs ADD COLUMN IF NOT EXISTS refunds_scanned integer NOT NULL DEFAULT 0;
ALTER TABLE reconciliation_runs ADD COLUMN IF NOT EXISTS ledger_refunds_added integer NOT NULL DEFAULT 0;
ALTER TABLE reconciliation_runs ADD COLUMN IF NOT EXISTS disputes_scanned integer NOT NULL DEFAULT 0;
ALTER TABLE reconciliation_runs ADD COLUMN IF NOT EXISTS ledger_disputes_added integer NOT NULL DEFAULT 0;
ALTER TABLE reconciliation_runs ADD COLUMN IF NOT EXISTS invoices_missing integer NOT NULL DEFAULT 0;
ALTER TABLE reconciliation_runs ADD COLUMN IF NOT EXISTS accounts_failed integer NOT NULL DEFAULT 0;

-- Ours: customers, from customer.* events.
CREATE TABLE IF NOT EXISTS customers (
    id                text PRIMARY KEY,
    email             text,
    name              text,
    metadata          jsonb NOT NULL DEFAULT '{}'::jsonb,
    deleted           boolean NOT NULL DEFAULT false,
    stripe_updated_at timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    account           text
);
ALTER TABLE customers ADD COLUMN IF NOT EXISTS account text;

-- A customer's active entitlements (Stripe's Entitlements: the features
-- of the products it subscribes to), replaced as a set by each newer
-- `entitlements.active_entitlement_summary.updated`, listed to the end when
-- the summary says `has_more`.
CREATE TABLE IF NOT EXISTS customer_entitlements (
    customer_id       text NOT NULL,
    feature_id        text NOT NULL,
    lookup_key        text NOT NULL,
    account           text,
    -- the Stripe time of the summary (or API answer) this set came from
    stripe_updated_at timestamptz NOT NULL,
    -- ours: Stripe's id of the active entitlement (ent_...)
    entitlement_id    text,
    PRIMARY KEY (customer_id, feature_id)
);
-- Ours: per customer, the Stripe time of the newest set applied. Kept when
-- the set is empty, so that an older summary arriving later is still known
-- to be older.
CREATE TABLE IF NOT EXISTS entitlement_summaries (
    customer_id       text PRIMARY KEY,
    account           text,
    stripe_updated_at timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
-- The reconciliation walks one account's customers in id order.
CREATE INDEX IF NOT EXISTS entitlement_summaries_account_idx ON entitlement_summaries (account, customer_id);

-- What the application gates on, per customer we know of (from customers,
-- subscriptions or entitlements): the best access of its subscriptions
-- (ranked as subsync.access.ACCESS_RANKING; 'none' without any), the lookup
-- keys of its active entitlements, sorted, and what its subscriptions owe.
-- A view, so never out of step; `WHERE customer_id = $1` is a few index
-- probes (the condition reaches each branch of the UNION ALL).
CREATE OR REPLACE VIEW customer_access AS
SELECT known.customer_id,
       known.account,
       COALESCE(subs.access, 'none') AS access,
       COALESCE(ents.features, '{}'::text[]) AS features,
       COALESCE(subs.owed_amount, 0)::bigint AS owed_amount
  FROM (SELECT customer_id, max(account) AS account
          FROM (SELECT id AS customer_id, account FROM customers
                UNION ALL
                SELECT customer_id, account FROM subscriptions WHERE customer_id IS NOT NULL
                UNION ALL
                SELECT customer_id, account FROM entitlement_summaries) AS sources
         GROUP BY customer_id) AS known
 CROSS JOIN LATERAL (
        SELECT (ARRAY['full', 'grace', 'restricted', 'suspended', 'none'])[
                   min(array_position(ARRAY['full', 'grace', 'restricted', 'suspended', 'none'], s.access))
               ] AS access,
               sum(s.owed_amount) AS owed_amount
          FROM subscriptions s
         WHERE s.customer_id = known.customer_id) AS subs
 CROSS JOIN LATERAL (
        SELECT array_agg(e.lookup_key ORDER BY e.lookup_key) AS features
          FROM customer_entitlements e
         WHERE e.customer_id = known.customer_id) AS ents;

-- Ours: every replay an operator asked for (who, when, which events).
CREATE TABLE IF NOT EXISTS event_replays (
    id           bigserial PRIMARY KEY,
    requested_at timestamptz NOT NULL DEFAULT now(),
    requested_by text NOT NULL,
    filters      jsonb NOT NULL DEFAULT '{}'::jsonb,
    event_ids    text[] NOT NULL,
    dry_run      boolean NOT NULL DEFAULT false
);

-- Ours: small durable state of the scheduled jobs (the backfill checkpoint),
-- and one row per scheduled tick so a job runs once per schedule however
-- many scheduler processes fire it.
CREATE TABLE IF NOT EXISTS job_state (
    name       text PRIMARY KEY,
    value      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS job_runs (
    job           text NOT NULL,
    scheduled_for timestamptz NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job, scheduled_for)
);

-- Ours: each reactivation of a suspended subscription (`subscriptions
-- reactivate`): one row per suspended subscription, so a second run finds
-- the first one's Stripe objects instead of charging again. `status`:
-- 'started' (asked, Stripe's objects not all made yet), 'created' (the
-- invoice item and the new subscription exist), 'settled' (the new
-- subscription's first invoice was paid: the old one owes nothing more).
CREATE TABLE IF NOT EXISTS reactivations (
    subscription_id       text PRIMARY KEY,
    customer_id           text NOT NULL,
    account               text,
    owed_amount           bigint NOT NULL,
    currency              text,
    -- the unpaid invoice the owed amount was priced on
    unpaid_invoice_id     text,
    -- the invoice item's description: the days it charges for
    description           text NOT NULL,
    invoice_item_id       text,
    new_subscription_id   text UNIQUE,
    status                text NOT NULL DEFAULT 'started' CHECK (status IN ('started', 'created', 'settled')),
    requested_by          text NOT NULL,
    requested_at          timestamptz NOT NULL DEFAULT now(),
    settled_at            timestamptz,
    settled_by_invoice_id text
);
