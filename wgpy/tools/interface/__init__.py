"""Tools that read a live interface (wgpyd, wireguard-go or the kernel's): show, top,
events, capture, watch, doctor, web."""
