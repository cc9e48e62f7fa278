"""The slot registry: which isolated node holds which slot (its address, user, namespace) on this machine.

Network namespaces, bridges and users are machine-wide, while several installations (a
developer's `./run up` and a test run) may share the machine: slots are handed out from a
registry under /run, under one lock, and each records the installation that holds it.
"""

import fcntl
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from services.clouds.host_commands import IsolationError

REGISTRY = Path("/run/conpaas-local")


@contextmanager
def registry_lock():
    REGISTRY.mkdir(mode=0o700, parents=True, exist_ok=True)
    (REGISTRY / "slots").mkdir(mode=0o700, exist_ok=True)
    with open(REGISTRY / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@dataclass
class Slot:
    number: int
    installation: str  # the nodes directory of the installation holding it
    node: str
    group: str
    control: tuple[str, int]
    published: int | None = None  # the host port forwarded to the router (CONPAAS_LOCAL_PUBLISH)
    # "node", or "build": a build's sandbox, whose firewall lets it reach the package proxy
    # (`control`) and nothing else, not even other nodes' routers.
    kind: str = "node"
    # A data node's backup store on this host (host, port), forwarded from the gateway like `control`.
    store: tuple[str, int] | None = None

    @property
    def netns(self) -> str:
        return f"conpaas-n{self.number}"

    @property
    def user(self) -> str:
        return f"cpn{self.number}"

    @property
    def veth(self) -> str:
        return f"cpv{self.number}"

    @property
    def path(self) -> Path:
        return REGISTRY / "slots" / str(self.number)

    def save(self) -> None:
        record = {
            "installation": self.installation,
            "node": self.node,
            "group": self.group,
            "control": list(self.control),
            "published": self.published,
            "kind": self.kind,
            "store": list(self.store) if self.store else None,
        }
        self.path.write_text(json.dumps(record))

    @classmethod
    def load(cls, number: int) -> "Slot | None":
        try:
            record = json.loads((REGISTRY / "slots" / str(number)).read_text())
        except (OSError, ValueError):
            return None
        return cls(
            number,
            record["installation"],
            record["node"],
            record["group"],
            tuple(record["control"]),
            record.get("published"),
            record.get("kind", "node"),
            tuple(record["store"]) if record.get("store") else None,
        )

    def stale(self) -> bool:
        """Held by a node whose record in its installation is gone (a crash, a deleted test home):
        the record is a link to the node's home, made under the lock when the slot is taken."""
        return not (Path(self.installation) / self.node).exists()


def all_slots() -> list[Slot]:
    slots = []
    for path in (REGISTRY / "slots").iterdir():
        if path.name.isdigit() and (slot := Slot.load(int(path.name))):
            slots.append(slot)
    return slots


def next_free(held: dict[int, Slot], numbers: range, network: str) -> int:
    """The first of `numbers` (the slots of `network`) that `held` does not hold, after the last one
    handed out: an address just given up is not given again at once, so a deleted service's URL
    does not reach the next service."""
    counter = REGISTRY / "last"
    try:
        last = int(counter.read_text())
    except (OSError, ValueError):
        last = 0
    order = [n for n in numbers if n > last] + [n for n in numbers if n <= last]
    number = next((n for n in order if n not in held), None)
    if number is None:
        raise IsolationError(f"no free address left in {network}")
    counter.write_text(str(number))
    return number
