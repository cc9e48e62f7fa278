"""ConPaaS node agent: runs on every node, driven by the control plane over signed HTTP."""
