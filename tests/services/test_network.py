"""The isolated nodes' address plan (services/clouds/network.py)."""

from services.clouds.network import Network


def test_a_nodes_mac_is_its_addresses_so_a_router_replaced_at_that_address_keeps_it():
    network = Network("10.77.0.0/16")

    assert network.mac(network.slot_at("10.77.1.42")) == "02:00:0a:4d:01:2a"  # locally administered
    assert len({network.mac(slot) for slot in network.slots}) == len(network.slots)
