"""The TiA 1.0 wire protocol without any I/O: bytes in, objects out, objects in, bytes out.

Nothing here imports Twisted or touches a socket, so the server, the Twisted
client and the blocking client all share one implementation of the wire.
"""
