"""What the node agent and the control plane share: the archive rules, request signing, the agent
client, process helpers, waiting, what an error quotes of a log (``excerpts``), and the agent
API's paths and agreed values (``wire``).

Standard library only and importing nothing else of the project, so the agent can run it on a
node and the control plane never imports the agent itself (docs/design.md, Layout and layers).
"""
