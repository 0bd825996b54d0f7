"""Data sets: a simulator with known ground truth, the bundled sample, real bandit logs."""
from importlib import import_module

from .simulate import SimulatedLog, load_sample, simulate_log
from .simulate_net import NetSimulatedLog, simulate_net_log

__all__ = ["SimulatedLog", "simulate_log", "load_sample", "load_open_bandit", "NetSimulatedLog",
           "simulate_net_log"]


def __getattr__(name):
    if name == "load_open_bandit":
        return import_module("causalrec.datasets.obd").load_open_bandit
    raise AttributeError(f"module 'causalrec.datasets' has no attribute {name!r}")
