"""`conpaas`: the command-line client of ConPaaS. It speaks only the REST API (docs/design.md)."""
