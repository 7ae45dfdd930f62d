"""The numeric core: pure NumPy/SciPy, no HTTP, no settings (limits arrive as arguments)."""
