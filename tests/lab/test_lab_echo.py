"""The echo service on loopback: HTTP answers the source address, UDP datagrams are recorded."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from vipmgr.lab.echo import UdpRecord, get, main, parse_udp_frame, read_udp_log, serve
from vipmgr.lab.etcd import free_port


@pytest.fixture
def echo(tmp_path):
    """An echo service on 127.0.0.1 in a background thread: (http port, udp port, log)."""
    http_port, udp_port, log = free_port(), free_port(), tmp_path / "udp.log"
    stop = threading.Event()

    async def run() -> None:
        task = asyncio.create_task(serve("127.0.0.1", http_port, udp_port, str(log)))
        await asyncio.get_running_loop().run_in_executor(None, stop.wait)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", http_port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.02)
    yield http_port, udp_port, log
    stop.set()
    thread.join(5)


def test_http_answers_the_source_address(echo):
    http_port, _, _ = echo
    assert get(f"http://127.0.0.1:{http_port}/") == "127.0.0.1\n"
    assert get(f"127.0.0.1:{http_port}", timeout=1) == "127.0.0.1\n"


def test_get_fails_fast_when_nothing_listens():
    start = time.monotonic()
    with pytest.raises(OSError):
        get(f"http://127.0.0.1:{free_port()}/", timeout=1)
    assert time.monotonic() - start < 2


def test_get_cli_exit_codes(echo, capsys):
    http_port, _, _ = echo
    assert main(["get", f"http://127.0.0.1:{http_port}/"]) == 0
    assert capsys.readouterr().out == "127.0.0.1\n"
    assert main(["get", f"http://127.0.0.1:{free_port()}/", "--timeout", "1"]) == 1


def test_udp_datagrams_are_recorded_and_answered(echo):
    _, udp_port, log = echo
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        before = time.monotonic()
        for seq in (1, 2, 3):
            s.sendto(f"{seq} payload".encode(), ("127.0.0.1", udp_port))
            assert s.recv(100) == f"{seq} 127.0.0.1\n".encode()
        s.sendto(b"not a sequence number", ("127.0.0.1", udp_port))
        s.sendto(b"4", ("127.0.0.1", udp_port))
        assert s.recv(100) == b"4 127.0.0.1\n"  # the garbage got no answer
    records = read_udp_log(log)
    assert [r.seq for r in records] == [1, 2, 3, 4]
    assert {r.source for r in records} == {"127.0.0.1"}
    assert all(before <= r.arrival <= time.monotonic() for r in records)


def test_a_half_written_log_line_is_skipped(tmp_path):
    log = tmp_path / "log"
    log.write_text(UdpRecord(7, "192.0.2.100", 1.5).line() + "8 192.0.2.1")
    assert read_udp_log(log) == [UdpRecord(7, "192.0.2.100", 1.5)]


def test_an_incomplete_http_request_gets_no_answer_but_does_not_block_others(echo):
    http_port, _, _ = echo
    with socket.create_connection(("127.0.0.1", http_port)) as stuck:
        stuck.sendall(b"GET / HTTP/1.0\r\n")  # never finishes its headers
        assert get(f"http://127.0.0.1:{http_port}/") == "127.0.0.1\n"


def test_l2_records_carry_the_mac_and_parse_back():
    record = UdpRecord(9, "192.0.2.100", 2.25, "02:00:00:00:00:0a")
    assert UdpRecord.parse(record.line()) == record
    assert record.line() == "9 192.0.2.100 2.250000 02:00:00:00:00:0a\n"


def test_udp_frames_are_parsed_for_the_benchmark_port_only():
    eth = bytes.fromhex("020000000001" "02000000000a" "0800")
    ip = bytes([0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0]) + socket.inet_aton("192.0.2.100") \
        + socket.inet_aton("203.0.113.10")
    udp = (40000).to_bytes(2, "big") + (7).to_bytes(2, "big") + bytes(4)
    assert parse_udp_frame(eth + ip + udp + b"123 pad", 7) == ("02:00:00:00:00:0a", "192.0.2.100", 123)
    assert parse_udp_frame(eth + ip + udp + b"123 pad", 9) is None      # another port
    assert parse_udp_frame(eth + ip + udp + b"garbage", 7) is None      # no sequence number
    tcp = ip[:9] + bytes([6]) + ip[10:]
    assert parse_udp_frame(eth + tcp + udp + b"123", 7) is None         # not UDP
