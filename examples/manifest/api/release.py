"""The api's release command (manifest.yaml, `release:`): run once before a version of the api
enters an environment, where a real app migrates its database. Exiting non-zero stops the deploy."""

import os

print(f"release of {os.environ.get('CONPAAS_VERSION')} for {os.environ.get('CONPAAS_ENV')}: nothing to migrate")
