"""Recording TiA streams to files, from a client (``tia record``, ``tia convert``) or in the server.

The client side loads no server module:

- :mod:`tia.recording.recorder`: packets of one stream gathered per signal, with events and gaps;
- :mod:`tia.recording.writers`: a gathered recording written as .npz, .csv, .edf or .bdf;
- :mod:`tia.recording.journal`: a server recording's crash-safe raw journal (``NAME.tia`` +
  ``NAME.json``): written, read back, converted.

The server side (``[recording]``, the recording control commands) sits on the server's public surface:

- :mod:`tia.recording.names`: run numbering and file names;
- :mod:`tia.recording.sink`: one recording run, a threaded hub subscriber writing the journal;
- :mod:`tia.recording.service`: runs started and stopped by configuration and control clients.
"""
