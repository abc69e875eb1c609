"""The network model: many hosts' WireGuard interfaces, addresses, routes, rules, forwarding
and firewall facts in; answers out — can X reach Y, along which hops, where and why does a
packet die, and what smallest change fixes it. Pure: inputs in, answers out (DESIGN.md)."""
