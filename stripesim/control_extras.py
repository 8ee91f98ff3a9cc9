"""``/_sim`` operations (and their :class:`~stripesim.control.SimControl` methods) for money, entitlements
and invoice items."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .state import Simulator

JSON = dict[str, Any]


def extra_operations(sim: Simulator) -> dict[str, Callable[..., Any]]:
    """The op table's entries for refunds, disputes, features and invoice items (JSON body as keywords)."""

    def charges(account: str | None = None, **filters: Any) -> JSON:
        return sim.list_charges(limit=100, account=account, **filters)

    def active_entitlements(customer: str, account: str | None = None) -> JSON:
        return {
            "summary": sim.active_entitlement_summary(customer, account=account),
            "lookup_keys": sim.entitled_lookup_keys(customer, account=account),
        }

    return {
        "refund": sim.refund,
        "settle_refund": sim.settle_refund,
        "dispute": sim.dispute,
        "update_dispute": sim.update_dispute,
        "close_dispute": sim.close_dispute,
        "charges": charges,
        "create_feature": sim.create_feature,
        "update_feature": sim.update_feature,
        "attach_feature": sim.attach_feature,
        "detach_feature": sim.detach_feature,
        "active_entitlements": active_entitlements,
        "create_invoice_item": sim.create_invoice_item,
        "delete_invoice_item": sim.delete_invoice_item,
    }


class ExtrasControl:
    """:class:`~stripesim.control.SimControl` methods for the ops above."""

    def call(self, op: str, **kwargs: Any) -> Any:  # the client's own, in SimControl
        raise NotImplementedError

    # -- money ---------------------------------------------------------------------
    def refund(
        self,
        charge_or_invoice: str,
        amount: int | None = None,
        reason: str | None = None,
        *,
        pending: bool | None = None,
        account: str | None = None,
    ) -> JSON:
        return self.call(
            "refund",
            charge_or_invoice=charge_or_invoice,
            amount=amount,
            reason=reason,
            pending=pending,
            account=account,
        )

    def settle_refund(
        self,
        refund: str,
        succeeded: bool = True,
        failure_reason: str | None = None,
        *,
        account: str | None = None,
    ) -> JSON:
        return self.call(
            "settle_refund", refund=refund, succeeded=succeeded, failure_reason=failure_reason, account=account
        )

    def dispute(
        self,
        charge: str,
        amount: int | None = None,
        reason: str | None = None,
        *,
        inquiry: bool | None = None,
        account: str | None = None,
    ) -> JSON:
        return self.call("dispute", charge=charge, amount=amount, reason=reason, inquiry=inquiry, account=account)

    def update_dispute(
        self,
        dispute: str,
        *,
        evidence: dict[str, str] | None = None,
        submit: bool | None = None,
        account: str | None = None,
    ) -> JSON:
        return self.call("update_dispute", dispute=dispute, evidence=evidence, submit=submit, account=account)

    def close_dispute(self, dispute: str, won: bool, *, account: str | None = None) -> JSON:
        return self.call("close_dispute", dispute=dispute, won=won, account=account)

    def charges(self, *, customer: str | None = None, account: str | None = None) -> JSON:
        return self.call("charges", customer=customer, account=account)

    # -- entitlements ----------------------------------------------------------------
    def create_feature(self, lookup_key: str, name: str, *, account: str | None = None) -> JSON:
        return self.call("create_feature", lookup_key=lookup_key, name=name, account=account)

    def update_feature(
        self,
        feature: str,
        *,
        name: str | None = None,
        active: bool | None = None,
        account: str | None = None,
    ) -> JSON:
        return self.call("update_feature", feature=feature, name=name, active=active, account=account)

    def attach_feature(self, product: str, feature: str, *, account: str | None = None) -> JSON:
        return self.call("attach_feature", product=product, feature=feature, account=account)

    def detach_feature(self, product: str, feature: str, *, account: str | None = None) -> JSON:
        return self.call("detach_feature", product=product, feature=feature, account=account)

    def active_entitlements(self, customer: str, *, account: str | None = None) -> JSON:
        """``{"summary": ..., "lookup_keys": [...]}`` (every key, not only the summary's first 10)."""
        return self.call("active_entitlements", customer=customer, account=account)

    # -- invoice items ---------------------------------------------------------------
    def create_invoice_item(
        self,
        customer: str,
        amount: int,
        currency: str | None = None,
        description: str | None = None,
        subscription: str | None = None,
        *,
        account: str | None = None,
    ) -> JSON:
        return self.call(
            "create_invoice_item",
            customer=customer,
            amount=amount,
            currency=currency,
            description=description,
            subscription=subscription,
            account=account,
        )

    def delete_invoice_item(self, invoice_item: str, *, account: str | None = None) -> JSON:
        return self.call("delete_invoice_item", invoice_item=invoice_item, account=account)
