"""txtia: a TOBI Interface A (TiA 1.0) server daemon and client library on Twisted."""

__version__ = "0.1.0"
