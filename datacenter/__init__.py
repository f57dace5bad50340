"""The quantum data center: a link-layer API over an optical switch fabric, the network layer
that patches QPUs to heralding stations and generates entanglement on demand, and the switch
schedulers (a static baseline and a dynamic policy). See ``docs/datacenter.md``."""

from .messages import Ack, Create, Err, ErrorCode, Ok, Outcome
from .network import DataCenter, DecisionLog, Service
from .scheduler import DynamicScheduler, StaticScheduler

__all__ = [
    "Ack",
    "Create",
    "DataCenter",
    "DecisionLog",
    "DynamicScheduler",
    "Err",
    "ErrorCode",
    "Ok",
    "Outcome",
    "Service",
    "StaticScheduler",
]
