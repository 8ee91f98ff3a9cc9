"""Reconciliation against Stripe's API, event backfill, and the scheduler process."""
