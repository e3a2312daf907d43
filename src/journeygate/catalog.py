"""The product catalog: what can be shown, with titles, prices, categories and popularity.

The catalog is built from interaction data (:func:`build_catalog`) and stored as a CSV file
that every gateway process loads at startup (:func:`load_catalog`).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from journeygate.retail_data import purchases

CATALOG_FIELDS = ("product_id", "title", "price", "category", "popularity", "available")

# Online Retail has no category column; a category is derived from the words of the title.
# The first rule whose keyword occurs in the title wins, so specific rules come first.
CATEGORY_RULES: tuple[tuple[str, frozenset[str]], ...] = (
    ("Christmas", frozenset({"CHRISTMAS", "XMAS", "ADVENT", "SANTA", "REINDEER", "NATIVITY"})),
    (
        "Baking & party",
        frozenset(
            {
                "CAKE",
                "CAKES",
                "CASES",
                "CUTTERS",
                "BAKING",
                "PARTY",
                "NAPKINS",
                "BALLOONS",
                "CAKESTAND",
                "STRAWS",
                "CUPCAKE",
            }
        ),
    ),
    (
        "Candles & lighting",
        frozenset(
            {
                "CANDLE",
                "CANDLES",
                "T-LIGHT",
                "TEALIGHT",
                "LANTERN",
                "LIGHT",
                "LIGHTS",
                "NIGHTLIGHT",
                "LAMP",
            }
        ),
    ),
    (
        "Bags & storage",
        frozenset(
            {
                "BAG",
                "BAGS",
                "PURSE",
                "SHOPPER",
                "BASKET",
                "STORAGE",
                "BOX",
                "BOXES",
                "TIN",
                "TINS",
                "HAMPER",
                "CASE",
            }
        ),
    ),
    (
        "Kitchen & dining",
        frozenset(
            {
                "MUG",
                "MUGS",
                "CUP",
                "CUPS",
                "SAUCER",
                "BOWL",
                "BOWLS",
                "PLATE",
                "PLATES",
                "TEAPOT",
                "JUG",
                "BOTTLE",
                "SPOON",
                "TRAY",
                "APRON",
                "GLASS",
                "TEA",
                "COFFEE",
                "JAM",
                "LUNCH",
                "CUTLERY",
                "KITCHEN",
                "DISH",
                "TOWEL",
            }
        ),
    ),
    (
        "Stationery & cards",
        frozenset(
            {
                "CARD",
                "CARDS",
                "NOTEBOOK",
                "PENCIL",
                "PENCILS",
                "PEN",
                "WRAP",
                "STICKERS",
                "TAPE",
                "ENVELOPE",
                "CALENDAR",
                "BOOK",
                "ERASER",
                "PAPER",
                "STATIONERY",
                "TISSUES",
            }
        ),
    ),
    (
        "Toys & games",
        frozenset(
            {
                "TOY",
                "TOYS",
                "GAME",
                "GAMES",
                "DOLL",
                "JIGSAW",
                "DOMINOES",
                "PLAYHOUSE",
                "SKIPPING",
                "SPACEBOY",
                "DOLLY",
                "TEDDY",
            }
        ),
    ),
    (
        "Garden & outdoors",
        frozenset(
            {
                "GARDEN",
                "PLANT",
                "PLANTER",
                "HERB",
                "WATERING",
                "BIRD",
                "PICNIC",
                "UMBRELLA",
                "FLOWER",
            }
        ),
    ),
    (
        "Jewellery & accessories",
        frozenset(
            {
                "NECKLACE",
                "BRACELET",
                "EARRINGS",
                "RING",
                "HAIR",
                "SCARF",
                "CHARM",
                "BROOCH",
                "HANDBAG",
                "NECKL",
            }
        ),
    ),
    (
        "Home decor",
        frozenset(
            {
                "SIGN",
                "FRAME",
                "CLOCK",
                "CUSHION",
                "MIRROR",
                "DECORATION",
                "BUNTING",
                "GARLAND",
                "HEART",
                "DOORMAT",
                "HOOK",
                "HOOKS",
                "KNOB",
                "DRAWER",
                "WREATH",
                "VASE",
                "ORNAMENT",
                "HANGING",
                "HOLDER",
                "CHALKBOARD",
                "WALL",
                "DOORSTOP",
                "CABINET",
                "SHELF",
            }
        ),
    ),
)
DEFAULT_CATEGORY = "Gifts"


class CatalogError(ValueError):
    """The catalog file is missing or malformed."""


def category_for(title: str) -> str:
    """Derive a shop category from a product title by keyword rules."""
    words = set(title.upper().replace(",", " ").split())
    for category, keywords in CATEGORY_RULES:
        if words & keywords:
            return category
    return DEFAULT_CATEGORY


@dataclass(frozen=True, slots=True)
class Product:
    product_id: str
    title: str
    price: float
    category: str
    popularity: int = 0
    available: bool = True

    @property
    def text(self) -> str:
        """The text content models embed: title and category."""
        return f"{self.title}. {self.category}"


class Catalog:
    """Products by id, plus popularity rankings the fallback serves from."""

    def __init__(self, products: Iterable[Product]) -> None:
        self.products: Mapping[str, Product] = {p.product_id: p for p in products}
        ranked = sorted(
            (p for p in self.products.values() if p.available),
            key=lambda p: (-p.popularity, p.product_id),
        )
        self.popular: tuple[Product, ...] = tuple(ranked)
        by_category: dict[str, list[Product]] = {}
        for product in ranked:
            by_category.setdefault(product.category, []).append(product)
        self.popular_by_category: Mapping[str, tuple[Product, ...]] = {
            category: tuple(items) for category, items in by_category.items()
        }

    def __len__(self) -> int:
        return len(self.products)

    def __contains__(self, product_id: object) -> bool:
        return product_id in self.products

    def get(self, product_id: str | None) -> Product | None:
        return self.products.get(product_id) if product_id else None


def build_catalog(frame: pd.DataFrame) -> list[Product]:
    """One product per stock code: most common title, median price, distinct orders."""
    lines = purchases(frame).dropna(subset=["Description"])
    grouped = lines.groupby("StockCode")
    titles = grouped["Description"].agg(lambda s: s.value_counts().index[0])
    prices = grouped["UnitPrice"].median()
    orders = grouped["InvoiceNo"].nunique()
    products = []
    for code, raw_title in titles.items():
        title = " ".join(str(raw_title).split()).title()
        products.append(
            Product(
                product_id=str(code),
                title=title,
                price=round(float(prices[code]), 2),
                category=category_for(title),
                popularity=int(orders[code]),
            )
        )
    return sorted(products, key=lambda p: p.product_id)


def write_catalog(products: Iterable[Product], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CATALOG_FIELDS)
        for p in products:
            writer.writerow(
                [p.product_id, p.title, p.price, p.category, p.popularity, int(p.available)]
            )


def load_catalog(path: str | Path) -> Catalog:
    """Read a catalog CSV; a bad row fails with its line number."""
    path = Path(path)
    if not path.exists():
        raise CatalogError(f"catalog file not found: {path} (run `journeygate prepare`)")
    products = []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [f for f in CATALOG_FIELDS[:4] if f not in (reader.fieldnames or ())]
        if missing:
            raise CatalogError(f"{path}: missing column {missing[0]!r}")
        for line, row in enumerate(reader, start=2):
            try:
                price = float(row["price"])
                if not math.isfinite(price) or price < 0:
                    raise ValueError("price must be a non-negative number")
                products.append(
                    Product(
                        product_id=row["product_id"],
                        title=row["title"],
                        price=price,
                        category=row["category"] or DEFAULT_CATEGORY,
                        popularity=int(row.get("popularity") or 0),
                        available=(row.get("available") or "1") not in {"0", "false"},
                    )
                )
            except (TypeError, ValueError) as exc:
                raise CatalogError(f"{path}:{line}: {exc}") from None
    return Catalog(products)


def build_catalog_file(interactions: str | Path, out: str | Path) -> Catalog:
    """Build and write the catalog from an Online Retail interactions file."""
    from journeygate.retail_data import read_online_retail

    products = build_catalog(read_online_retail(interactions))
    write_catalog(products, out)
    return Catalog(products)
