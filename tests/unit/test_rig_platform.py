"""The local Cloud Storage stand-in picks the fake-gcs-server binary of the platform it runs on."""

from __future__ import annotations

import pathlib

import pytest

from tests.rig.gcs import binary_name, fake_gcs_binary


@pytest.mark.parametrize(
    ("system", "machine", "binary"),
    [
        ("Linux", "x86_64", "fake-gcs-server-linux-amd64"),
        ("Linux", "aarch64", "fake-gcs-server-linux-arm64"),
        ("Linux", "arm64", "fake-gcs-server-linux-arm64"),
        ("Darwin", "arm64", "fake-gcs-server-darwin-arm64"),  # Apple silicon
        ("Darwin", "x86_64", "fake-gcs-server-darwin-amd64"),  # Intel Mac
        ("Windows", "AMD64", "fake-gcs-server-windows-amd64.exe"),
    ],
)
def test_each_platform_with_a_pinned_wheel_gets_its_binary(system: str, machine: str, binary: str) -> None:
    assert binary_name(system, machine) == binary


@pytest.mark.parametrize(
    ("system", "machine"),
    [("Linux", "armv7l"), ("Linux", "ppc64le"), ("Linux", "s390x"), ("FreeBSD", "amd64"),
     ("Windows", "ARM64"), ("Darwin", "i386"), ("", "")],
)
def test_a_platform_without_a_binary_gets_one_sentence_naming_it(system: str, machine: str) -> None:
    with pytest.raises(RuntimeError) as raised:
        binary_name(system, machine)
    message = str(raised.value)
    assert message.count(". ") == 0 and message.endswith(".")  # one sentence
    assert f"{system or 'this system'} {machine or '(unknown)'}" in message
    assert "fake-gcs-server" in message and "Linux and macOS on x86_64 and arm64" in message


def test_this_machine_has_its_binary_installed() -> None:
    binary = fake_gcs_binary()
    assert binary.is_file() and binary.stat().st_mode & 0o111


def test_a_wheel_for_another_platform_is_named_as_the_cause(monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed for Linux x86_64, asked for Apple silicon: the message says what is there and what to do."""
    installed = fake_gcs_binary()
    other = "Darwin" if not installed.name.startswith("fake-gcs-server-darwin") else "Linux"
    with pytest.raises(RuntimeError) as raised:
        fake_gcs_binary(other, "arm64")
    message = str(raised.value)
    assert f"has no {binary_name(other, 'arm64')}" in message and installed.name in message
    assert "remove .venv" in message
    assert isinstance(installed, pathlib.Path)
