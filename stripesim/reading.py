"""Reading: one object by id, Stripe's list endpoints, the ground truth and the whole event log.

Each read is of one account (``account=``: a connected account's id, None for
the platform), as the ``Stripe-Account`` header selects it; ``truth`` and
``all_events`` can also read every account at once (``account="all"``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from .core import SimCore
from .ledger import Ledger
from .listing import EventIds, check_limit, created_range, created_range_by, paginate, position_of
from .model import DAY, SUB_STATUSES, SimError, missing
from .shapes import JSON

EVENT_RETENTION = 30 * DAY
# statuses a default ``GET /v1/subscriptions`` leaves out
HIDDEN_BY_DEFAULT = ("canceled", "incomplete_expired")
INVOICE_STATUSES = ("draft", "open", "paid", "uncollectible", "void")


class ReadingMixin(SimCore):
    """Read-only operations; none emits an event."""

    def get_subscription(self, ident: str, *, account: str | None = None) -> JSON:
        with self._acting(account):
            return self.render.subscription(self._sub(ident, "id"))

    def get_subscription_item(self, ident: str, *, account: str | None = None) -> JSON:
        with self._acting(account) as led:
            sub = self.subscriptions.get(led.item_sub.get(ident, ""))
            item = sub.item(ident) if sub is not None else None
            if sub is None or item is None:
                raise missing("subscription_item", ident, "id")
            return self.render.subscription_item(sub, item)

    def get_invoice(self, ident: str, *, account: str | None = None) -> JSON:
        with self._acting(account):
            return self.render.invoice(self._inv(ident, "id"))

    def get_customer(self, ident: str, *, account: str | None = None) -> JSON:
        with self._acting(account):
            return self.render.customer(self._customer(ident, "id"))

    def get_checkout_session(self, ident: str, *, account: str | None = None) -> JSON:
        with self._acting(account):
            cs = self.sessions.get(ident)
            if cs is None:
                raise missing("checkout.session", ident, "id")
            return self.render.checkout_session(cs)

    def get_price(self, ident: str, *, account: str | None = None) -> JSON:
        with self._acting(account):
            return self.render.price(self._price(ident))

    def get_event(self, ident: str, *, account: str | None = None) -> JSON:
        with self._acting(account):
            pos = self._event_pos.get(ident)
            if pos is None or self.events[pos]["created"] < self.clock.now() - EVENT_RETENTION:
                raise missing("event", ident, "id")
            return self.events[pos]

    def list_subscriptions(
        self,
        *,
        status: str | None = None,
        customer: str | None = None,
        price: str | None = None,
        limit: int | None = None,
        starting_after: str | None = None,
        ending_before: str | None = None,
        created: dict[str, int] | None = None,
        account: str | None = None,
    ) -> JSON:
        """``GET /v1/subscriptions``: newest first, ties in creation order."""
        n = check_limit(limit)
        if status is not None and status not in (*SUB_STATUSES, "all", "ended"):
            allowed = ", ".join((*SUB_STATUSES, "all", "ended"))
            raise SimError(f"Invalid status: must be one of {allowed}", param="status")
        with self._acting(account):
            subs = self.subscriptions

            def match(sid: str) -> bool:
                st = subs[sid].status
                if status is None:
                    ok = st not in HIDDEN_BY_DEFAULT
                elif status == "all":
                    ok = True
                elif status == "ended":
                    ok = st in HIDDEN_BY_DEFAULT
                else:
                    ok = st == status
                return ok and (price is None or subs[sid].has_price(price))

            if customer is not None:
                ids = self._subs_by_customer.get(customer, [])
                local = {sid: i for i, sid in enumerate(ids)}
                pos = position_of(local, "subscription")
            else:
                ids = self._sub_ids
                pos = position_of(self._sub_pos, "subscription")
            lo, hi = created_range_by(ids, created, lambda sid: subs[sid].created)
            page, more = paginate(
                ids, pos, match, n, starting_after=starting_after, ending_before=ending_before, lo=lo, hi=hi
            )
            return {
                "object": "list",
                "data": [self.render.subscription(subs[sid]) for sid in page],
                "has_more": more,
                "url": "/v1/subscriptions",
            }

    def list_invoices(
        self,
        *,
        subscription: str | None = None,
        customer: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        starting_after: str | None = None,
        ending_before: str | None = None,
        account: str | None = None,
        created: dict[str, int] | None = None,
    ) -> JSON:
        """``GET /v1/invoices``: newest first, ties in creation order; ``created[gte|gt|lte|lt]`` by bisection."""
        n = check_limit(limit)
        if status is not None and status not in INVOICE_STATUSES:
            raise SimError("Invalid status: must be one of draft, open, paid, uncollectible, or void", param="status")
        with self._acting(account):
            invs = self.invoices
            if subscription is not None:
                ids = self._invs_by_sub.get(subscription, [])
                pos = position_of({iid: i for i, iid in enumerate(ids)}, "invoice")
            else:
                ids = self._inv_ids
                pos = position_of(self._inv_pos, "invoice")

            def match(iid: str) -> bool:
                inv = invs[iid]
                return (customer is None or inv.customer == customer) and (status is None or inv.status == status)

            lo, hi = created_range_by(ids, created, lambda iid: invs[iid].created)
            page, more = paginate(
                ids, pos, match, n, starting_after=starting_after, ending_before=ending_before, lo=lo, hi=hi
            )
            return {
                "object": "list",
                "data": [self.render.invoice(invs[i]) for i in page],
                "has_more": more,
                "url": "/v1/invoices",
            }

    def list_customers(
        self,
        *,
        email: str | None = None,
        limit: int | None = None,
        starting_after: str | None = None,
        ending_before: str | None = None,
        account: str | None = None,
    ) -> JSON:
        n = check_limit(limit)
        with self._acting(account):
            cs = self.customers

            def match(cid: str) -> bool:
                return not cs[cid].deleted and (email is None or cs[cid].email == email)

            pos = position_of(self._cus_pos, "customer")
            page, more = paginate(
                self._cus_ids, pos, match, n, starting_after=starting_after, ending_before=ending_before
            )
            return {
                "object": "list",
                "data": [self.render.customer(cs[c]) for c in page],
                "has_more": more,
                "url": "/v1/customers",
            }

    def list_events(
        self,
        *,
        type: str | None = None,
        types: list[str] | None = None,
        created: dict[str, int] | None = None,
        limit: int | None = None,
        starting_after: str | None = None,
        ending_before: str | None = None,
        account: str | None = None,
    ) -> JSON:
        """``GET /v1/events``: the account's events of the last 30 days, newest first; ``type`` may use ``*``."""
        n = check_limit(limit)
        if type is not None and types:
            raise SimError("You may only specify one of these parameters: type, types.", param="types")
        patterns = [type] if type is not None else list(types or [])
        with self._acting(account):
            bounds = dict(created or {})
            floor = self.clock.now() - EVENT_RETENTION
            bounds["gte"] = max(bounds.get("gte", floor), floor)
            lo, hi = created_range(self._event_created, bounds)
            ids_events = self.events

            def match(pos_or_id: str) -> bool:
                if not patterns:
                    return True
                t = ids_events[self._event_pos[pos_or_id]]["type"]
                return any(fnmatch.fnmatchcase(t, p) for p in patterns)

            ids = EventIds(self.events)
            pos = position_of(self._event_pos, "event")
            page, more = paginate(
                ids, pos, match, n, starting_after=starting_after, ending_before=ending_before, lo=lo, hi=hi
            )
            return {
                "object": "list",
                "data": [self.events[self._event_pos[e]] for e in page],
                "has_more": more,
                "url": "/v1/events",
            }

    def list_subscription_items(
        self,
        subscription: str,
        *,
        limit: int | None = None,
        starting_after: str | None = None,
        ending_before: str | None = None,
        account: str | None = None,
    ) -> JSON:
        """``GET /v1/subscription_items?subscription=``: the items in the order they were added."""
        n = check_limit(limit)
        with self._acting(account):
            sub = self._sub(subscription)
            # stored newest last, listed oldest first: paginate the reversed order
            ids = [it.id for it in reversed(sub.items)]
            pos = position_of({i: k for k, i in enumerate(ids)}, "subscription_item")
            page, more = paginate(
                ids, pos, lambda _i: True, n, starting_after=starting_after, ending_before=ending_before
            )
            return {
                "object": "list",
                "data": [self.get_subscription_item(i, account=account) for i in page],
                "has_more": more,
                "url": "/v1/subscription_items",
            }

    def _ledgers(self, account: str | None) -> list[Ledger]:
        if account == "all":
            return [self.platform, *self.connected.values()]
        return [self._ledger_of(account)]

    def truth(
        self,
        include: Iterable[str] = ("subscriptions", "invoices", "customers", "checkout_sessions"),
        account: str | None = None,
    ) -> JSON:
        """Every object's current state as the API renders it (ground truth for tests).

        ``account``: None for the platform's objects, an ``acct_...`` id for that
        account's, ``"all"`` for every account's, each object then carrying an
        ``account`` key (None for the platform's) and the answer an ``accounts`` list.
        """
        want = set(include)
        with self.lock:
            out: JSON = {"now": self.clock.now(), "api_version": self.api_version}
            every = account == "all"
            if every:
                out["livemode"] = self.livemode
                out["platform"] = self.platform_id
                out["accounts"] = list(self.connected)
            kinds = [k for k in ("subscriptions", "invoices", "customers", "checkout_sessions") if k in want]
            for kind in kinds:
                out[kind] = []
            for led in self._ledgers(account):
                with self._acting(led.account_id):
                    for kind in kinds:
                        for obj in self._render_all(kind):
                            if every:
                                obj["account"] = led.account_id
                            out[kind].append(obj)
            return out

    def _render_all(self, kind: str) -> list[JSON]:
        if kind == "subscriptions":
            return [self.render.subscription(self.subscriptions[s]) for s in self._sub_ids]
        if kind == "invoices":
            return [self.render.invoice(self.invoices[i]) for i in self._inv_ids]
        if kind == "customers":
            return [self.render.customer(self.customers[c]) for c in self._cus_ids]
        return [self.render.checkout_session(cs) for cs in self.sessions.values()]

    def all_events(self, type: str | None = None, account: str | None = None) -> list[JSON]:
        """Every event ever emitted, oldest first (no 30-day window); ``account`` as in :meth:`truth`."""
        with self.lock:
            events = self._all_events if account == "all" else self._ledger_of(account).events
            return [e for e in events if type is None or fnmatch.fnmatchcase(e["type"], type)]
