"""``qnetlab serve``: the lab as an always-on service with authenticated remote control.

One process owns the station (:class:`~qnetlab.service.lab.Lab`: the station, its safety
watchdog, the calibration kept maintained on a lab-clock schedule) and runs queued entanglement
requests and operator jobs one at a time per resource (:mod:`.executor`). The queue, leases,
API keys and the append-only audit log live in the data directory (:mod:`.store`,
:mod:`.audit`), so the service survives its own restart. The HTTP API (:mod:`.app`, FastAPI)
checks every call against scoped, expiring API keys (:mod:`.auth`) and serves the live status
page (``static/``). :mod:`.remote` runs the ``qnetlab`` commands against a service
(``qnetlab --server URL ...``).
"""
