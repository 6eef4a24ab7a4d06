"""`roost-sim hub`: the local IoT Hub + DPS emulator.

    roost-sim hub serve [--state-dir DIR] [--address 127.0.0.1] [--extra-hub ADDR ...] [--dps-address ADDR]
                        [--gateway-address ADDR --gateway-hostname NAME ...] [--device ID ...]
                        [--health-port PORT] [--json]

Beside the hub and DPS it serves the service REST API, the blob endpoint for file upload and the health
attestation service (TPM quotes; the verdict goes into the device twin's tags).

State (registry, twins, enrollments, queued C2D, the PKI) lives in --state-dir (default
$ROOST_SIM_STATE_DIR or ~/.local/state/roost-sim/hub); restarting loses nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import Any

from emulator.hub import admin_cli
from emulator.hub.server import DEFAULT_ID_SCOPE, MQTT_PORT, default_state_dir


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("hub", help="local IoT Hub + DPS emulator", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
    sub = parser.add_subparsers(dest="hub_command", metavar="HUB_COMMAND")
    _register_serve(sub)
    admin_cli.register(sub)


def _register_serve(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the IoT Hub, DPS and gateway listeners until interrupted")
    serve.add_argument("--state-dir", type=Path, default=None,
                       help="where state and the PKI live (default: $ROOST_SIM_STATE_DIR or "
                            "~/.local/state/roost-sim/hub)")
    serve.add_argument("--address", default="127.0.0.1", help="address of the hub (and DPS); port 8883")
    serve.add_argument("--hub-hostname", help="host name of the hub in connection strings (default: --address)")
    serve.add_argument("--extra-hub", action="append", default=[], metavar="ADDR",
                       help="another hub on this address, for DPS allocation (repeatable)")
    serve.add_argument("--dps-address", help="address of DPS's MQTT listener (default: --address)")
    serve.add_argument("--dps-https-port", type=int, default=8443, help="DPS HTTPS REST port (default 8443)")
    serve.add_argument("--websocket-port", type=int, metavar="PORT",
                       help="also serve MQTT over WebSockets on this port of every address, as IoT Hub does on 443 "
                            "(the SDK's websockets=True, roost's hub.transport = \"mqtt-ws\"); it also answers "
                            "device file upload when --device-port is the same port")
    serve.add_argument("--id-scope", default=DEFAULT_ID_SCOPE, help=f"DPS id scope (default {DEFAULT_ID_SCOPE})")
    serve.add_argument("--gateway-address", help="run a transparent gateway listener on this address")
    serve.add_argument("--gateway-hostname", action="append", default=None, metavar="NAME",
                       help="name (or IP) in the gateway's certificate (repeatable; default: the names of the "
                            "certificate `roost-sim pki gateway` made, else --gateway-address)")
    serve.add_argument("--server-name", action="append", default=[], metavar="NAME",
                       help="extra host name for the hub/DPS certificate, e.g. localhost (repeatable)")
    serve.add_argument("--poll-assignment", action="store_true",
                       help="answer DPS registrations 202 'assigning' first, as Azure does (default: assign at once)")
    serve.add_argument("--d2c-per-second", type=float, help="throttle device-to-cloud messages (hub-wide)")
    serve.add_argument("--daily-message-units", type=int, help="daily quota of 4 KB message units")
    serve.add_argument("--tier", help="apply an IoT Hub tier's quota and throttles: F1, S1, S2 or S3 "
                                      "(--d2c-per-second / --daily-message-units override parts of it)")
    serve.add_argument("--units", type=int, default=1, help="number of units of --tier (default 1)")
    serve.add_argument("--device", action="append", default=[], metavar="ID",
                       help="make sure this SAS device exists and print its connection string (repeatable)")
    serve.add_argument("--health-port", type=int, default=0,
                       help="HTTPS port of the health attestation service on --address (default: any free port)")
    serve.add_argument("--json", action="store_true", help="print the connection details as one JSON line")
    admin_cli.add_serve_options(serve)
    serve.set_defaults(func=_serve)


def _config(args: argparse.Namespace):
    from emulator.hub.faults import Quotas
    from emulator.hub.server import EmulatorConfig

    quotas = Quotas.tier(args.tier, args.units) if args.tier else Quotas()
    if args.d2c_per_second is not None:
        quotas.d2c_per_second = args.d2c_per_second
    if args.daily_message_units is not None:
        quotas.daily_message_units = args.daily_message_units
    return EmulatorConfig(
        state_dir=args.state_dir or default_state_dir(), address=args.address, hub_hostname=args.hub_hostname,
        extra_hubs=args.extra_hub, dps_address=args.dps_address, dps_https_port=args.dps_https_port,
        id_scope=args.id_scope, gateway_address=args.gateway_address, gateway_hostnames=args.gateway_hostname,
        server_names=args.server_name, immediate_assignment=not args.poll_assignment, quotas=quotas,
        websocket_port=args.websocket_port)


def _serve(args: argparse.Namespace) -> int:
    from emulator.hub.server import Emulator

    try:
        config = _config(args)
    except ValueError as exc:
        print(f"roost-sim hub serve: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_run(Emulator(config), args))


async def _run(emulator, args: argparse.Namespace) -> int:
    from emulator.hub.health_attestation import serve_for_emulator  # tpm2-pytss: only when serving

    try:
        await emulator.start()
    except (OSError, ValueError) as exc:
        print(f"roost-sim hub serve: cannot start: {exc}\n"
              f"  Is another emulator using {args.address}:{MQTT_PORT} or the DPS HTTPS port? Pick another "
              "--address (any 127.x.y.z works) or --dps-https-port.", file=sys.stderr)
        return 1
    service = await admin_cli.start_service(emulator, args)
    if service is None:
        await emulator.stop()
        return 1
    try:
        health = serve_for_emulator(emulator, emulator.config.address, args.health_port).start()
    except OSError as exc:
        print(f"roost-sim hub serve: the health attestation service cannot listen on "
              f"{emulator.config.address}:{args.health_port}: {exc}\n  Pick another --health-port (0: any free "
              "port).", file=sys.stderr)
        await service.stop()
        await emulator.stop()
        return 1
    service.announce_health_attestation(health.url)
    info = {**emulator.connection_info(), "health_attestation": {"url": health.url}, "service": service.info()}
    devices = {}
    for device_id in args.device:
        device = emulator.hub.state.find_device(device_id) or emulator.hub.state.create_device(device_id)
        if device.primary_key:
            devices[device_id] = (f"HostName={info['hub']};DeviceId={device_id};"
                                  f"SharedAccessKey={device.primary_key}")
    # Handlers first: whoever reads the details may signal at once, and must get a clean stop, not a kill.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    if args.json:
        print(json.dumps({**info, "devices": devices}), flush=True)
    else:
        _print_info(info, devices)
    await stop.wait()
    await asyncio.to_thread(health.stop)
    await service.stop()
    await emulator.stop()
    return 0


def _print_info(info: dict, devices: dict[str, str]) -> None:
    port = info["mqtt_port"]
    lines = [f"roost hub emulator (state in {info['state_dir']})"]
    for name in info["hubs"]:
        lines.append(f"  IoT Hub   mqtts://{name}:{port}   HostName={name}")
    dps = info["dps"]
    lines.append(f"  DPS       mqtts://{dps['host']}:{port}   provisioning host {dps['host']}, "
                 f"id scope {dps['id_scope']}")
    if info.get("websocket_port"):
        lines.append(f"  MQTT over WebSockets on port {info['websocket_port']} of each address above "
                     "(wss://HOST/$iothub/websocket)")
    lines.append(f"  DPS REST  {dps['https']}/{dps['id_scope']}/registrations/{{id}}/register?api-version=2021-06-01")
    if "gateway" in info:
        gw = info["gateway"]
        lines.append(f"  gateway   mqtts://{gw['address']}:{port}   GatewayHostName={gw['hostnames'][0]}")
    lines.append(f"  health    {info['health_attestation']['url']}/attestation/challenge   (TPM quote "
                 "verification; verdicts land in twin tags)")
    lines.append(f"  root CA   {info['root_ca']}   (pass its PEM text as server_verification_cert)")
    for device_id, connection_string in devices.items():
        lines.append(f"  device {device_id}: {connection_string}")
    lines += admin_cli.service_lines(info)
    lines.append("Ctrl-C stops; state persists.")
    print("\n".join(lines), flush=True)
