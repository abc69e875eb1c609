"""Tools that read a whole network (wg-quick files and snapshots of many hosts):
collect, net check, net trace, net map."""
