"""Records of Entitlements: features, their attachment to products, customers' active entitlements."""

from __future__ import annotations

from dataclasses import dataclass, field

from .tables import Table


@dataclass(slots=True)
class Feature:
    id: str
    lookup_key: str
    name: str
    created: int  # not shown (Stripe's feature has none); orders the list
    active: bool = True
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class ProductFeature:
    id: str
    product: str
    feature: str
    created: int
    detached: int | None = None  # when detached (the product no longer has it; the id answers 404)


@dataclass(slots=True)
class ActiveEntitlement:
    id: str
    customer: str
    feature: str
    lookup_key: str
    created: int


@dataclass(eq=False)
class EntitlementsBook:
    """One account's features, their attachment to products and customers' entitlements.

    ``granted`` holds, per subscription item, the features its product had
    when the item's current period started (``(that start, feature ids)``):
    Stripe applies a product's feature changes to existing subscriptions from
    their next period on.
    """

    features: Table[Feature] = field(default_factory=Table)
    product_features: Table[ProductFeature] = field(default_factory=Table)
    attached: dict[str, list[str]] = field(default_factory=dict)  # product -> product feature ids, oldest first
    granted: dict[str, tuple[int, tuple[str, ...]]] = field(default_factory=dict)
    entitlements: Table[ActiveEntitlement] = field(default_factory=Table)  # every one ever made
    active: dict[str, dict[str, str]] = field(default_factory=dict)  # customer -> feature -> entitlement id

    def product_features_of(self, product: str) -> list[ProductFeature]:
        """The product's features now, oldest attachment first."""
        return [pf for i in self.attached.get(product, []) if (pf := self.product_features.rows[i]).detached is None]
