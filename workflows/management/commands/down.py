"""Destroy every local node of this CONPAAS_HOME and stop what they ran."""

from concurrent.futures import ThreadPoolExecutor

from django.core.management.base import BaseCommand

from services.choices import NodeState, Outcome
from services.clouds import LOCAL, get_cloud
from services.models import Event, Node

PARALLEL_DESTROYS = 8


class Command(BaseCommand):
    help = "Destroy every local node of this CONPAAS_HOME (the data plane stops)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--network",
            action="store_true",
            help="also remove the isolated nodes' bridge when no installation on this machine has a node left",
        )

    def handle(self, *args, network=False, **options):
        cloud = get_cloud(LOCAL)
        cloud_nodes = cloud.list_nodes()
        destroyed = 0
        # Each node's processes get their graceful stop at once, not one node after the other
        # (a store's volume server or a PostgreSQL server takes seconds); the database is
        # written here, by this thread alone.
        with ThreadPoolExecutor(max_workers=PARALLEL_DESTROYS) as pool:
            for cloud_node, _ in zip(cloud_nodes, pool.map(cloud.destroy_node, cloud_nodes), strict=True):
                destroyed += 1
                for node in Node.objects.filter(cloud=LOCAL, provider_id=cloud_node.id).exclude(
                    state=NodeState.DESTROYED
                ):
                    node.instances.all().delete()
                    Node.objects.filter(pk=node.pk).update(state=NodeState.DESTROYED)
                    Event.record(
                        node.service, "node.destroy", f"destroyed node {node.name} (manage.py down)", Outcome.SUCCEEDED
                    )
                self.stdout.write(f"destroyed {cloud_node.name} ({destroyed} of {len(cloud_nodes)})")
        self.stdout.write(f"destroyed {destroyed} local node(s)")
        if removed := cloud.ex_release_sandboxes():
            self.stdout.write(f"removed {removed} build sandbox(es) left running")
        if network and cloud.ex_remove_network():
            self.stdout.write("removed the local nodes' network (no installation has a node left)")
        elif network and cloud.isolation is not None:
            self.stdout.write("kept the local nodes' network: another installation on this machine still has nodes")
