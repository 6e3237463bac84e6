"""The HTTP side: blueprints with thin handlers, pages, health, error rendering, headers, logs, metrics, rate limits
and the CLI, plus the templates and static files they serve."""
