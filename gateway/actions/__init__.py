"""Rule actions: one module per action type, all behind the interface in `base`."""

__all__: list[str] = []
