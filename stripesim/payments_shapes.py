"""Money records as Stripe JSON for one API version.

What the version changes:

* ``2025-03-31.basil`` and later: charges and payment intents have no
  ``invoice`` (an invoice reaches its payments through InvoicePayment
  objects, ``GET /v1/invoice_payments`` or ``expand[]=payments``).
* before ``2022-11-15`` a charge carries its ``refunds`` list; from then on only
  when asked (``expand[]=refunds``).
* from ``2024-10-28.acacia`` refunds of charges emit ``refund.created``,
  ``refund.updated`` and ``refund.failed``; before, only ``charge.refunded`` and
  ``charge.refund.updated``.
* from ``2025-05-28.basil`` a paid invoice payment emits ``invoice_payment.paid``.
"""

from __future__ import annotations

from typing import Any

from .payments_model import BalanceMove, Charge, Dispute, InvoicePayment, PaymentIntent, Refund
from .shapes import JSON, is_basil

CHARGE_REFUNDS_INCLUDABLE = "2022-11-15"
REFUND_EVENTS_FOR_CHARGES = "2024-10-28"
INVOICE_PAYMENT_PAID_EVENT = "2025-05-28"

DECLINE = {
    "code": "card_declined",
    "decline_code": "generic_decline",
    "message": "Your card was declined.",
}
EVIDENCE_FIELDS = (
    "access_activity_log",
    "billing_address",
    "cancellation_policy",
    "cancellation_policy_disclosure",
    "cancellation_rebuttal",
    "customer_communication",
    "customer_email_address",
    "customer_name",
    "customer_purchase_ip",
    "customer_signature",
    "duplicate_charge_documentation",
    "duplicate_charge_explanation",
    "duplicate_charge_id",
    "product_description",
    "receipt",
    "refund_policy",
    "refund_policy_disclosure",
    "refund_refusal_explanation",
    "service_date",
    "service_documentation",
    "shipping_address",
    "shipping_carrier",
    "shipping_date",
    "shipping_documentation",
    "shipping_tracking_number",
    "uncategorized_file",
    "uncategorized_text",
)


def _since(api_version: str, date: str) -> bool:
    return api_version[:10] >= date


class PaymentsRenderer:
    """Fresh JSON for money records; the caller passes what a record does not know (its invoice's state)."""

    def __init__(self, api_version: str, livemode: bool) -> None:
        self.api_version = api_version
        self.basil = is_basil(api_version)
        self.livemode = livemode
        self.refunds_in_charge = not _since(api_version, CHARGE_REFUNDS_INCLUDABLE)
        self.refund_events = _since(api_version, REFUND_EVENTS_FOR_CHARGES)
        self.invoice_payment_paid_event = self.basil and _since(api_version, INVOICE_PAYMENT_PAID_EVENT)

    # -- payment intent ----------------------------------------------------------
    def intent(self, pi: PaymentIntent, status: str, canceled_at: int | None) -> JSON:
        out: JSON = {
            "id": pi.id,
            "object": "payment_intent",
            "amount": pi.amount,
            "amount_capturable": 0,
            "amount_details": {"tip": {}},
            "amount_received": pi.amount_received,
            "application": None,
            "application_fee_amount": None,
            "automatic_payment_methods": None,
            "canceled_at": canceled_at,
            "cancellation_reason": "void_invoice" if canceled_at is not None and pi.invoice else None,
            "capture_method": "automatic",
            "client_secret": f"{pi.id}_secret_sim",
            "confirmation_method": "automatic",
            "created": pi.created,
            "currency": pi.currency,
            "customer": pi.customer,
            "description": pi.description,
            "last_payment_error": dict(pi.last_error) if pi.last_error else None,
            "latest_charge": pi.latest_charge,
            "livemode": self.livemode,
            "metadata": dict(pi.metadata),
            "next_action": None,
            "on_behalf_of": None,
            "payment_method": pi.payment_method,
            "payment_method_configuration_details": None,
            "payment_method_options": {},
            "payment_method_types": ["card"],
            "processing": None,
            "receipt_email": None,
            "review": None,
            "setup_future_usage": None,
            "shipping": None,
            "source": None,
            "statement_descriptor": None,
            "statement_descriptor_suffix": None,
            "status": status,
            "transfer_data": None,
            "transfer_group": None,
        }
        if not self.basil:
            out["invoice"] = pi.invoice
        return out

    # -- charge --------------------------------------------------------------------
    def charge(self, ch: Charge, refunds: list[Refund], *, with_refunds: bool = False) -> JSON:
        refunded = sum(r.amount for r in refunds if r.counts)
        failed = ch.status == "failed"
        out: JSON = {
            "id": ch.id,
            "object": "charge",
            "amount": ch.amount,
            "amount_captured": 0 if failed else ch.amount,
            "amount_refunded": refunded,
            "application": None,
            "application_fee": None,
            "application_fee_amount": None,
            "balance_transaction": ch.balance_transaction,
            "billing_details": {
                "address": {
                    "city": None,
                    "country": None,
                    "line1": None,
                    "line2": None,
                    "postal_code": None,
                    "state": None,
                },
                "email": None,
                "name": None,
                "phone": None,
            },
            "calculated_statement_descriptor": "SUBSYNC SIMULATOR",
            "captured": not failed,
            "created": ch.created,
            "currency": ch.currency,
            "customer": ch.customer,
            "description": ch.description,
            "destination": None,
            "disputed": ch.dispute is not None,
            "failure_balance_transaction": None,
            "failure_code": ch.failure_code,
            "failure_message": ch.failure_message,
            "fraud_details": {},
            "livemode": self.livemode,
            "metadata": dict(ch.metadata),
            "on_behalf_of": None,
            "outcome": self._outcome(ch),
            "paid": ch.status == "succeeded",
            "payment_intent": ch.payment_intent,
            "payment_method": ch.payment_method,
            "payment_method_details": {
                "card": {
                    "brand": "visa",
                    "checks": {"address_line1_check": None, "address_postal_code_check": None, "cvc_check": "pass"},
                    "country": "US",
                    "exp_month": 12,
                    "exp_year": 2034,
                    "fingerprint": "simCardFp0000000",
                    "funding": "credit",
                    "last4": "0002" if failed else "4242",
                    "network": "visa",
                    "three_d_secure": None,
                    "wallet": None,
                },
                "type": "card",
            },
            "receipt_email": None,
            "receipt_number": None,
            "receipt_url": None if failed else f"https://pay.stripe.com/receipts/sim/{ch.id}",
            "refunded": refunded >= ch.amount and refunded > 0,
            "review": None,
            "shipping": None,
            "source_transfer": None,
            "statement_descriptor": None,
            "statement_descriptor_suffix": None,
            "status": ch.status,
            "transfer_data": None,
            "transfer_group": None,
        }
        if not self.basil:
            out["invoice"] = ch.invoice
        if self.refunds_in_charge or with_refunds:
            out["refunds"] = {
                "object": "list",
                "data": [self.refund(r) for r in reversed(refunds)],
                "has_more": False,
                "total_count": len(refunds),
                "url": f"/v1/charges/{ch.id}/refunds",
            }
        return out

    @staticmethod
    def _outcome(ch: Charge) -> JSON | None:
        if ch.status == "pending":
            return None
        if ch.status == "failed":
            return {
                "advice_code": "try_again_later",
                "network_advice_code": None,
                "network_decline_code": None,
                "network_status": "declined_by_network",
                "reason": "generic_decline",
                "risk_level": "normal",
                "risk_score": 20,
                "seller_message": "The bank did not return any further details with this decline.",
                "type": "issuer_declined",
            }
        return {
            "advice_code": None,
            "network_advice_code": None,
            "network_decline_code": None,
            "network_status": "approved_by_network",
            "reason": None,
            "risk_level": "normal",
            "risk_score": 20,
            "seller_message": "Payment complete.",
            "type": "authorized",
        }

    # -- refund --------------------------------------------------------------------
    def refund(self, re: Refund) -> JSON:
        out: JSON = {
            "id": re.id,
            "object": "refund",
            "amount": re.amount,
            "balance_transaction": re.balance_transaction,
            "charge": re.charge,
            "created": re.created,
            "currency": re.currency,
            "destination_details": {
                "card": {
                    "reference": None,
                    "reference_status": "available" if re.status == "succeeded" else "pending",
                    "reference_type": "acquirer_reference_number",
                    "type": "refund",
                },
                "type": "card",
            },
            "metadata": dict(re.metadata),
            "payment_intent": re.payment_intent,
            "reason": re.reason,
            "receipt_number": None,
            "source_transfer_reversal": None,
            "status": re.status,
            "transfer_reversal": None,
        }
        if re.status == "failed":
            out["failure_balance_transaction"] = re.failure_balance_transaction
            out["failure_reason"] = re.failure_reason
        return out

    # -- dispute -------------------------------------------------------------------
    def balance_move(self, mv: BalanceMove, source: str, now: int) -> JSON:
        fee_details: list[JSON] = []
        if mv.fee:
            fee_details.append(
                {
                    "amount": mv.fee,
                    "application": None,
                    "currency": mv.currency,
                    "description": "Dispute fee",
                    "type": "stripe_fee",
                }
            )
        available_on = mv.created + 7 * 86400
        return {
            "id": mv.id,
            "object": "balance_transaction",
            "amount": mv.amount,
            "available_on": available_on,
            "balance_type": "payments",
            "created": mv.created,
            "currency": mv.currency,
            "description": mv.description,
            "exchange_rate": None,
            "fee": mv.fee,
            "fee_details": fee_details,
            "net": mv.amount - mv.fee,
            "reporting_category": mv.reporting_category,
            "source": source,
            "status": "available" if now >= available_on else "pending",
            "type": "adjustment",
        }

    def dispute(self, du: Dispute, now: int) -> JSON:
        evidence: dict[str, Any] = dict.fromkeys(EVIDENCE_FIELDS)
        evidence.update(du.evidence)
        evidence["enhanced_evidence"] = {}
        open_ = du.status in ("warning_needs_response", "needs_response")
        return {
            "id": du.id,
            "object": "dispute",
            "amount": du.amount,
            "balance_transactions": [self.balance_move(mv, du.id, now) for mv in du.moves],
            "charge": du.charge,
            "created": du.created,
            "currency": du.currency,
            "enhanced_eligibility_types": [],
            "evidence": evidence,
            "evidence_details": {
                "due_by": du.due_by if open_ else None,
                "enhanced_eligibility": {},
                "has_evidence": bool(du.evidence),
                "past_due": open_ and now > du.due_by,
                "submission_count": du.submission_count,
            },
            "is_charge_refundable": du.inquiry and open_,
            "livemode": self.livemode,
            "metadata": dict(du.metadata),
            "network_reason_code": "10.4" if du.reason == "fraudulent" else "13.1",
            "payment_intent": du.payment_intent,
            "payment_method_details": {
                "card": {
                    "brand": "visa",
                    "case_type": "inquiry" if du.inquiry else "chargeback",
                    "network_reason_code": "10.4" if du.reason == "fraudulent" else "13.1",
                },
                "type": "card",
            },
            "reason": du.reason,
            "status": du.status,
        }

    # -- invoice payment -----------------------------------------------------------
    def invoice_payment(self, ip: InvoicePayment, status: str, canceled_at: int | None) -> JSON:
        return {
            "id": ip.id,
            "object": "invoice_payment",
            "amount_paid": ip.amount_paid,
            "amount_requested": ip.amount_requested,
            "created": ip.created,
            "currency": ip.currency,
            "invoice": ip.invoice,
            "is_default": True,
            "livemode": self.livemode,
            "payment": {"payment_intent": ip.payment_intent, "type": "payment_intent"},
            "status": status,
            "status_transitions": {"canceled_at": canceled_at, "paid_at": ip.paid_at},
        }
