"""`reuse_freed_memory`: large freed blocks come back without fresh pages inside it; the memory goes back to the OS after it.

The measurements run in a fresh interpreter (`MEASURE`), so no earlier test's heap decides them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cfrec.allocator import glibc

pytestmark = pytest.mark.skipif(glibc() is None, reason="the policy only acts on glibc's malloc")

MEASURE = r"""
import json, resource, torch
from cfrec.allocator import reuse_freed_memory

BLOCK = 64 * 2**20 // 4  # floats in a 64 MiB block: above glibc's largest mmap threshold (32 MiB)

def faults(blocks):
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(blocks):
        torch.empty(BLOCK).fill_(1.0)  # allocated, filled and freed one after another
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

def resident_mib():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20

out = {"pages": 4 * BLOCK * 4 // resource.getpagesize(), "outside": faults(4)}
with reuse_freed_memory(enabled=False) as active:
    out["disabled"], out["disabled_active"] = faults(4), active
with reuse_freed_memory() as outer:
    with reuse_freed_memory() as inner:
        out["active"] = outer and inner
        out["settling"] = faults(20)  # torch's 64-byte-aligned requests outgrow a freed block until neighbours merge
    out["inside"] = faults(4)  # the inner block's end restored nothing
    held = [torch.ones(BLOCK) for _ in range(4)]
    del held
    out["kept_mib"] = resident_mib()  # freed, and kept for the next step
out["after_mib"] = resident_mib()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def measured() -> dict:
    done = subprocess.run([sys.executable, "-c", MEASURE], capture_output=True, text=True, timeout=300, check=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    if out["outside"] < out["pages"] // 2:
        pytest.skip(f"{out['outside']} faults for {out['pages']} pages without the policy: huge pages, nothing to measure")
    return out


def test_freed_blocks_are_reused_inside_nested_policies(measured: dict) -> None:
    pages = measured["pages"]
    assert measured["active"]
    assert measured["inside"] < pages // 10, measured
    assert measured["settling"] < 5 * pages // 2, measured  # most of the 20 settling blocks were reused already


def test_the_freed_memory_goes_back_to_the_os_when_the_policy_ends(measured: dict) -> None:
    assert measured["kept_mib"] - measured["after_mib"] > 200, measured  # the 256 MiB freed inside


def test_disabled_policy_leaves_malloc_alone(measured: dict) -> None:
    assert not measured["disabled_active"]
    assert measured["disabled"] > measured["pages"] // 2, measured
