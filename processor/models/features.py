"""Transaction features: what the anomaly scorer sees of a transaction.

Numbers computed from the event (amount and log amount, hour of day, weekend,
customer-merchant distance, customer age, city size), the producer's numeric ``attributes``,
the merchant category one-hot, and the merchant text's embedding reduced by PCA to a few
dimensions. Which of these a model uses is decided at training time (a feature constant in the
history is dropped) and written to its manifest, so scoring builds exactly the columns the
model was fitted on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from schemas import TransactionV1

BASE_FEATURES = (
    "amount",
    "log_amount",
    "hour_sin",
    "hour_cos",
    "weekend",
    "distance_km",
    "customer_age",
    "log_city_population",
)
TEXT_GROUP = "merchant_text"
# Columns that carry one quantity are explained together: zeroing one alone explains nothing.
BASE_GROUPS = {"log_amount": "amount", "hour_sin": "hour", "hour_cos": "hour"}
CATEGORY_GROUP = "category"


def merchant_text(event: TransactionV1) -> str:
    """The text embedded for a transaction: merchant name and category."""
    merchant = event.merchant
    return f"{merchant.name} ({merchant.category})" if merchant.category else merchant.name


def _haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0 * math.asin(min(1.0, math.sqrt(a)))


def base_row(event: TransactionV1) -> list[float]:
    """The BASE_FEATURES of one event, in order; a missing input gives 0."""
    hour = event.occurred_at.hour + event.occurred_at.minute / 60
    customer, merchant = event.customer, event.merchant
    distance = 0.0
    if customer and None not in (customer.lat, customer.lon, merchant.lat, merchant.lon):
        distance = _haversine_km(customer.lat, customer.lon, merchant.lat, merchant.lon)
    age = 0.0
    if customer and customer.birth_year:
        age = float(event.occurred_at.year - customer.birth_year)
    population = customer.city_population if customer and customer.city_population else 0
    return [
        abs(float(event.amount)),  # heavy-tailed where the log is flat: extreme amounts stand out
        math.log1p(abs(float(event.amount))),
        math.sin(2 * math.pi * hour / 24),
        math.cos(2 * math.pi * hour / 24),
        1.0 if event.occurred_at.weekday() >= 5 else 0.0,
        distance,
        age,
        math.log1p(population),
    ]


@dataclass
class FeatureSpec:
    """The columns a model was trained on, in order, and how they group for explanations."""

    base: list[str]
    attributes: list[str]
    categories: list[str]
    text_dims: int
    names: list[str] = field(init=False)
    groups: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.names = (
            list(self.base)
            + [f"attr:{a}" for a in self.attributes]
            + [f"category={c}" for c in self.categories]
            + [f"{TEXT_GROUP}:{i}" for i in range(self.text_dims)]
        )
        self.groups = (
            [BASE_GROUPS.get(b, b) for b in self.base]
            + list(self.attributes)
            + [CATEGORY_GROUP] * len(self.categories)
            + [TEXT_GROUP] * self.text_dims
        )

    def to_json(self) -> dict:
        return {
            "base": self.base,
            "attributes": self.attributes,
            "categories": self.categories,
            "text_dims": self.text_dims,
            "names": self.names,
        }

    @classmethod
    def from_json(cls, data: dict) -> FeatureSpec:
        return cls(data["base"], data["attributes"], data["categories"], data["text_dims"])


def tabular(events: Sequence[TransactionV1], spec: FeatureSpec) -> np.ndarray:
    """Every column but the text embedding, as float32 (n, len(names) - text_dims)."""
    base_index = [BASE_FEATURES.index(b) for b in spec.base]
    cat_index = {c: i for i, c in enumerate(spec.categories)}
    width = len(spec.base) + len(spec.attributes) + len(spec.categories)
    out = np.zeros((len(events), width), dtype=np.float32)
    n_base, n_attr = len(spec.base), len(spec.attributes)
    for row, event in enumerate(events):
        values = base_row(event)
        out[row, :n_base] = [values[i] for i in base_index]
        for j, name in enumerate(spec.attributes):
            out[row, n_base + j] = event.attributes.get(name, 0.0)
        category = event.merchant.category
        if category in cat_index:
            out[row, n_base + n_attr + cat_index[category]] = 1.0
    return out


def discover_spec(events: Sequence[TransactionV1], text_dims: int) -> FeatureSpec:
    """Choose the columns from history: features that vary, categories seen, attributes seen."""
    base = np.asarray([base_row(e) for e in events], dtype=np.float64)
    varying = [name for i, name in enumerate(BASE_FEATURES) if np.ptp(base[:, i]) > 0]
    attributes = sorted({name for e in events for name in e.attributes})
    categories = sorted({e.merchant.category for e in events if e.merchant.category})
    return FeatureSpec(varying, attributes, categories, text_dims)
