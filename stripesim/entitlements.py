"""Entitlements: features, attached to products, and the active entitlements customers get from them.

A customer is entitled to the features of the products on the items of its
subscriptions from the moment one starts (``trialing`` or ``active``) until
it ends (``canceled``, ``incomplete_expired``): a ``past_due``, ``unpaid`` or
``paused`` subscription keeps them, an ``incomplete`` one grants nothing yet.
Whenever that set changes (a subscription starts or ends, an item is added
or removed, a period starts with the product's features changed), the
customer gets ``entitlements.active_entitlement_summary.updated``: the
summary lists the first 10 entitlements (``has_more`` when there are more;
``GET /v1/entitlements/active_entitlements`` pages through all of them).

Attaching a feature to a product, or detaching it, changes what new
subscriptions (and new items) get at once, and existing ones from their
next period on, as Stripe documents. Features have no events of their own.
"""

from __future__ import annotations

from .core import SimCore, operation
from .entitlements_model import ActiveEntitlement, EntitlementsBook, Feature, ProductFeature
from .model import SimError, SubItem, missing
from .shapes import JSON
from .tables import list_page

GRANTING_STATUSES = ("trialing", "active", "past_due", "unpaid", "paused")
SUMMARY_LIMIT = 10
SUMMARY_EVENT = "entitlements.active_entitlement_summary.updated"


class EntitlementsMixin(SimCore):
    """Features, product features, active entitlements and the summary event."""

    @property
    def _ent(self) -> EntitlementsBook:
        return self._ledger.entitlements

    def _test_prefix(self, prefix: str) -> str:
        return prefix if self.livemode else f"{prefix}_test"

    # ------------------------------------------------------------------ events
    def _emit(self, type_: str, obj: JSON, previous: JSON | None = None) -> JSON | None:
        event = super()._emit(type_, obj, previous)
        if event is not None and type_.startswith("customer.subscription.") and self._ent.attached:
            self._refresh_entitlements(str(obj["customer"]))
        return event

    def _item_features(self, it: SubItem) -> tuple[str, ...]:
        """The features the item grants: its product's when its current period started."""
        book = self._ent
        start = max(it.current_period_start, it.created)
        snap = book.granted.get(it.id)
        if snap is None or snap[0] != start:
            price = self.prices.get(it.price)
            feats = tuple(pf.feature for pf in book.product_features_of(price.product)) if price else ()
            book.granted[it.id] = snap = (start, feats)
        return snap[1]

    def _freeze(self, product: str) -> None:
        """Before the product's features change: what its items grant in their current periods stays."""
        for sub in self.subscriptions.values():
            if sub.status in ("canceled", "incomplete_expired"):
                continue
            for it in sub.items:
                price = self.prices.get(it.price)
                if price is not None and price.product == product:
                    self._item_features(it)

    def _refresh_entitlements(self, customer: str) -> None:
        """Recompute the customer's entitlements; when they changed, the summary event."""
        book = self._ent
        wanted: dict[str, None] = {}
        for sid in self._subs_by_customer.get(customer, []):
            sub = self.subscriptions[sid]
            if sub.status in GRANTING_STATUSES:
                for it in sub.items:
                    wanted.update(dict.fromkeys(self._item_features(it)))
        current = book.active.get(customer, {})
        if set(wanted) == set(current):
            return
        before = self._summary(customer)
        kept = {f: e for f, e in current.items() if f in wanted}
        for feat in wanted:
            if feat not in kept:
                ent = ActiveEntitlement(
                    self.ids.new(self._test_prefix("ent"), 32),
                    customer,
                    feat,
                    book.features.rows[feat].lookup_key,
                    self.clock.now(),
                )
                book.entitlements.add(ent)
                kept[feat] = ent.id
        book.active[customer] = kept
        self._emit(SUMMARY_EVENT, self._summary(customer), {"entitlements": before["entitlements"]})

    # --------------------------------------------------------------- rendering
    def _feature_json(self, feat: Feature) -> JSON:
        return {
            "id": feat.id,
            "object": "entitlements.feature",
            "active": feat.active,
            "livemode": self.livemode,
            "lookup_key": feat.lookup_key,
            "metadata": dict(feat.metadata),
            "name": feat.name,
        }

    def _product_feature_json(self, pf: ProductFeature) -> JSON:
        return {
            "id": pf.id,
            "object": "product_feature",
            "entitlement_feature": self._feature_json(self._ent.features.rows[pf.feature]),
            "livemode": self.livemode,
        }

    def _entitlement_json(self, ent: ActiveEntitlement) -> JSON:
        return {
            "id": ent.id,
            "object": "entitlements.active_entitlement",
            "feature": ent.feature,
            "livemode": self.livemode,
            "lookup_key": ent.lookup_key,
        }

    def _active_ids(self, customer: str) -> list[str]:
        """The customer's active entitlements, oldest first."""
        return list(self._ent.active.get(customer, {}).values())

    def _summary(self, customer: str) -> JSON:
        ids = self._active_ids(customer)
        rows = self._ent.entitlements.rows
        return {
            "object": "entitlements.active_entitlement_summary",
            "customer": customer,
            "entitlements": {
                "object": "list",
                "data": [self._entitlement_json(rows[i]) for i in reversed(ids[-SUMMARY_LIMIT:])],
                "has_more": len(ids) > SUMMARY_LIMIT,
                "url": f"/v1/customer/{customer}/entitlements",
            },
            "livemode": self.livemode,
        }

    # -------------------------------------------------------------- operations
    def _feature(self, ident: str, param: str = "id") -> Feature:
        feat = self._ent.features.get(ident)
        if feat is None:
            raise missing("entitlements.feature", ident, param)
        return feat

    @operation
    def create_feature(
        self,
        lookup_key: str,
        name: str,
        *,
        metadata: dict[str, str] | None = None,
        account: str | None = None,
    ) -> JSON:
        """A feature (``feat_…``); ``lookup_key`` is unique among active features. No event, as Stripe."""
        self._use(account)
        for param, value in (("lookup_key", lookup_key), ("name", name)):
            if not value:
                raise SimError(f"Missing required param: {param}.", code="parameter_missing", param=param)
            if len(value) > 80:
                raise SimError(f"Invalid {param}: must be at most 80 characters", param=param)
        if any(f.active and f.lookup_key == lookup_key for f in self._ent.features):
            raise SimError(
                f"A feature with lookup_key '{lookup_key}' already exists.",
                code="resource_already_exists",
                param="lookup_key",
            )
        feat = Feature(
            self.ids.new(self._test_prefix("feat"), 32),
            lookup_key,
            name,
            self.clock.now(),
            metadata=dict(metadata or {}),
        )
        self._ent.features.add(feat)
        return self._feature_json(feat)

    @operation
    def update_feature(
        self,
        feature: str,
        *,
        name: str | None = None,
        metadata: dict[str, str] | None = None,
        active: bool | None = None,
        account: str | None = None,
    ) -> JSON:
        """Rename, change metadata, or archive (``active=False``: no longer listed or attachable)."""
        self._use(account)
        feat = self._feature(feature, "feature")
        if not feat.active:
            raise SimError(f"Feature {feat.id} is archived and cannot be updated.", param="feature")
        if name:
            feat.name = name
        for key, value in (metadata or {}).items():
            if value in (None, ""):
                feat.metadata.pop(key, None)
            else:
                feat.metadata[key] = str(value)
        if active is not None:
            feat.active = bool(active)
        return self._feature_json(feat)

    @operation
    def attach_feature(self, product: str, feature: str, *, account: str | None = None) -> JSON:
        """``POST /v1/products/{product}/features``: the product grants the feature (existing subscriptions
        from their next period on)."""
        self._use(account)
        self._product(product)
        feat = self._feature(feature, "entitlement_feature")
        if not feat.active:
            raise SimError(f"Feature {feat.id} is archived and cannot be attached.", param="entitlement_feature")
        if any(pf.feature == feat.id for pf in self._ent.product_features_of(product)):
            raise SimError(
                f"Feature {feat.id} is already attached to product {product}.",
                code="resource_already_exists",
                param="entitlement_feature",
            )
        self._freeze(product)
        pf = ProductFeature(self.ids.new("prodft"), product, feat.id, self.clock.now())
        self._ent.product_features.add(pf)
        self._ent.attached.setdefault(product, []).append(pf.id)
        return self._product_feature_json(pf)

    @operation
    def detach_feature(self, product: str, feature: str, *, account: str | None = None) -> JSON:
        """``DELETE /v1/products/{product}/features/{id}``: ``feature`` is the product feature (``prodft_…``) or
        the feature (``feat_…``)."""
        self._use(account)
        self._product(product)
        pf = next(
            (p for p in self._ent.product_features_of(product) if feature in (p.id, p.feature)),
            None,
        )
        if pf is None:
            raise missing("product_feature", feature, "id")
        self._freeze(product)
        pf.detached = self.clock.now()
        return {"id": pf.id, "object": "product_feature", "deleted": True}

    # ----------------------------------------------------------------- reading
    def get_feature(self, ident: str, *, account: str | None = None) -> JSON:
        with self._acting(account):
            return self._feature_json(self._feature(ident))

    def list_features(
        self,
        *,
        lookup_key: str | None = None,
        archived: bool | None = None,
        limit: int | None = None,
        starting_after: str | None = None,
        ending_before: str | None = None,
        account: str | None = None,
    ) -> JSON:
        """``GET /v1/entitlements/features``: active ones unless ``archived``, newest first."""
        with self._acting(account):
            return list_page(
                self._ent.features,
                kind="entitlements.feature",
                url="/v1/entitlements/features",
                render=self._feature_json,
                match=lambda f: f.active != bool(archived) and (lookup_key is None or f.lookup_key == lookup_key),
                limit=limit,
                starting_after=starting_after,
                ending_before=ending_before,
            )

    def _product_feature(self, product: str, ident: str) -> ProductFeature:
        self._product(product)
        pf = self._ent.product_features.get(ident)
        if pf is None or pf.product != product or pf.detached is not None:
            raise missing("product_feature", ident, "id")
        return pf

    def get_product_feature(self, product: str, ident: str, *, account: str | None = None) -> JSON:
        with self._acting(account):
            return self._product_feature_json(self._product_feature(product, ident))

    def list_product_features(
        self,
        product: str,
        *,
        limit: int | None = None,
        starting_after: str | None = None,
        ending_before: str | None = None,
        account: str | None = None,
    ) -> JSON:
        with self._acting(account):
            self._product(product)
            return list_page(
                self._ent.product_features,
                kind="product_feature",
                url=f"/v1/products/{product}/features",
                render=self._product_feature_json,
                ids=[pf.id for pf in self._ent.product_features_of(product)],
                limit=limit,
                starting_after=starting_after,
                ending_before=ending_before,
            )

    def list_active_entitlements(
        self,
        customer: str,
        *,
        limit: int | None = None,
        starting_after: str | None = None,
        ending_before: str | None = None,
        account: str | None = None,
    ) -> JSON:
        """``GET /v1/entitlements/active_entitlements?customer=``: newest first, as the summary lists them."""
        with self._acting(account):
            self._customer(customer)
            return list_page(
                self._ent.entitlements,
                kind="entitlements.active_entitlement",
                url="/v1/entitlements/active_entitlements",
                render=self._entitlement_json,
                ids=self._active_ids(customer),
                limit=limit,
                starting_after=starting_after,
                ending_before=ending_before,
            )

    def get_active_entitlement(self, ident: str, *, account: str | None = None) -> JSON:
        with self._acting(account):
            ent = self._ent.entitlements.get(ident)
            if ent is None or self._ent.active.get(ent.customer, {}).get(ent.feature) != ent.id:
                raise missing("entitlements.active_entitlement", ident, "id")
            return self._entitlement_json(ent)

    def active_entitlement_summary(self, customer: str, *, account: str | None = None) -> JSON:
        """The summary the last ``entitlements.active_entitlement_summary.updated`` showed (first 10)."""
        with self._acting(account):
            self._customer(customer)
            return self._summary(customer)

    def entitled_lookup_keys(self, customer: str, *, account: str | None = None) -> list[str]:
        """Every active entitlement's ``lookup_key`` (all of them, not only the summary's 10), sorted."""
        with self._acting(account):
            rows = self._ent.entitlements.rows
            return sorted(rows[i].lookup_key for i in self._active_ids(customer))
