"""Network definitions (torch, imported only inside the network modules), shipped model files and
their manifest. `mgs_core.manifest` is standard library only so the device can read it without torch."""
