-- subsync schema. Applied by `flask --app webhooks db init` on every deploy:
-- every statement is idempotent (IF NOT EXISTS), so running it twice changes
-- nothing. Times are timestamptz in UTC; amounts are integers in the
-- currency's minor unit. Columns named in ../shared/CONTRACT.md are the
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
    replays      integer NOT NULL DEFAULT 0
);
-- The outbox: only unfinished events, so the sweep's scan stays tiny.
CREATE INDEX IF NOT EXISTS stripe_events_unfinished_idx
    ON stripe_events (received_at) WHERE status IN ('received', 'processing');
-- Failed events, for on-call (`events list --status failed`, bulk replay,
-- the failed-events gauge of /metrics): few rows, so a tiny index.
CREATE INDEX IF NOT EXISTS stripe_events_failed_idx
    ON stripe_events (received_at) WHERE status = 'failed';
CREATE INDEX IF NOT EXISTS stripe_events_received_at_idx ON stripe_events (received_at DESC);
CREATE INDEX IF NOT EXISTS stripe_events_object_idx ON stripe_events (object_id);
-- ours: payloads (2 to 6 KB, over the TOAST threshold) compressed with lz4
-- where the server has it: PostgreSQL's share of an ack drops by about a
-- fifth against the default pglz. Skipped once set, so `db init` does not
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
    livemode             boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS subscriptions_customer_idx ON subscriptions (customer_id);
-- The only rows whose access time alone can change (full -> grace ->
-- restricted): the per-minute refresh reads this index and nothing else.
CREATE INDEX IF NOT EXISTS subscriptions_time_dependent_idx
    ON subscriptions (current_period_end)
    WHERE status = 'active' AND access IN ('full', 'grace');

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
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS invoices_subscription_idx ON invoices (subscription_id, created_at DESC);

-- The payment ledger: one row per fact (fact_key), however often Stripe
-- repeats it, whatever the order.
CREATE TABLE IF NOT EXISTS payments (
    id                  bigserial PRIMARY KEY,
    stripe_event_id     text NOT NULL UNIQUE,
    -- ours: what makes the fact unique, e.g. 'invoice:in_1:completed',
    -- 'invoice:in_1:failed:2', 'checkout:cs_1:expired'.
    fact_key            text NOT NULL UNIQUE,
    customer_id         text,
    subscription_id     text,
    invoice_id          text,
    checkout_session_id text,
    amount              bigint NOT NULL,
    currency            text,
    status              text NOT NULL CHECK (status IN ('COMPLETED', 'FAILED', 'EXPIRED', 'CANCELLED')),
    occurred_at         timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS payments_customer_idx ON payments (customer_id, occurred_at DESC);
CREATE INDEX IF NOT EXISTS payments_subscription_idx ON payments (subscription_id);

-- The audit trail of every change to a subscription row.
CREATE TABLE IF NOT EXISTS subscription_changes (
    id              bigserial PRIMARY KEY,
    subscription_id text NOT NULL,
    changed_at      timestamptz NOT NULL DEFAULT now(),
    source          text NOT NULL CHECK (source IN ('webhook', 'reconcile', 'grace', 'replay')),
    source_id       text,
    before          jsonb,
    after           jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS subscription_changes_subscription_idx
    ON subscription_changes (subscription_id, changed_at);
CREATE INDEX IF NOT EXISTS subscription_changes_source_idx ON subscription_changes (source_id);

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
    error             text
);

-- Ours: customers, from customer.* events.
CREATE TABLE IF NOT EXISTS customers (
    id                text PRIMARY KEY,
    email             text,
    name              text,
    metadata          jsonb NOT NULL DEFAULT '{}'::jsonb,
    deleted           boolean NOT NULL DEFAULT false,
    stripe_updated_at timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

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
