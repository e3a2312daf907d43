"""The demo storefront page at /demo/: served, self-contained, and talking to the real API."""

import re
from html.parser import HTMLParser

import pytest

# Anything that would make the browser fetch from another host: the demo must work offline.
EXTERNAL = re.compile(
    r"""(?:\b(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//)"""
    r"""|(?:url\(\s*["']?\s*(?:https?:)?//)"""
    r"""|(?:@import)""",
    re.IGNORECASE,
)


class Elements(HTMLParser):
    """Collects element ids, script tags and stylesheet links of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.scripts: list[dict[str, str | None]] = []
        self.links: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if attributes.get("id"):
            self.ids.add(str(attributes["id"]))
        if tag == "script":
            self.scripts.append(attributes)
        elif tag == "link":
            self.links.append(attributes)


async def demo_page(client) -> str:
    response = await client.get("/demo/")
    assert response.status == 200
    assert response.content_type == "text/html"
    return await response.text()


async def test_the_page_is_served_as_html(gateway):
    client = await gateway()
    html = await demo_page(client)
    assert html.lstrip().lower().startswith("<!doctype html>")
    assert "<title>" in html


@pytest.mark.parametrize("path", ["/", "/demo"])
async def test_root_and_bare_demo_redirect_to_the_page(gateway, path):
    client = await gateway()
    response = await client.get(path, allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == "/demo/"
    followed = await client.get(path)
    assert followed.status == 200
    assert str(followed.url).endswith("/demo/")


async def test_the_page_calls_the_decide_and_blocks_endpoints(gateway):
    client = await gateway()
    html = await demo_page(client)
    assert "/v1/decide" in html
    assert "/v1/blocks/" in html
    assert "esi:include" in html
    assert "application/json" in html


async def test_the_page_loads_nothing_from_other_hosts(gateway):
    client = await gateway()
    html = await demo_page(client)
    assert 'src="http' not in html and "src='http" not in html
    assert 'href="http' not in html and "href='http" not in html
    assert EXTERNAL.findall(html) == []
    page = Elements()
    page.feed(html)
    assert page.scripts, "the page script is inline"
    assert all(not script.get("src") for script in page.scripts)
    assert all((link.get("rel") or "").lower() != "stylesheet" for link in page.links)


async def test_every_element_the_script_looks_up_exists(gateway):
    client = await gateway()
    html = await demo_page(client)
    page = Elements()
    page.feed(html)
    looked_up = set(re.findall(r"""\$\("([A-Za-z0-9_-]+)"\)""", html))
    looked_up |= set(re.findall(r"""getElementById\("([A-Za-z0-9_-]+)"\)""", html))
    assert looked_up, "the script finds its elements by id"
    assert looked_up <= page.ids, f"missing elements: {sorted(looked_up - page.ids)}"


async def test_the_requests_the_page_sends_are_accepted(gateway, visitor_id):
    """The product picker's request and a product visit, as the page's script builds them."""
    client = await gateway()
    catalog = await client.post(
        "/v1/decide",
        json={
            "visitor_id": f"demo-catalog-{visitor_id}",
            "slots": [
                {"id": "catalog", "kind": "recommendations", "strategy": "popular", "limit": 48}
            ],
        },
    )
    assert catalog.status == 200
    products = (await catalog.json())["blocks"][0]["items"]
    assert len(products) == 48
    first = products[0]["product_id"]
    visit = await client.post(
        "/v1/decide",
        json={
            "visitor_id": visitor_id,
            "session_id": "s-0123456789ab",
            "context": {
                "page": {"type": "product", "product_id": first, "url": "http://x/demo/product"},
                "channel": "web",
                "device": "desktop",
                "locale": "en-GB",
                "cart": {
                    "items": [
                        {"product_id": products[1]["product_id"], "quantity": 2, "price": 1.5}
                    ]
                },
            },
            "slots": [
                {"id": "pdp-similar", "kind": "recommendations", "limit": 8},
                {"id": "hero", "kind": "offer"},
            ],
            "explain": True,
        },
    )
    assert visit.status == 200
    body = await visit.json()
    recs, hero = body["blocks"]
    assert 'class="jg-block jg-recommendations"' in recs["html"]
    assert recs["html"].count('class="jg-item"') == 8
    assert 'class="jg-block jg-offer"' in hero["html"]
    assert body["explain"]["calls"]
    fragment = await client.get(
        "/v1/blocks/pdp-similar",
        params={
            "visitor_id": visitor_id,
            "kind": "recommendations",
            "limit": "8",
            "page_type": "product",
            "product_id": first,
            "cart": products[1]["product_id"],
        },
    )
    assert fragment.status == 200
    assert "Cache-Control" in fragment.headers


async def test_no_demo_page_when_disabled(gateway):
    client = await gateway(server={"demo": False})
    for path in ("/demo/", "/demo", "/"):
        response = await client.get(path, allow_redirects=False)
        assert response.status == 404, path
        assert response.content_type == "application/json"
        error = (await response.json())["error"]
        assert error["code"] == "not_found"
        assert path in error["message"]
