"""HTTP API blueprints (flask-smorest MethodViews)."""

from __future__ import annotations


def register_blueprints(api) -> None:
    from . import aggregations, exports, health, imports, integrations, labels, projects, results, webhooks

    for module in (health, projects, labels, aggregations, results, imports, exports, webhooks, integrations):
        api.register_blueprint(module.blp)
