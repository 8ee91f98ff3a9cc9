"""Customers: create, update, delete, and the card switches that make payments fail."""

from __future__ import annotations

from .core import SimCore, operation, previous_attributes
from .model import LIVE_STATUSES, Customer, SimError
from .shapes import JSON


class CustomersMixin(SimCore):
    """Customers and their payment method's behaviour."""

    def _new_customer(
        self, email: str | None, name: str | None, metadata: dict[str, str] | None, id: str | None = None
    ) -> Customer:
        cid = id or self.ids.new("cus", 14)
        if cid in self.customers:
            raise SimError(f"Customer {cid} already exists", code="resource_already_exists", param="id")
        prefix = self.rng.randbytes(4).hex().upper()
        cus = Customer(cid, self.clock.now(), email, name, dict(metadata or {}), prefix)
        self.customers[cid] = cus
        self._cus_pos[cid] = len(self._cus_ids)
        self._cus_ids.append(cid)
        return cus

    @operation
    def create_customer(
        self,
        *,
        email: str | None = None,
        name: str | None = None,
        metadata: dict[str, str] | None = None,
        id: str | None = None,
        account: str | None = None,
    ) -> JSON:
        self._use(account)
        cus = self._new_customer(email, name, metadata, id)
        out = self.render.customer(cus)
        self._emit("customer.created", out)
        return self.render.customer(cus)

    @operation
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
        self._use(account)
        cus = self._live_customer(customer)
        before = self.render.customer(cus)
        if email is not None:
            cus.email = email
        if name is not None:
            cus.name = name
        if description is not None:
            cus.description = description
        if metadata is not None:
            for key, value in metadata.items():
                if value in (None, ""):
                    cus.metadata.pop(key, None)
                else:
                    cus.metadata[key] = str(value)
        after = self.render.customer(cus)
        self._emit("customer.updated", after, previous_attributes(before, after))
        return self.render.customer(cus)

    @operation
    def delete_customer(self, customer: str, *, account: str | None = None) -> JSON:
        """Cancel the customer's live subscriptions at once, then ``customer.deleted``."""
        self._use(account)
        cus = self._live_customer(customer)
        for sid in self._subs_by_customer.get(cus.id, []):
            sub = self.subscriptions[sid]
            if sub.status in LIVE_STATUSES:
                self._end_now(sub, "cancellation_requested")
        snapshot = self.render.customer(cus)
        cus.deleted = True
        self._emit("customer.deleted", snapshot)
        return self.render.customer(cus)

    @operation
    def fail_next_payments(
        self, customer: str, n: int = 1, until_new_card: bool = False, *, account: str | None = None
    ) -> JSON:
        """The customer's next ``n`` payment attempts fail (or all, until a new card)."""
        self._use(account)
        cus = self._live_customer(customer)
        cus.fail_remaining = int(n) if not until_new_card else cus.fail_remaining
        cus.fail_until_new_card = bool(until_new_card)
        return {"customer": cus.id, "fail_remaining": cus.fail_remaining, "until_new_card": cus.fail_until_new_card}

    @operation
    def attach_new_card(self, customer: str, *, account: str | None = None) -> JSON:
        """A new default card: clears the failure flags (``customer.updated``)."""
        self._use(account)
        cus = self._live_customer(customer)
        self._attach_card(cus)
        return self.render.customer(cus)

    def _attach_card(self, cus: Customer) -> None:
        before = self.render.customer(cus)
        cus.fail_remaining = 0
        cus.fail_until_new_card = False
        cus.default_payment_method = self.ids.new("pm")
        after = self.render.customer(cus)
        self._emit("customer.updated", after, previous_attributes(before, after))

    def _payment_fails(self, cus: Customer, peek: bool = False) -> bool:
        if cus.fail_until_new_card:
            return True
        if cus.fail_remaining > 0:
            if not peek:
                cus.fail_remaining -= 1
            return True
        return False
