"""`conpaas`: the command-line client of ConPaaS. It speaks only the REST API of DESIGN.md."""
