"""CLI command modules. Each module defines ``register(main: click.Group) -> None``."""
