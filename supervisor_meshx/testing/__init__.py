"""Test helpers shipped with the package (never used by the plugin itself)."""
