"""Installs from a URL: Range requests, byte caps, resume after a drop or a reboot, delta against the active slot."""

from __future__ import annotations

import pytest
from fw_rangeserver import RangeServer
from fwrig import CutAt, PowerCut, Rig

from emulator.board.slots import with_changed_blocks
from firmware.bundle import read_bundle_envelope
from firmware.errors import DownloadError, PayloadError
from firmware.source import HttpSource

FAST = {"timeout": 2.0, "retries": 2, "sleep": lambda s: None}


@pytest.fixture
def rig(tmp_path):
    return Rig(tmp_path, "rpi-tryboot", slot_size=256 * 1024, image_size=200 * 1024)


@pytest.fixture
def server(rig, loopback_address):
    srv = RangeServer(loopback_address, rig.bundles)
    yield srv
    srv.close()


def test_install_from_url_then_commit(rig, server):
    bundle = rig.bundle("2.0")
    result = rig.engine(http_options=FAST).install(server.url(bundle.name), reboot=True)
    assert result.slot == "b"
    assert result.bytes_read <= bundle.stat().st_size
    outcome, report = rig.settle()
    assert (outcome.slot, outcome.image["version"], report.mode) == ("b", "2.0", "normal")


def test_dropped_connection_resumes_with_range(rig, server):
    bundle = rig.bundle("2.0")
    server.drop_after = 70_000
    result = rig.engine(http_options=FAST).install(server.url(bundle.name))
    assert result.slot == "b"
    payload = read_bundle_envelope(bundle).payload_offset
    # the payload request was cut after 70000 bytes; the next request asks for the rest, from exactly there
    assert any(r.startswith(f"bytes={payload}-") for r in server.requests), server.requests
    assert any(r.startswith(f"bytes={payload + 70_000}-") for r in server.requests), server.requests
    assert rig.slot_bytes("b")[:rig.image_size] == rig.image("2.0")


def test_power_cut_mid_download_resumes_after_reboot(rig, server):
    """After a reboot the same install fetches only the blocks the slot does not hold yet."""
    bundle = rig.bundle("2.0")
    size = bundle.stat().st_size
    with pytest.raises(PowerCut):
        rig.engine(CutAt(30), http_options=FAST).install(server.url(bundle.name))
    first_attempt = server.bytes_sent
    rig.settle()
    server.bytes_sent = 0
    result = rig.engine(http_options=FAST).install(server.url(bundle.name), reboot=True)
    assert result.stats.blocks_present > 0
    assert server.bytes_sent < size - result.stats.blocks_present * rig.block_size + 64 * 1024
    assert first_attempt > 0
    outcome, report = rig.settle()
    assert (outcome.slot, outcome.image["version"], report.mode) == ("b", "2.0", "normal")


def test_delta_fetches_only_changed_blocks(rig, server):
    new = with_changed_blocks(rig.factory, rig.block_size, 0.10, "1.1")
    bundle = rig.bundle("1.1", image=new)
    result = rig.engine(http_options=FAST).install(server.url(bundle.name))
    assert result.stats.blocks_copied > 0
    changed = sum(1 for i in range(0, len(new), rig.block_size)
                  if new[i:i + rig.block_size] != rig.factory[i:i + rig.block_size])
    assert result.stats.blocks_fetched == changed
    assert server.bytes_sent <= 0.12 * len(new) + (bundle.stat().st_size - len(new))
    assert rig.slot_bytes("b")[:len(new)] == new


def test_server_ignoring_range_is_refused(rig, server):
    bundle = rig.bundle("2.0")
    server.ignore_range = True
    with pytest.raises(DownloadError, match="ignored the Range request"):
        rig.engine(http_options=FAST).install(server.url(bundle.name))
    assert rig.engine().status()["pending"] is None


def test_server_sending_more_than_asked_is_refused(rig, server):
    bundle = rig.bundle("2.0")
    server.send_extra = 10
    with pytest.raises(DownloadError, match="more than the"):
        rig.engine(http_options=FAST).install(server.url(bundle.name))


def test_extended_bundle_on_the_server_is_refused_before_writing(rig, server):
    bundle = rig.bundle("2.0")
    with open(bundle, "ab") as fh:
        fh.write(b"\0" * 4096)
    before = rig.slot_bytes("b")
    with pytest.raises(PayloadError, match="longer than its manifest"):
        rig.engine(http_options=FAST).install(server.url(bundle.name))
    assert rig.slot_bytes("b") == before


def test_endless_stream_is_capped(rig, server):
    """A server that streams forever cannot push more than the bytes asked for through the source."""
    server.endless = True
    source = HttpSource(server.url("anything"), **FAST)
    source.limit(100_000)
    with pytest.raises(DownloadError, match="more than the"):
        source.read_at(0, 16)


def test_stalled_server_times_out(rig, server):
    bundle = rig.bundle("2.0")
    server.stall = 1.0
    options = FAST | {"timeout": 0.2}
    with pytest.raises(DownloadError, match="gave up"):
        rig.engine(http_options=options).install(server.url(bundle.name))
    assert rig.engine().status()["pending"] is None


def test_missing_bundle_is_a_clear_error(rig, server):
    with pytest.raises(DownloadError, match="HTTP 404"):
        rig.engine(http_options=FAST).install(server.url("nope.roostb"))


def test_non_http_url_is_refused(rig):
    with pytest.raises(DownloadError, match="unsupported location"):
        rig.engine().install("ftp://example.invalid/x.roostb")


def test_redirects_are_followed(rig, server):
    bundle = rig.bundle("2.0")
    server.redirects = {"/latest.roostb": f"/{bundle.name}", "/loop": "/loop"}
    assert rig.engine(http_options=FAST).install(server.url("latest.roostb")).slot == "b"
    with pytest.raises(DownloadError, match="more than 5 redirects"):
        HttpSource(server.url("loop"), **FAST).read_at(0, 16)


def test_redirect_to_another_scheme_is_refused(rig, server):
    server.redirects = {"/x": "ftp://example.invalid/x"}
    with pytest.raises(DownloadError, match="refusing redirect"):
        HttpSource(server.url("x"), **FAST).read_at(0, 16)
