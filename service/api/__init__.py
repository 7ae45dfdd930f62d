"""HTTP layer: routes, models, problem details; it calls the engine once per request."""
