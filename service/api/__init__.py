"""HTTP API blueprints (flask-smorest MethodViews)."""

from __future__ import annotations


def register_blueprints(api) -> None:
    from . import aggregations, health, labels, projects, results

    for module in (health, projects, labels, aggregations, results):
        api.register_blueprint(module.blp)
