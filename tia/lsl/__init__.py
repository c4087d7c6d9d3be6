"""TiA signals as Lab Streaming Layer outlets, from our own server or from any TiA server.

- :mod:`tia.lsl.publisher`: the outlets and their time stamps, shared by both sides;
- :mod:`tia.lsl.outlets`: the server's ``[lsl] outlets`` (a threaded hub subscriber, a child service);
- :mod:`tia.lsl.republish`: ``tia lsl``, a TiA client republishing a server's signals (loads no server module).
"""
