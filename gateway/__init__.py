"""edgesim gateway: a local stand-in for AWS IoT Core and the services its rules feed."""

__all__ = ["__version__"]
__version__ = "0.1.0"
