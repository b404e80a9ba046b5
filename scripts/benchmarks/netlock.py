"""Start-up cost of the kernel network lock: what `appliance`'s main() adds before the command runs (goal < 5 ms).

A filter cannot be removed, so every round is a fresh Python process: it imports what the CLI has imported by
then (click, the config and paths modules), then times the lock's own work: importing pyseccomp (ctypes and
libseccomp), building the filter, loading it into the kernel (TSYNC), and separately the config read that decides
it. ctypes is timed apart: numpy imports it for every command that opens the services, lock or not. Figures are
medians over the rounds; the first round warms the page cache and is not counted.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

ROUNDS = int(os.environ.get("BENCH_NETLOCK_ROUNDS", "15"))

CHILD = r"""
import json, sys, time
import click, appliance.config, appliance.paths, appliance.cli.support
from appliance.system import netlock
from appliance.config import Config
from appliance.paths import Paths

t0 = time.perf_counter()
lock = Config.load(Paths.default().config).airgap.lock
t1 = time.perf_counter()
import ctypes
tc = time.perf_counter()
seccomp = netlock._import_pyseccomp()
t2 = time.perf_counter()
flt = netlock.build_filter()
t3 = time.perf_counter()
flt.load()
t4 = time.perf_counter()
refused, how = netlock.probe()
print(json.dumps({"config_ms": (t1 - t0) * 1e3, "ctypes_ms": (tc - t1) * 1e3, "import_ms": (t2 - tc) * 1e3,
                  "build_ms": (t3 - t2) * 1e3, "load_ms": (t4 - t3) * 1e3, "lock_ms": (t4 - t1) * 1e3,
                  "added_ms": (t4 - tc) * 1e3, "refused": refused, "how": how}))
"""


def run() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, APPLIANCE_HOME=home)
        env.pop("APPLIANCE_AIRGAP_LOCK", None)
        for index in range(ROUNDS + 1):
            out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, check=True)
            if index:
                rows.append(json.loads(out.stdout))
    if not all(row["refused"] for row in rows):
        raise SystemExit(f"the lock did not hold: {rows[0]['how']}")
    med = {key: statistics.median(row[key] for row in rows) for key in rows[0] if key.endswith("_ms")}
    worst = max(row["lock_ms"] for row in rows)
    print(f"   {ROUNDS} fresh processes, medians; the kernel refused {rows[0]['how']}")
    print(f"   import ctypes:                          {med['ctypes_ms']:.2f} ms (numpy imports it anyway: every "
          "command that opens the services pays this, lock or not)")
    print(f"   import pyseccomp (binds libseccomp):    {med['import_ms']:.2f} ms")
    print(f"   build the filter:                       {med['build_ms']:.2f} ms")
    print(f"   load it (seccomp, TSYNC):               {med['load_ms']:.2f} ms")
    print(f"   added by the lock:                      {med['added_ms']:.2f} ms (goal < 5 ms: "
          f"{'met' if med['added_ms'] < 5 else 'NOT met'})")
    print(f"   lock total with ctypes:                 {med['lock_ms']:.2f} ms (worst {worst:.2f} ms)")
    print(f"   config read that decides it:            {med['config_ms']:.2f} ms")
