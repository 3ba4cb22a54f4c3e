"""The OpenAPI description and its browsable page, as someone without internet access
opens them: no token needed, and every script and style sheet served by the service."""

from __future__ import annotations

import re


def test_openapi_json_is_public_and_lists_the_api(client):
    resp = client.get("/openapi.json")
    assert resp.status_code == 200
    spec = resp.get_json()
    assert spec["openapi"].startswith("3.") and spec["info"]["title"] == "crowdqc"
    for path in ("/v1/projects", "/v1/projects/{project_id}/labels", "/v1/projects/{project_id}/consensus",
                 "/v1/jobs/{job_id}", "/healthz", "/readyz"):
        assert path in spec["paths"], path


def test_docs_page_loads_its_assets_from_the_service(client):
    page = client.get("/docs")
    assert page.status_code == 200 and b"swagger" in page.data.lower()
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.get_data(as_text=True))
    assert assets, "the page references no scripts or styles"
    for url in assets:
        assert url.startswith("/docs/static/"), f"{url} would be fetched from outside the service"
        resp = client.get(url)
        assert resp.status_code == 200 and len(resp.data) > 1000, url
