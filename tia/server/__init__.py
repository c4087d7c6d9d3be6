"""Twisted adapters of the daemon: clock, control channel, data channels, server state."""
