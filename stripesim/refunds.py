"""Refunds of charges: made now, or pending until settled (succeeded or failed).

A refund takes from its charge at once (``amount_refunded``, ``refunded``
when nothing is left): ``charge.refunded`` (with ``previous_attributes``)
then, from 2024-10-28.acacia, ``refund.created``. A pending refund that
settles emits ``refund.updated`` (and ``refund.failed`` when it fails, giving
the amount back to the charge); before 2024-10-28 a settled refund of a
charge is announced by ``charge.refund.updated`` only, as Stripe did.
"""

from __future__ import annotations

from .charges import ChargesMixin
from .core import operation, previous_attributes
from .model import SimError, missing
from .payments_model import Charge, Refund
from .shapes import JSON, _money
from .tables import list_page

REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")
FAILURE_REASONS = ("lost_or_stolen_card", "expired_or_canceled_card", "charge_for_pending_refund_disputed", "unknown")


class RefundsMixin(ChargesMixin):
    """``refund``, ``settle_refund`` and reading refunds."""

    def _unrefunded(self, ch: Charge) -> int:
        return ch.amount - sum(self._pay.refunds.rows[r].amount for r in ch.refunds if self._pay.refunds.rows[r].counts)

    @operation
    def refund(
        self,
        charge_or_invoice: str,
        amount: int | None = None,
        reason: str | None = None,
        *,
        pending: bool = False,
        metadata: dict[str, str] | None = None,
        account: str | None = None,
    ) -> JSON:
        """Refund a charge (``ch_``), or the charge that paid an invoice (``in_``) or a payment intent (``pi_``).

        ``amount`` None: what is left to refund. ``pending``: the refund stays
        ``pending`` until :meth:`settle_refund`; otherwise it has ``succeeded``.
        """
        self._use(account)
        ch = self._charge_for(charge_or_invoice)
        if reason is not None and reason not in REFUND_REASONS:
            raise SimError(
                f"Invalid reason: must be one of {', '.join(REFUND_REASONS)}", code="parameter_invalid", param="reason"
            )
        if ch.status != "succeeded":
            raise SimError(f"Charge {ch.id} has not succeeded; only a paid charge can be refunded.", param="charge")
        if ch.dispute is not None and self._pay.disputes.rows[ch.dispute].status not in ("warning_needs_response",):
            raise SimError(
                f"Charge {ch.id} has been charged back; you cannot refund it.", code="charge_disputed", param="charge"
            )
        left = self._unrefunded(ch)
        if left <= 0:
            raise SimError(f"Charge {ch.id} has already been refunded.", code="charge_already_refunded", param="charge")
        value = left if amount is None else int(amount)
        if value <= 0:
            raise SimError("Invalid positive integer", code="parameter_invalid_integer", param="amount")
        if value > left:
            raise SimError(
                f"Refund amount ({_money(value, ch.currency)}) is greater than unrefunded amount on charge "
                f"({_money(left, ch.currency)})",
                code="amount_too_large",
                param="amount",
            )
        before = self._charge_json(ch)
        re = Refund(
            id=self.ids.new("re"),
            charge=ch.id,
            payment_intent=ch.payment_intent,
            amount=value,
            currency=ch.currency,
            created=self.clock.now(),
            status="pending" if pending else "succeeded",
            reason=reason,
            balance_transaction=self.ids.new("txn"),
            metadata=dict(metadata or {}),
        )
        self._pay.refunds.add(re)
        ch.refunds.append(re.id)
        after = self._charge_json(ch)
        self._emit("charge.refunded", after, previous_attributes(before, after))
        if self.money_render.refund_events:
            self._emit("refund.created", self.money_render.refund(re))
        return self.money_render.refund(re)

    @operation
    def settle_refund(
        self,
        refund: str,
        succeeded: bool = True,
        failure_reason: str = "lost_or_stolen_card",
        *,
        account: str | None = None,
    ) -> JSON:
        """A pending refund ends: ``succeeded``, or ``failed`` (the amount goes back to the charge)."""
        self._use(account)
        re = self._pay.refunds.get(refund)
        if re is None:
            raise missing("refund", refund, "refund")
        if re.status != "pending":
            raise SimError(f"Refund {re.id} is {re.status}, not pending", param="refund")
        if not succeeded and failure_reason not in FAILURE_REASONS:
            raise SimError(f"failure_reason must be one of {', '.join(FAILURE_REASONS)}", param="failure_reason")
        before = self.money_render.refund(re)
        if succeeded:
            re.status = "succeeded"
        else:
            re.status = "failed"
            re.failure_reason = failure_reason
            re.failure_balance_transaction = self.ids.new("txn")
        after = self.money_render.refund(re)
        changed = previous_attributes(before, after)
        if self.money_render.refund_events:
            self._emit("refund.updated", after, changed)
            if not succeeded:
                self._emit("refund.failed", self.money_render.refund(re))
        else:
            self._emit("charge.refund.updated", after, changed)
        return self.money_render.refund(re)

    def get_refund(self, ident: str, *, account: str | None = None) -> JSON:
        with self._acting(account):
            re = self._pay.refunds.get(ident)
            if re is None:
                raise missing("refund", ident, "id")
            return self.money_render.refund(re)

    def list_refunds(
        self,
        *,
        charge: str | None = None,
        payment_intent: str | None = None,
        created: dict[str, int] | None = None,
        limit: int | None = None,
        starting_after: str | None = None,
        ending_before: str | None = None,
        account: str | None = None,
    ) -> JSON:
        with self._acting(account):
            return list_page(
                self._pay.refunds,
                kind="refund",
                url="/v1/refunds",
                render=self.money_render.refund,
                match=lambda re: (
                    (charge is None or re.charge == charge)
                    and (payment_intent is None or re.payment_intent == payment_intent)
                ),
                created=created,
                limit=limit,
                starting_after=starting_after,
                ending_before=ending_before,
            )
