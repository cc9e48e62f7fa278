"""The isolated nodes' address plan and host rules (services/clouds/network.py)."""

from services.clouds import network as network_module
from services.clouds import slots as slots_module
from services.clouds.local import is_local_address
from services.clouds.network import Firewalls, Network
from services.clouds.slots import Slot


def test_a_nodes_mac_is_its_addresses_so_a_router_replaced_at_that_address_keeps_it():
    network = Network("10.77.0.0/16")

    assert network.mac(network.slot_at("10.77.1.42")) == "02:00:0a:4d:01:2a"  # locally administered
    assert len({network.mac(slot) for slot in network.slots}) == len(network.slots)


def captured_rulesets(monkeypatch) -> list[str]:
    rulesets = []
    monkeypatch.setattr(network_module, "run", lambda *argv, **kwargs: rulesets.append(kwargs.get("input", "")))
    return rulesets


def test_a_data_nodes_backup_store_on_this_host_is_forwarded_from_the_gateway(monkeypatch):
    rulesets = captured_rulesets(monkeypatch)
    network = Network("10.77.0.0/16")
    data = Slot(5, "/home/a", "db-1", "service-1", ("127.0.0.1", 8000), store=("127.0.0.1", 8333))
    web = Slot(6, "/home/a", "web-1", "service-2", ("127.0.0.1", 8000))

    network.converge_host([data, web])
    Firewalls("/home/a", network)._firewall(data, [])
    Firewalls("/home/a", network)._firewall(web, [])

    host, data_firewall, web_firewall = rulesets
    assert "ip daddr 10.77.0.1 tcp dport 8333 dnat to 127.0.0.1:8333" in host
    assert host.count("dport 8000 dnat") == 1
    assert "ip daddr 10.77.0.1 tcp dport 8333 accept" in data_firewall
    assert "8333" not in web_firewall, "only data nodes reach the backup store"


def test_a_slot_keeps_its_store_in_its_record(tmp_path, monkeypatch):
    monkeypatch.setattr(slots_module, "REGISTRY", tmp_path)
    (tmp_path / "slots").mkdir()
    Slot(7, "/home/a", "db-1", "service-1", ("127.0.0.1", 8000), store=("127.0.0.1", 8333)).save()
    Slot(8, "/home/a", "web-1", "service-2", ("127.0.0.1", 8000)).save()
    assert Slot.load(7).store == ("127.0.0.1", 8333)
    assert Slot.load(8).store is None


def test_only_an_address_of_this_host_is_forwarded():
    assert is_local_address("127.0.0.1")
    assert not is_local_address("192.0.2.1")  # TEST-NET-1: nobody's
