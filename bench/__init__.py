"""wgpy benchmarks against anchors measured in the same run (wireguard-go, pytricia, bare veth).

Run ``python -m bench --help`` (as root: the network figures use network namespaces).
Benchmarks are not tests; CI only runs ``--quick`` as a smoke check.
"""
