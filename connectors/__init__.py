"""Connectors: one small module per channel behind one protocol (`connectors.base`), one error
tree (`connectors.errors`), and a recording connector for tests and the dry-run."""
