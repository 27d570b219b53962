"""The `journeys` command line: `app` registers one module per command; `_common` holds what they
share. It may import every other room; nothing outside this room imports it.
"""
