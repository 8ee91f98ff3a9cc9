"""Disputes (chargebacks) of charges: opened by the cardholder's bank, answered, closed won or lost.

A chargeback withdraws the disputed amount and a 15.00 fee at once:
``charge.dispute.created`` then ``charge.dispute.funds_withdrawn``. An inquiry
(``inquiry=True``) withdraws nothing. Evidence (``POST /v1/disputes/{id}``)
moves it to ``under_review`` (``charge.dispute.updated``). Closing it:
``charge.dispute.closed`` (``won``/``lost``; an inquiry: ``warning_closed``),
and when won, ``charge.dispute.funds_reinstated`` gives the amount back (the
fee stays taken, as Stripe keeps it).
"""

from __future__ import annotations

from .charges import ChargesMixin
from .core import operation, previous_attributes
from .model import DAY, SimError, missing
from .payments_model import BalanceMove, Dispute
from .payments_shapes import EVIDENCE_FIELDS
from .shapes import JSON
from .tables import list_page

DISPUTE_REASONS = (
    "bank_cannot_process",
    "credit_not_processed",
    "customer_initiated",
    "debit_not_authorized",
    "duplicate",
    "fraudulent",
    "general",
    "incorrect_account_details",
    "insufficient_funds",
    "product_not_received",
    "product_unacceptable",
    "subscription_canceled",
    "unrecognized",
)
DISPUTE_FEE = 1500
EVIDENCE_DAYS = 21
OPEN = ("warning_needs_response", "warning_under_review", "needs_response", "under_review")


class DisputesMixin(ChargesMixin):
    """``dispute``, ``update_dispute``, ``close_dispute`` and reading disputes."""

    def _dispute_json(self, du: Dispute) -> JSON:
        return self.money_render.dispute(du, self.clock.now())

    def _dispute_of(self, ident: str) -> Dispute:
        du = self._pay.disputes.get(ident)
        if du is None:
            raise missing("dispute", ident, "dispute")
        return du

    @operation
    def dispute(
        self,
        charge: str,
        amount: int | None = None,
        reason: str = "fraudulent",
        *,
        inquiry: bool = False,
        account: str | None = None,
    ) -> JSON:
        """The cardholder disputes a charge (``ch_``, or the charge of an invoice ``in_``)."""
        self._use(account)
        ch = self._charge_for(charge)
        if ch.status != "succeeded":
            raise SimError(f"Charge {ch.id} has not succeeded; only a paid charge can be disputed.", param="charge")
        if ch.dispute is not None:
            raise SimError(f"Charge {ch.id} is already disputed ({ch.dispute})", param="charge")
        if reason not in DISPUTE_REASONS:
            raise SimError(f"reason must be one of {', '.join(DISPUTE_REASONS)}", param="reason")
        value = ch.amount if amount is None else int(amount)
        if not 0 < value <= ch.amount:
            raise SimError("amount must be positive and at most the charge's amount", param="amount")
        now = self.clock.now()
        du = Dispute(
            id=self.ids.new("du"),
            charge=ch.id,
            payment_intent=ch.payment_intent,
            amount=value,
            currency=ch.currency,
            created=now,
            reason=reason,
            status="warning_needs_response" if inquiry else "needs_response",
            due_by=now + EVIDENCE_DAYS * DAY,
            inquiry=inquiry,
        )
        self._pay.disputes.add(du)
        ch.dispute = du.id
        self._emit("charge.dispute.created", self._dispute_json(du))
        if not inquiry:
            du.moves.append(
                BalanceMove(
                    self.ids.new("txn"),
                    -value,
                    DISPUTE_FEE,
                    du.currency,
                    now,
                    f"Chargeback withdrawal for {ch.id}",
                    "dispute",
                )
            )
            self._emit("charge.dispute.funds_withdrawn", self._dispute_json(du))
        return self._dispute_json(du)

    @operation
    def update_dispute(
        self,
        dispute: str,
        *,
        evidence: dict[str, str] | None = None,
        submit: bool = True,
        metadata: dict[str, str] | None = None,
        account: str | None = None,
    ) -> JSON:
        """Evidence and metadata; ``submit`` sends the evidence: ``under_review`` (``charge.dispute.updated``)."""
        self._use(account)
        du = self._dispute_of(dispute)
        if du.status not in OPEN:
            raise SimError(f"Dispute {du.id} is {du.status}; it can no longer be updated.", param="dispute")
        for key in evidence or {}:
            if key not in EVIDENCE_FIELDS:
                raise SimError(
                    f"Received unknown parameter: evidence[{key}]", code="parameter_unknown", param="evidence"
                )
        before = self._dispute_json(du)
        du.evidence.update({k: str(v) for k, v in (evidence or {}).items()})
        du.metadata.update({k: str(v) for k, v in (metadata or {}).items()})
        if submit and du.status in ("needs_response", "warning_needs_response"):
            du.status = "warning_under_review" if du.inquiry else "under_review"
            du.submission_count += 1
        after = self._dispute_json(du)
        changed = previous_attributes(before, after)
        if changed:
            self._emit("charge.dispute.updated", after, changed)
        return after

    @operation
    def close_dispute(self, dispute: str, won: bool, *, account: str | None = None) -> JSON:
        """The bank decides: ``won`` (funds reinstated) or ``lost`` (an inquiry just closes: ``warning_closed``)."""
        self._use(account)
        du = self._dispute_of(dispute)
        if du.status not in OPEN:
            raise SimError(f"Dispute {du.id} is already closed ({du.status})", param="dispute")
        self._close(du, won)
        return self._dispute_json(du)

    def _close(self, du: Dispute, won: bool) -> None:
        du.status = "warning_closed" if du.inquiry else ("won" if won else "lost")
        self._emit("charge.dispute.closed", self._dispute_json(du))
        if won and du.moves:
            du.moves.append(
                BalanceMove(
                    self.ids.new("txn"),
                    du.amount,
                    0,
                    du.currency,
                    self.clock.now(),
                    f"Chargeback reversal for {du.charge}",
                    "dispute_reversal",
                )
            )
            self._emit("charge.dispute.funds_reinstated", self._dispute_json(du))

    @operation
    def accept_dispute(self, dispute: str, *, account: str | None = None) -> JSON:
        """``POST /v1/disputes/{id}/close``: the merchant gives up; the dispute is ``lost``."""
        self._use(account)
        du = self._dispute_of(dispute)
        if du.status not in OPEN:
            raise SimError(f"Dispute {du.id} is already closed ({du.status})", param="dispute")
        self._close(du, won=False)
        return self._dispute_json(du)

    def get_dispute(self, ident: str, *, account: str | None = None) -> JSON:
        with self._acting(account):
            du = self._pay.disputes.get(ident)
            if du is None:
                raise missing("dispute", ident, "id")
            return self._dispute_json(du)

    def list_disputes(
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
                self._pay.disputes,
                kind="dispute",
                url="/v1/disputes",
                render=self._dispute_json,
                match=lambda du: (
                    (charge is None or du.charge == charge)
                    and (payment_intent is None or du.payment_intent == payment_intent)
                ),
                created=created,
                limit=limit,
                starting_after=starting_after,
                ending_before=ending_before,
            )
