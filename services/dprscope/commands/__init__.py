"""CLI subcommands beyond the core ones; each module exposes ``register(subparsers)``."""
