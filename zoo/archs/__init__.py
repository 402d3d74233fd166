"""srq's own SR architectures (one file each), registered with spandrel's MAIN_REGISTRY.

``register()`` adds IMDN, PAN, RFDN, CARN-M, FSRCNN and EDSR to ``spandrel.MAIN_REGISTRY`` (once),
so ``spandrel.ModelLoader().load_from_state_dict`` detects them beside spandrel's own
architectures (SwinIR among them).
"""

from __future__ import annotations

from spandrel import MAIN_REGISTRY, ArchSupport

from srq.zoo.archs.carn_m import CARNMArch
from srq.zoo.archs.edsr import EDSRArch
from srq.zoo.archs.fsrcnn import FSRCNNArch
from srq.zoo.archs.imdn import IMDNArch
from srq.zoo.archs.pan import PANArch
from srq.zoo.archs.rfdn import RFDNArch

SRQ_ARCHITECTURES = (IMDNArch(), PANArch(), RFDNArch(), CARNMArch(), FSRCNNArch(), EDSRArch())


def register() -> None:
    """Add srq's architectures to spandrel's main registry (idempotent)."""
    MAIN_REGISTRY.add(*(ArchSupport.from_architecture(a) for a in SRQ_ARCHITECTURES), ignore_duplicates=True)
