"""The hand-built gratuitous ARP frames are byte for byte what scapy builds."""

from scapy.layers.l2 import ARP, Ether

from vipmgr.dataplane.garp import garp_frames

MAC, IP = "02:00:5e:10:00:01", "192.0.2.100"


def test_frames_equal_scapys():
    request = Ether(src=MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=MAC, psrc=IP, hwdst="00:00:00:00:00:00", pdst=IP)
    reply = Ether(src=MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=2, hwsrc=MAC, psrc=IP, hwdst="ff:ff:ff:ff:ff:ff", pdst=IP)
    assert garp_frames(MAC, IP) == (bytes(request), bytes(reply))
    assert all(len(f) == 42 for f in garp_frames(MAC, IP))
