"""Thin aiohttp handlers: translate a request once, call the store, answer."""
