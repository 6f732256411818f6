"""Reference demand traces and their seeded generator."""
