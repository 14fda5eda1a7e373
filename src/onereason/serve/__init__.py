"""Fast-slow serving: a slow path that reasons offline into a durable cache (SQLite or Redis), a
fast path that recommends from the cached reasoning, interventions written into the reasoning,
and an OpenAI-compatible endpoint for the model."""
