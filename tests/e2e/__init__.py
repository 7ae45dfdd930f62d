"""End-to-end tests against a live uvicorn: the generated SDK and the docs in a real browser."""
