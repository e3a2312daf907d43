import pytest

from journeygate.catalog import CatalogError, category_for, load_catalog


def test_catalog_from_sample_has_real_products(catalog_path):
    catalog = load_catalog(catalog_path)
    assert len(catalog) > 3000
    heart = catalog.get("85123A")
    assert heart is not None
    assert heart.title == "White Hanging Heart T-Light Holder"
    assert heart.price == pytest.approx(2.95)
    # Bookkeeping codes (postage, manual adjustments) are not products.
    assert catalog.get("POST") is None and catalog.get("M") is None
    popularity = [p.popularity for p in catalog.popular]
    assert popularity == sorted(popularity, reverse=True)
    assert catalog.popular[0].product_id == "85123A"


def test_popular_by_category_only_holds_that_category(catalog_path):
    catalog = load_catalog(catalog_path)
    for category, products in catalog.popular_by_category.items():
        assert {p.category for p in products} == {category}


@pytest.mark.parametrize(
    ("title", "category"),
    [
        ("White Hanging Heart T-Light Holder", "Candles & lighting"),
        ("Jumbo Bag Red Retrospot", "Bags & storage"),
        ("Paper Chain Kit 50'S Christmas", "Christmas"),
        ("Regency Cakestand 3 Tier", "Baking & party"),
        ("Something Nobody Sells", "Gifts"),
    ],
)
def test_category_rules(title, category):
    assert category_for(title) == category


def test_bad_catalog_row_names_the_line(tmp_path):
    path = tmp_path / "catalog.csv"
    path.write_text("product_id,title,price,category\n1,A,1.0,X\n2,B,cheap,X\n", encoding="utf-8")
    with pytest.raises(CatalogError, match=r"catalog.csv:3"):
        load_catalog(path)


def test_missing_catalog_says_how_to_build_it(tmp_path):
    with pytest.raises(CatalogError, match="journeygate prepare"):
        load_catalog(tmp_path / "nope.csv")
