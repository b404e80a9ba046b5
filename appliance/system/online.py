"""Offline by default: the one door to the network.

`appliance/__init__.py` sets the environment guards (HF_HUB_OFFLINE=1 and friends) before anything else is
imported. huggingface_hub reads HF_HUB_OFFLINE into `huggingface_hub.constants` once, at its own import, so
changing the variable later does nothing; `online()` lifts both the variable and the constant for the duration of
one explicit download, and puts both back afterwards, whatever happens. Only the explicit online commands call it:
`appliance models download`, `models install-pack` and `kb download` (netlock.ONLINE_COMMANDS; the kernel lock is
never installed for them).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Iterator

_door = threading.Lock()
_OFFLINE_KEYS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


@contextlib.contextmanager
def online(reason: str) -> Iterator[None]:
    """Allow huggingface_hub to reach the network inside this block only. `reason` says who asked (for the log)."""
    import huggingface_hub.constants as hub_constants

    with _door:
        saved_env = {key: os.environ.get(key) for key in _OFFLINE_KEYS}
        saved_const = hub_constants.HF_HUB_OFFLINE
        try:
            for key in _OFFLINE_KEYS:
                os.environ[key] = "0"
            hub_constants.HF_HUB_OFFLINE = False
            yield
        finally:
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            hub_constants.HF_HUB_OFFLINE = saved_const


def is_offline() -> bool:
    """True when the guards are in force (outside `online()`)."""
    if os.environ.get("HF_HUB_OFFLINE") != "1":
        return False
    hub_constants = sys.modules.get("huggingface_hub.constants")
    return hub_constants is None or bool(hub_constants.HF_HUB_OFFLINE)
