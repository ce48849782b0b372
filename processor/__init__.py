"""finstream processor: a GPU stream processor for financial transaction and document events."""

__version__ = "0.1.0"
