"""`edgesim fleet run` for a fleet file with `provisioning:`: the gateway-side setup of fleet provisioning by claim
(a claim certificate and its policy) or of JITP/JITR (the fleet's CA and a certificate per device)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from gateway.cli_api import err_console


@contextmanager
def provisioning_errors(endpoint: str) -> Iterator[None]:
    """A gateway that cannot be reached, or refuses a provisioning call: one line and exit 1, no traceback."""
    from botocore.exceptions import ClientError, EndpointConnectionError

    try:
        yield
    except EndpointConnectionError as exc:
        err_console.print(f"[red]error:[/red] no gateway API at {endpoint} to provision through ({exc})")
        raise typer.Exit(1) from exc
    except ClientError as exc:
        error = exc.response.get("Error", {})
        err_console.print(f"[red]error:[/red] provisioning: {error.get('Code')}: {error.get('Message')}")
        raise typer.Exit(1) from exc


if TYPE_CHECKING:
    from devices.claim import ClaimOptions
    from devices.provision import DeviceFiles
    from devices.spec import DeviceSpec, FleetSpec


def provisioning_setup(
    spec: FleetSpec, devices: list[DeviceSpec], endpoint: str, certs: Path, no_provision: bool
) -> tuple[dict[str, DeviceFiles], ClaimOptions | None, frozenset[str]]:
    """Each device's certificate files (for `claim`: where it will store the one it gets); for `claim`, what the
    devices need to provision themselves; for JITP/JITR, the devices whose first connect will provision them. A
    gateway refusal is one clear line and exit 1."""
    from devices.claim import ClaimOptions
    from devices.jit import JitProvisioner
    from devices.provision import ClaimProvisioner, iot_client

    setup = spec.provisioning
    assert setup is not None
    with provisioning_errors(endpoint):
        if setup.by != "claim":
            jit = JitProvisioner(iot_client(endpoint), spec, certs, setup.by, setup.template)
            if no_provision:
                return {d.thing_name: jit.files(d) for d in devices}, None, frozenset()
            files = jit.provision_jit(devices)
            return files, None, frozenset(jit.fresh)
        assert setup.template is not None
        provisioner = ClaimProvisioner(iot_client(endpoint), spec, certs, setup.template)
        if no_provision:
            claim = provisioner.files_for_claim()
            if not claim.cert.exists():
                err_console.print(f"[red]error:[/red] no cached claim certificate at {claim.cert}")
                raise typer.Exit(1)
            files = {d.thing_name: provisioner.files(d) for d in devices}
        else:
            claim, files = provisioner.provision_claim(devices)
    parameters = {name: template.text for name, template in setup.parameters.items()}
    return files, ClaimOptions(setup.template, claim.cert, claim.key, parameters), frozenset()
