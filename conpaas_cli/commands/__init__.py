"""The commands, one module per noun: each command takes the parsed arguments and returns an exit
code; refusals raise `CliError`. `conpaas_cli.main` wires them to the sub-commands.

- `auth`: login, logout, tokens
- `services`: services, nodes, scale, autoscale
- `versions`: code versions (list, upload, delete)
- `deploys`: deploy, push, swap
- `environments`: environments, settings, preview
- `events`, `logs`: a service's history and its instances' log lines
- `apply`: applications from their manifest
- `data`: data services (db shell, dump, load)
- `operations`: waiting for an operation (`finish`, `conpaas wait`)
- `common`: the client, finding a service, version or environment by name, following
"""
