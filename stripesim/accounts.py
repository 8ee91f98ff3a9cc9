"""Connected accounts (Connect): creating them, reading them, and a platform losing access to one.

Each connected account owns a ledger (``ledger.py``): its own catalogue,
customers, subscriptions, invoices, sessions and events. API requests reach
it with the ``Stripe-Account`` header, operations with ``account=``. Its
events carry ``"account": "acct_..."`` and go to the same webhook endpoints
(each endpoint acts as a Connect endpoint too), signed with the same secret.
"""

from __future__ import annotations

from .core import SimCore, no_access, operation
from .ledger import Ledger, new_ledger
from .listing import check_limit, paginate, position_of
from .model import Account, SimError
from .shapes import JSON

ACCOUNT_TYPES = ("standard", "express", "custom")
PLATFORM_NAME = "subsync simulator"


def render_account(acct: Account) -> JSON:
    """An account as ``GET /v1/accounts/{id}`` shows it: onboarded, charges and payouts enabled."""
    return {
        "id": acct.id,
        "object": "account",
        "business_profile": {
            "mcc": None,
            "name": acct.business_name,
            "product_description": None,
            "support_email": None,
            "support_phone": None,
            "support_url": None,
            "url": None,
        },
        "business_type": None,
        "capabilities": {"card_payments": "active", "transfers": "active"},
        "charges_enabled": True,
        "controller": (
            {"type": "account"} if acct.type == "standard" else {"is_controller": True, "type": "application"}
        ),
        "country": acct.country,
        "created": acct.created,
        "default_currency": "usd",
        "details_submitted": True,
        "email": acct.email,
        "external_accounts": {
            "object": "list",
            "data": [],
            "has_more": False,
            "total_count": 0,
            "url": f"/v1/accounts/{acct.id}/external_accounts",
        },
        "metadata": dict(acct.metadata),
        "payouts_enabled": True,
        "requirements": {
            "alternatives": [],
            "current_deadline": None,
            "currently_due": [],
            "disabled_reason": None,
            "errors": [],
            "eventually_due": [],
            "past_due": [],
            "pending_verification": [],
        },
        "settings": {"dashboard": {"display_name": acct.business_name, "timezone": "Etc/UTC"}},
        "tos_acceptance": {"date": None},
        "type": acct.type,
    }


class AccountsMixin(SimCore):
    """``create_account``, ``get_account``, ``list_accounts``, ``deauthorize_account``."""

    @operation
    def create_account(
        self,
        *,
        id: str | None = None,
        type: str = "standard",
        country: str = "US",
        email: str | None = None,
        business_name: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> JSON:
        """A connected account, empty but for the built-in catalogue; no event (Stripe sends none)."""
        if type not in ACCOUNT_TYPES:
            raise SimError("type must be one of standard, express or custom", param="type")
        ident = id or self.ids.new("acct", 16)
        if not ident.startswith("acct_"):
            raise SimError("An account id starts with acct_", param="id")
        if ident in self.connected or ident == self.platform_id:
            raise SimError(f"Account {ident} already exists", code="resource_already_exists", param="id")
        acct = Account(ident, self.clock.now(), type, country.upper(), email, business_name, dict(metadata or {}))
        self.connected[ident] = new_ledger(acct, acct.created, self.default_catalog)
        return render_account(acct)

    def get_account(self, account: str | None = None) -> JSON:
        """A connected account, or the platform's own for None (``GET /v1/account``)."""
        with self.lock:
            led = self._ledger_of(account)
            return render_account(self._account_record(led))

    def _account_record(self, led: Ledger) -> Account:
        if led.account is not None:
            return led.account
        return Account(self.platform_id, self.started, "standard", "US", None, PLATFORM_NAME)

    def list_accounts(
        self,
        *,
        limit: int | None = None,
        starting_after: str | None = None,
        ending_before: str | None = None,
    ) -> JSON:
        """``GET /v1/accounts``: the platform's connected accounts, newest first (deauthorized ones left out)."""
        n = check_limit(limit)
        with self.lock:
            ids = list(self.connected)
            pos = position_of({a: i for i, a in enumerate(ids)}, "account")

            def match(ident: str) -> bool:
                acct = self.connected[ident].account
                return acct is not None and not acct.deauthorized

            page, more = paginate(ids, pos, match, n, starting_after=starting_after, ending_before=ending_before)
            return {
                "object": "list",
                "data": [render_account(self._account_record(self.connected[a])) for a in page],
                "has_more": more,
                "url": "/v1/accounts",
            }

    def account_access(self, account: str | None) -> None:
        """Raise Stripe's 403 unless the platform's key may act for ``account`` (None: the platform)."""
        with self.lock:
            led = self._ledger_of(account)
            if led.account is not None and led.account.deauthorized:
                raise no_access(self.api_key, led.account.id)

    @operation
    def deauthorize_account(self, account: str) -> JSON:
        """The account disconnects the platform: ``account.application.deauthorized`` (its last event heard).

        Its objects live on and its clock-driven changes go on, but the
        platform's key no longer reaches it (403 ``account_invalid``) and its
        later events are not delivered.
        """
        self._use(account)
        acct = self._ledger.account
        if acct is None:
            raise SimError("The platform cannot deauthorize itself", param="account")
        if acct.deauthorized:
            raise no_access(self.api_key, acct.id)
        application = {"id": self.ids.new("ca", 24), "object": "application", "name": PLATFORM_NAME}
        self._emit("account.application.deauthorized", application)
        acct.deauthorized = True
        return render_account(acct)
