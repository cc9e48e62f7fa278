"""The proxy role: HAProxy driven through its runtime API.

``runtime_api`` speaks to the stats socket, ``config`` renders the files a reload comes back
to, ``validation`` checks the desired routing, and ``proxy`` runs HAProxy and converges it.
"""
