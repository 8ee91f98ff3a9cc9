"""A small Python client for a running simulator's ``/_sim`` control endpoints."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

import requests

from .control_extras import ExtrasControl

JSON = dict[str, Any]


class SimControlError(RuntimeError):
    """A control call failed; ``body`` is the simulator's error JSON."""

    def __init__(self, status: int, body: Any) -> None:
        msg = body.get("error", {}).get("message") if isinstance(body, dict) else str(body)
        super().__init__(f"{status}: {msg}")
        self.status = status
        self.body = body


class SimControl(ExtrasControl):
    """Drive a simulator over HTTP: ``SimControl("http://127.0.0.1:12111")``."""

    def __init__(self, base_url: str, timeout: float = 60.0, api_key: str = "sk_test_sim") -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.api_key = api_key
        self._http = requests.Session()

    def call(self, op: str, **kwargs: Any) -> Any:
        """POST ``/_sim/<op>`` with the non-None keyword arguments as JSON."""
        body = {k: v for k, v in kwargs.items() if v is not None}
        resp = self._http.post(f"{self.base_url}/_sim/{op}", json=body, timeout=self.timeout)
        data = resp.json()
        if resp.status_code >= 400:
            raise SimControlError(resp.status_code, data)
        return data

    def close(self) -> None:
        self._http.close()

    def stripe_client(
        self, max_network_retries: int | None = None, api_key: str | None = None, stripe_account: str | None = None
    ) -> Any:
        """A real ``stripe.StripeClient`` pointed at this simulator (acting for ``stripe_account`` if given)."""
        stripe = importlib.import_module("stripe")  # only for callers that want it
        return stripe.StripeClient(
            api_key or self.api_key,
            base_addresses={"api": self.base_url},
            max_network_retries=max_network_retries,
            stripe_account=stripe_account,
        )

    # -- clock -----------------------------------------------------------------
    def now(self) -> int:
        return int(self.call("clock")["now"])

    def advance(self, seconds: int = 0, *, days: float = 0, hours: float = 0) -> JSON:
        return self.call("advance", seconds=seconds, days=days, hours=hours)

    def advance_to(self, ts: int) -> JSON:
        return self.call("advance_to", ts=ts)

    # -- settings --------------------------------------------------------------
    def settings(self) -> JSON:
        return self.call("settings")

    def configure(
        self,
        *,
        dunning_end: str | None = None,
        retry_schedule_days: Iterable[float] | None = None,
        finalize_delay: int | None = None,
        trial_will_end_days: int | None = None,
        checkout_expiry: int | None = None,
        incomplete_expiry: int | None = None,
        payment_events: bool | None = None,
    ) -> JSON:
        """How dunning ends (``canceled``/``unpaid``/``past_due``), the retry schedule (days after first failure),
        and whether payments emit their own events."""
        return self.call(
            "configure",
            dunning_end=dunning_end,
            retry_schedule_days=list(retry_schedule_days) if retry_schedule_days is not None else None,
            finalize_delay=finalize_delay,
            trial_will_end_days=trial_will_end_days,
            checkout_expiry=checkout_expiry,
            incomplete_expiry=incomplete_expiry,
            payment_events=payment_events,
        )

    def configure_delivery(
        self,
        *,
        urls: Iterable[str] | None = None,
        secret: str | None = None,
        seed: int | None = None,
        thin_urls: Iterable[str] | None = None,
        **settings: Any,
    ) -> JSON:
        """Endpoints (``thin_urls``: thin payloads), secret(s) and chaos: duplicate_rate, resend_rate,
        drop_rate, reorder_window, delay, max_attempts, retry_initial, retry_factor, retry_max, timeout,
        paused, body_format, drop_types."""
        return self.call(
            "configure_delivery",
            urls=list(urls) if urls is not None else None,
            secret=secret,
            seed=seed,
            thin_urls=list(thin_urls) if thin_urls is not None else None,
            **settings,
        )

    def set_rate_limit(self, every: int | None = None, next: int | None = None) -> JSON:
        return self.call("set_rate_limit", every=every, next=next)

    def clear_rate_limit(self) -> JSON:
        return self.call("set_rate_limit")

    def set_latency(self, path: str, seconds: float, *, method: str = "POST", next: int = 1) -> JSON:
        return self.call("set_latency", path=path, seconds=seconds, method=method, next=next)

    def flush(self, timeout: float = 10.0) -> bool:
        return bool(self.call("flush", timeout=timeout)["flushed"])

    def delivery_stats(self) -> JSON:
        return self.call("stats")

    def reset_delivery_stats(self) -> JSON:
        return self.call("reset_delivery_stats")

    def deliveries(self, event: str | None = None) -> list[JSON]:
        return list(self.call("deliveries", event=event)["deliveries"])

    def events(self, type: str | None = None, account: str | None = None) -> list[JSON]:
        """Every event ever emitted, oldest first (``type`` may use ``*``); ``account``: an id or ``"all"``."""
        return list(self.call("events", type=type, account=account)["events"])

    def truth(self, include: Iterable[str] | None = None, account: str | None = None) -> JSON:
        """The objects of the platform, of ``account``, or of every account (``"all"``, each with its account)."""
        return self.call("truth", include=list(include) if include is not None else None, account=account)

    def thin_events(self, type: str | None = None, account: str | None = None) -> list[JSON]:
        """Every thin event (``v2.core.event``), oldest first, as ``GET /v2/core/events/{id}`` shows it."""
        return list(self.call("thin_events", type=type, account=account)["events"])

    def fail_event_generation(
        self,
        type: str = "*",
        *,
        n: int = 1,
        object: str | None = None,
        account: str | None = None,
        resolve_after: int | None = 3600,
    ) -> JSON:
        """Lose the next ``n`` v1 events of ``type``; their health events ``resolve_after`` seconds later
        (None: at :meth:`resolve_event_generation_failures`)."""
        return self.call(
            "fail_event_generation",
            type=type,
            n=n,
            object=object,
            account=account,
            resolve_after=-1 if resolve_after is None else resolve_after,
        )

    def resolve_event_generation_failures(self) -> list[JSON]:
        return list(self.call("resolve_event_generation_failures")["events"])

    def event_generation_failures(self) -> list[JSON]:
        return list(self.call("event_generation_failures")["failures"])

    # -- connected accounts ------------------------------------------------------
    def create_account(
        self,
        *,
        id: str | None = None,
        type: str | None = None,
        country: str | None = None,
        email: str | None = None,
        business_name: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> JSON:
        return self.call(
            "create_account",
            id=id,
            type=type,
            country=country,
            email=email,
            business_name=business_name,
            metadata=metadata,
        )

    def accounts(self) -> JSON:
        """``{"platform": account, "accounts": [connected account, ...]}``."""
        return self.call("accounts")

    def deauthorize_account(self, account: str) -> JSON:
        return self.call("deauthorize_account", account=account)

    # -- catalogue / customers -----------------------------------------------------
    def create_price(
        self,
        unit_amount: int,
        *,
        interval: str = "month",
        interval_count: int = 1,
        currency: str = "usd",
        id: str | None = None,
        product_name: str | None = None,
        account: str | None = None,
    ) -> JSON:
        return self.call(
            "create_price",
            unit_amount=unit_amount,
            interval=interval,
            interval_count=interval_count,
            currency=currency,
            id=id,
            product_name=product_name,
            account=account,
        )

    def create_customer(
        self,
        email: str | None = None,
        name: str | None = None,
        metadata: dict[str, str] | None = None,
        id: str | None = None,
        account: str | None = None,
    ) -> JSON:
        return self.call("create_customer", email=email, name=name, metadata=metadata, id=id, account=account)

    def update_customer(
        self,
        customer: str,
        *,
        email: str | None = None,
        name: str | None = None,
        description: str | None = None,
        metadata: dict[str, str] | None = None,
        account: str | None = None,
    ) -> JSON:
        return self.call(
            "update_customer",
            customer=customer,
            email=email,
            name=name,
            description=description,
            metadata=metadata,
            account=account,
        )

    def delete_customer(self, customer: str, *, account: str | None = None) -> JSON:
        return self.call("delete_customer", customer=customer, account=account)

    def fail_next_payments(
        self, customer: str, n: int = 1, until_new_card: bool = False, *, account: str | None = None
    ) -> JSON:
        return self.call("fail_next_payments", customer=customer, n=n, until_new_card=until_new_card, account=account)

    def attach_new_card(self, customer: str, *, account: str | None = None) -> JSON:
        return self.call("attach_new_card", customer=customer, account=account)

    # -- subscriptions -----------------------------------------------------------
    def create_subscription(
        self,
        customer: str,
        price: str | None = None,
        *,
        trial_days: int | None = None,
        trial_end: int | str | None = None,
        payment_behavior: str | None = None,
        metadata: dict[str, str] | None = None,
        quantity: int | None = None,
        items: list[dict[str, Any]] | None = None,
        billing_mode: str | None = None,
        account: str | None = None,
    ) -> JSON:
        return self.call(
            "create_subscription",
            customer=customer,
            price=price,
            trial_days=trial_days,
            trial_end=trial_end,
            payment_behavior=payment_behavior,
            metadata=metadata,
            quantity=quantity,
            items=items,
            billing_mode=billing_mode,
            account=account,
        )

    def update_subscription_items(
        self,
        subscription: str,
        *,
        add: list[dict[str, Any]] | None = None,
        remove: list[str] | None = None,
        quantities: dict[str, int] | None = None,
        account: str | None = None,
        prices: dict[str, str] | None = None,
    ) -> JSON:
        return self.call(
            "update_subscription_items",
            subscription=subscription,
            add=add,
            remove=remove,
            quantities=quantities,
            account=account,
            prices=prices,
        )

    def change_subscription_price(
        self,
        subscription: str,
        price: str,
        *,
        item: str | None = None,
        quantity: int | None = None,
        account: str | None = None,
    ) -> JSON:
        return self.call(
            "change_subscription_price",
            subscription=subscription,
            price=price,
            item=item,
            quantity=quantity,
            account=account,
        )

    def cancel(
        self,
        subscription: str,
        *,
        at_period_end: bool = False,
        comment: str | None = None,
        feedback: str | None = None,
        account: str | None = None,
    ) -> JSON:
        return self.call(
            "cancel_subscription",
            subscription=subscription,
            at_period_end=at_period_end,
            comment=comment,
            feedback=feedback,
            account=account,
        )

    def uncancel(self, subscription: str, *, account: str | None = None) -> JSON:
        return self.call("uncancel_subscription", subscription=subscription, account=account)

    def update_subscription_metadata(
        self, subscription: str, metadata: dict[str, str], *, account: str | None = None
    ) -> JSON:
        return self.call("update_subscription_metadata", subscription=subscription, metadata=metadata, account=account)

    def pause(self, subscription: str, *, account: str | None = None) -> JSON:
        return self.call("pause_subscription", subscription=subscription, account=account)

    def resume(self, subscription: str, *, account: str | None = None) -> JSON:
        return self.call("resume_subscription", subscription=subscription, account=account)

    def pay_open_invoice(
        self,
        subscription: str | None = None,
        *,
        invoice: str | None = None,
        new_card: bool = True,
        account: str | None = None,
    ) -> JSON:
        return self.call(
            "pay_open_invoice", subscription=subscription, invoice=invoice, new_card=new_card, account=account
        )

    def finalize_invoice(self, invoice: str, *, auto_advance: bool | None = None, account: str | None = None) -> JSON:
        return self.call("finalize_invoice", invoice=invoice, auto_advance=auto_advance, account=account)

    def void_invoice(self, invoice: str, *, account: str | None = None) -> JSON:
        return self.call("void_invoice", invoice=invoice, account=account)

    def mark_uncollectible(self, invoice: str, *, account: str | None = None) -> JSON:
        return self.call("mark_uncollectible", invoice=invoice, account=account)

    def bulk_create(
        self,
        n: int,
        *,
        price: str | None = None,
        status: str | None = None,
        emit_events: bool = False,
        spread_seconds: int = 0,
        canceled_every: int = 0,
        with_invoices: bool = True,
        return_ids: bool = True,
        quiet: bool | None = None,
        account: str | None = None,
    ) -> JSON:
        return self.call(
            "bulk_create",
            account=account,
            quiet=quiet,
            n=n,
            price=price,
            status=status,
            emit_events=emit_events,
            spread_seconds=spread_seconds,
            canceled_every=canceled_every,
            with_invoices=with_invoices,
            return_ids=return_ids,
        )

    # -- checkout ----------------------------------------------------------------
    def create_checkout_session(
        self,
        mode: str = "payment",
        *,
        customer: str | None = None,
        customer_email: str | None = None,
        price: str | None = None,
        amount_total: int | None = None,
        currency: str | None = None,
        trial_days: int | None = None,
        metadata: dict[str, str] | None = None,
        client_reference_id: str | None = None,
        account: str | None = None,
    ) -> JSON:
        return self.call(
            "create_checkout_session",
            account=account,
            mode=mode,
            customer=customer,
            customer_email=customer_email,
            price=price,
            amount_total=amount_total,
            currency=currency,
            trial_days=trial_days,
            metadata=metadata,
            client_reference_id=client_reference_id,
        )

    def complete_checkout_session(
        self, session: str, *, async_payment: bool = False, account: str | None = None
    ) -> JSON:
        return self.call("complete_checkout_session", session=session, async_payment=async_payment, account=account)

    def checkout_async_payment(self, session: str, *, succeeded: bool = True, account: str | None = None) -> JSON:
        return self.call("checkout_async_payment", session=session, succeeded=succeeded, account=account)

    def expire_checkout_session(self, session: str, *, account: str | None = None) -> JSON:
        return self.call("expire_checkout_session", session=session, account=account)
