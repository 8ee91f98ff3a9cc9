"""Prices and their products; the built-in catalogue is made in ``SimCore.__init__``."""

from __future__ import annotations

from .core import DEFAULT_PRODUCT, SimCore, operation
from .model import Price, Product, SimError
from .shapes import JSON


class CatalogMixin(SimCore):
    """Recurring prices and their products."""

    @operation
    def create_price(
        self,
        *,
        unit_amount: int,
        interval: str = "month",
        interval_count: int = 1,
        currency: str = "usd",
        id: str | None = None,
        product: str | None = None,
        product_name: str | None = None,
        nickname: str | None = None,
        account: str | None = None,
    ) -> JSON:
        """A recurring price (``day``/``week`` intervals make fast demo cycles), in ``account``'s catalogue."""
        self._use(account)
        if interval not in ("day", "week", "month", "year"):
            raise SimError("Invalid interval", param="recurring[interval]")
        now = self.clock.now()
        if product is None:
            product = DEFAULT_PRODUCT if product_name is None else self.ids.new("prod", 14)
        if product not in self.products:
            self.products[product] = Product(product, product_name or "Premium Plan", now)
        pid = id or self.ids.new("price")
        self.prices[pid] = Price(
            pid, product, int(unit_amount), currency.lower(), interval, int(interval_count), now, nickname
        )
        return self.render.price(self.prices[pid])
