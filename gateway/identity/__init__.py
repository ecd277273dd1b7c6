"""Identity: the local certificate authority and X.509 certificate parsing."""

__all__: list[str] = []
