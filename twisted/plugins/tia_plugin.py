"""twistd plugin: ``twistd -n tia --config etc/server.ini``. The tap module loads lazily."""

from twisted.application.service import ServiceMaker

tia = ServiceMaker(
    "TiA server",
    "tia.tap",
    "TOBI Interface A (TiA 1.0) biosignal server",
    "tia",
)
