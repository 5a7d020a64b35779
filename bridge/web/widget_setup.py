"""Wires the web chat widget into the app: its API, its real time, its script and demo."""

from __future__ import annotations

from aiohttp import web

from bridge.web import widget, widget_assets, widget_live


def setup_widget(app: web.Application) -> None:
    """After the store's cleanup context (the widget's contexts read it)."""
    widget.setup(app)
    widget_assets.setup(app)
    widget_live.setup(app)
