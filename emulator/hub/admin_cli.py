"""`roost-sim hub ...` admin commands: thin clients of the emulator's service API.

    roost-sim hub devices list|show|create|delete|enable|disable|connection-string
    roost-sim hub enrollments list|show|create|delete [--group]
    roost-sim hub twin show ID | twin desired ID JSON | twin tags ID JSON
    roost-sim hub invoke ID METHOD [PAYLOAD] [--timeout S] [--connect-timeout S]
    roost-sim hub c2d send ID BODY [-p K=V] | c2d list ID | c2d purge ID | c2d feedback
    roost-sim hub telemetry tail [--device ID] [--since N|latest] [--follow] | telemetry export [-o FILE]
    roost-sim hub connections | metering | files
    roost-sim hub fault drop|withhold-puback|delay|throttle|quota|expire-token|refuse|list|clear ...

Each finds the API through service.json in the state directory (the same --state-dir / $ROOST_SIM_STATE_DIR
as `serve`) or --connection-string; output is for people unless --json is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from emulator.hub.service_client import ServiceClient, ServiceClientError, discover

Printer = Callable[[Any], str]


def register(sub: Any) -> None:
    """Add the admin commands to the `roost-sim hub` subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", type=Path, default=None,
                        help="the emulator's state directory (default: $ROOST_SIM_STATE_DIR or "
                             "~/.local/state/roost-sim/hub)")
    common.add_argument("--connection-string", default=os.environ.get("ROOST_HUB_CONNECTION_STRING"),
                        help="iothubowner connection string (default: $ROOST_HUB_CONNECTION_STRING, else "
                             "service.json in the state directory)")
    common.add_argument("--ca-file", help="root CA that signed the API's certificate (default: the emulator's)")
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    _devices(sub, common)
    _enrollments(sub, common)
    _twin(sub, common)
    _invoke(sub, common)
    _c2d(sub, common)
    _telemetry(sub, common)
    _simple(sub, common)
    _faults(sub, common)


def _group(sub: Any, name: str, help_text: str) -> Any:
    parser = sub.add_parser(name, help=help_text)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
    return parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND")


def _command(group: Any, name: str, common: argparse.ArgumentParser, help_text: str,
             action: Callable[[ServiceClient, argparse.Namespace], Any], printer: Printer | None = None) -> Any:
    parser = group.add_parser(name, help=help_text, parents=[common])
    parser.set_defaults(func=lambda args: _run(args, action, printer))
    return parser


def _run(args: argparse.Namespace, action: Callable[[ServiceClient, argparse.Namespace], Any],
         printer: Printer | None) -> int:
    prog = "roost-sim hub"
    try:
        state_dir = args.state_dir
        if state_dir is None:
            from emulator.hub.server import default_state_dir

            state_dir = default_state_dir()
        client = ServiceClient(discover(state_dir, args.connection_string, args.ca_file))
    except ServiceClientError as exc:
        print(f"{prog}: {exc.message}", file=sys.stderr)
        return 1
    try:
        result = action(client, args)
    except ServiceClientError as exc:
        where = f" (HTTP {exc.status})" if exc.status else ""
        print(f"{prog}: {exc.message}{where}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    finally:
        client.close()
    if isinstance(result, int) and not isinstance(result, bool):
        return result          # streaming commands print as they go and return an exit code
    if args.json:
        print(json.dumps(result, indent=None if isinstance(result, list) else 2))
    elif printer is not None:
        text = printer(result)
        if text:
            print(text)
    return 0


def _json_arg(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{what} is not valid JSON ({exc}); quote it, e.g. '{{\"interval\": 10}}'") from None


def _table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [header] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def _kv(doc: dict, keys: list[str]) -> str:
    return "\n".join(f"{k}: {json.dumps(doc[k]) if isinstance(doc[k], dict | list) else doc[k]}"
                     for k in keys if doc.get(k) is not None)


# --- what `serve` adds for the service side ------------------------------------------------------------------

def add_serve_options(serve: argparse.ArgumentParser) -> None:
    """Options of `roost-sim hub serve` for the service API and the blob endpoint."""
    serve.add_argument("--service-port", type=int, default=None,
                       help="HTTPS port of the service API (default 443, or 9443 when 443 is not permitted)")
    serve.add_argument("--blob-port", type=int, default=0,
                       help="port of the local blob endpoint for file upload (default: any free port)")
    serve.add_argument("--no-file-upload", action="store_true", help="serve no blob endpoint")


async def start_service(emulator: Any, args: argparse.Namespace) -> Any:
    """Start the service API beside a started emulator; None (after saying why) when it cannot listen."""
    from emulator.hub.service_api import ServiceApi, ServiceOptions

    options = ServiceOptions(port=args.service_port, blob_port=None if args.no_file_upload else args.blob_port)
    try:
        service = ServiceApi(emulator, options)
        await service.start()
    except ValueError as exc:
        print(f"roost-sim hub serve: {exc}", file=sys.stderr)
        return None
    except OSError as exc:
        print(f"roost-sim hub serve: the service API cannot listen: {exc}\n"
              "  Pick another --service-port (or --blob-port).", file=sys.stderr)
        return None
    return service


def service_lines(info: dict) -> list[str]:
    """What `serve` prints about the service side (its info under ``info["service"]``)."""
    service = info.get("service")
    if not service:
        return []
    lines = [f"  service   {service['url']}   (IoT Hub REST API; roost-sim hub ... uses it)",
             f"  iothubowner connection string: {service['connectionString']}"]
    if service.get("blobEndpoint"):
        lines.append(f"  blobs     {service['blobEndpoint']}   (file upload)")
    lines += [f"  warning: {w}" for w in service.get("warnings", [])]
    return lines


# --- devices -------------------------------------------------------------------------------------------------

def _devices(sub: Any, common: argparse.ArgumentParser) -> None:
    group = _group(sub, "devices", "device identities in the hub's registry")
    _command(group, "list", common, "list devices", lambda c, a: c.request("GET", "/devices"),
             lambda devs: _table([[d["deviceId"], d["authentication"]["type"], d["status"], d["connectionState"],
                                   d["cloudToDeviceMessageCount"]] for d in devs],
                                 ["DEVICE", "AUTH", "STATUS", "CONNECTION", "C2D QUEUED"]) if devs else "no devices")
    show = _command(group, "show", common, "show one device", lambda c, a: c.request("GET", f"/devices/{a.id}"),
                    _device_text)
    show.add_argument("id")
    create = _command(group, "create", common, "register a device (SAS keys are generated unless given)",
                      _device_create, _device_text)
    create.add_argument("id")
    create.add_argument("--primary-key", help="base64 key (default: generated)")
    create.add_argument("--secondary-key", help="base64 key (default: generated)")
    create.add_argument("--x509-thumbprint", metavar="HEX", help="self-signed X.509 device: its thumbprint")
    create.add_argument("--secondary-thumbprint", metavar="HEX")
    create.add_argument("--ca-signed", action="store_true", help="X.509 device whose certificate a trusted CA signs")
    create.add_argument("--disabled", action="store_true", help="create it disabled")
    create.add_argument("--edge", action="store_true", help="an IoT Edge device")
    delete = _command(group, "delete", common, "delete a device (with its twin and queued C2D)",
                      lambda c, a: c.request("DELETE", f"/devices/{a.id}") or {"deleted": a.id},
                      lambda r: f"deleted {r['deleted']}")
    delete.add_argument("id")
    for name, status in (("enable", "enabled"), ("disable", "disabled")):
        cmd = _command(group, name, common, f"{name} a device",
                       lambda c, a, s=status: _device_status(c, a, s), _device_text)
        cmd.add_argument("id")
        cmd.add_argument("--reason", default="", help="status reason")
    cs = _command(group, "connection-string", common, "print the device's connection string",
                  _device_connection_string, lambda r: r["connectionString"])
    cs.add_argument("id")


def _device_text(d: dict) -> str:
    auth = d["authentication"]
    lines = [_kv(d, ["deviceId", "status", "statusReason", "connectionState", "lastActivityTime",
                     "cloudToDeviceMessageCount", "etag"]), f"authentication: {auth['type']}"]
    if auth["type"] == "sas":
        lines.append(f"primaryKey: {auth['symmetricKey']['primaryKey']}")
    elif auth["x509Thumbprint"].get("primaryThumbprint"):
        lines.append(f"primaryThumbprint: {auth['x509Thumbprint']['primaryThumbprint']}")
    return "\n".join(lines)


def _device_create(client: ServiceClient, args: argparse.Namespace) -> Any:
    auth: dict[str, Any] = {"type": "sas"}
    if args.x509_thumbprint:
        auth = {"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": args.x509_thumbprint,
                                                          "secondaryThumbprint": args.secondary_thumbprint}}
    elif args.ca_signed:
        auth = {"type": "certificateAuthority"}
    elif args.primary_key or args.secondary_key:
        auth["symmetricKey"] = {"primaryKey": args.primary_key, "secondaryKey": args.secondary_key}
    body = {"deviceId": args.id, "status": "disabled" if args.disabled else "enabled", "authentication": auth,
            "capabilities": {"iotEdge": args.edge}}
    return client.request("PUT", f"/devices/{args.id}", body)


def _device_status(client: ServiceClient, args: argparse.Namespace, status: str) -> Any:
    current = client.request("GET", f"/devices/{args.id}")
    body = {**current, "status": status, "statusReason": args.reason}
    # If-Match tells the registry this PUT updates the device (without it, PUT creates one).
    return client.request("PUT", f"/devices/{args.id}", body, headers={"If-Match": f'"{current["etag"]}"'})


def _device_connection_string(client: ServiceClient, args: argparse.Namespace) -> Any:
    device = client.request("GET", f"/devices/{args.id}")
    key = device["authentication"]["symmetricKey"].get("primaryKey")
    if device["authentication"]["type"] != "sas" or not key:
        raise ValueError(f"device {args.id!r} authenticates with X.509; it has no connection string key")
    host = client.target.host.split(":")[0]
    return {"connectionString": f"HostName={host};DeviceId={args.id};SharedAccessKey={key}"}


# --- DPS enrollments --------------------------------------------------------------------------------------------

def _enrollments(sub: Any, common: argparse.ArgumentParser) -> None:
    group = _group(sub, "enrollments", "DPS individual enrollments and enrollment groups")

    def base(a: argparse.Namespace) -> str:
        return "/enrollmentGroups" if a.group else "/enrollments"

    listing = _command(group, "list", common, "list enrollments", lambda c, a: c.request("GET", base(a)),
                       _enrollment_table)
    listing.add_argument("--group", action="store_true", help="enrollment groups instead of individual ones")
    show = _command(group, "show", common, "show one enrollment",
                    lambda c, a: c.request("GET", f"{base(a)}/{a.id}"), _enrollment_text)
    create = _command(group, "create", common, "create or replace an enrollment", _enrollment_create,
                      _enrollment_text)
    delete = _command(group, "delete", common, "delete an enrollment",
                      lambda c, a: c.request("DELETE", f"{base(a)}/{a.id}") or {"deleted": a.id},
                      lambda r: f"deleted {r['deleted']}")
    for cmd in (show, create, delete):
        cmd.add_argument("id", help="registration id (individual) or group id (--group)")
        cmd.add_argument("--group", action="store_true", help="an enrollment group")
    create.add_argument("--attestation", choices=("symmetricKey", "x509", "tpm"), default="symmetricKey")
    create.add_argument("--primary-key", help="symmetricKey: base64 key (default: generated)")
    create.add_argument("--certificate", type=Path, help="x509: PEM file (device certificate, or a group's CA)")
    create.add_argument("--endorsement-key", help="tpm: the EK public part, base64")
    create.add_argument("--device-id", help="individual: the device id to create (default: the registration id)")
    create.add_argument("--hub", action="append", default=[], help="hub host name it may use (repeatable)")
    create.add_argument("--allocation", choices=("hashed", "static", "custom", "geoLatency"), default="hashed")
    create.add_argument("--desired", help="initial twin desired properties (JSON object)")
    create.add_argument("--tags", help="initial twin tags (JSON object)")
    create.add_argument("--disabled", action="store_true", help="provisioning status disabled")


def _enrollment_table(items: list) -> str:
    if not items:
        return "no enrollments"
    return _table([[e.get("registrationId") or e.get("enrollmentGroupId"), e["attestation"]["type"],
                    e["provisioningStatus"], e["allocationPolicy"], ",".join(e["iotHubs"]) or "(any)"]
                   for e in items], ["ENROLLMENT", "ATTESTATION", "STATUS", "ALLOCATION", "HUBS"])


def _enrollment_text(e: dict) -> str:
    text = _kv(e, ["registrationId", "enrollmentGroupId", "deviceId", "provisioningStatus", "allocationPolicy",
                   "iotHubs", "initialTwin", "etag"])
    att = e["attestation"]
    text += f"\nattestation: {att['type']}"
    if att["type"] == "symmetricKey":
        text += f"\nprimaryKey: {att['symmetricKey']['primaryKey']}"
    return text


def _enrollment_create(client: ServiceClient, args: argparse.Namespace) -> Any:
    attestation: dict[str, Any] = {"type": args.attestation}
    if args.attestation == "symmetricKey":
        attestation["symmetricKey"] = {"primaryKey": args.primary_key}
    elif args.attestation == "x509":
        if not args.certificate:
            raise ValueError("x509 enrollments need --certificate FILE (PEM)")
        try:
            pem = args.certificate.read_text()
        except OSError as exc:
            raise ValueError(f"cannot read {args.certificate}: {exc.strerror}") from None
        slot = "signingCertificates" if args.group else "clientCertificates"
        attestation["x509"] = {slot: {"primary": {"certificate": pem}}}
    else:
        if not args.endorsement_key:
            raise ValueError("tpm enrollments need --endorsement-key (base64 EK public part)")
        attestation["tpm"] = {"endorsementKey": args.endorsement_key}
    body: dict[str, Any] = {"attestation": attestation, "iotHubs": args.hub, "allocationPolicy": args.allocation,
                            "provisioningStatus": "disabled" if args.disabled else "enabled"}
    if args.device_id and not args.group:
        body["deviceId"] = args.device_id
    if args.desired or args.tags:
        body["initialTwin"] = {"tags": _json_arg(args.tags, "--tags") if args.tags else {},
                               "properties": {"desired": _json_arg(args.desired, "--desired") if args.desired
                                              else {}}}
    path = f"/enrollmentGroups/{args.id}" if args.group else f"/enrollments/{args.id}"
    return client.request("PUT", path, body)


# --- twins and methods ------------------------------------------------------------------------------------------

def _twin(sub: Any, common: argparse.ArgumentParser) -> None:
    group = _group(sub, "twin", "device twins")
    show = _command(group, "show", common, "show a device twin", lambda c, a: c.request("GET", f"/twins/{a.id}"),
                    _twin_text)
    show.add_argument("id")
    desired = _command(group, "desired", common, "patch desired properties (JSON merge patch; null removes)",
                       lambda c, a: c.request("PATCH", f"/twins/{a.id}",
                                              {"properties": {"desired": _object_arg(a.patch, "the patch")}}),
                       _twin_text)
    desired.add_argument("id")
    desired.add_argument("patch", help="JSON object, e.g. '{\"interval\": 10}'")
    tags = _command(group, "tags", common, "patch tags (JSON merge patch)",
                    lambda c, a: c.request("PATCH", f"/twins/{a.id}", {"tags": _object_arg(a.patch, "the patch")}),
                    _twin_text)
    tags.add_argument("id")
    tags.add_argument("patch", help="JSON object, e.g. '{\"site\": \"lab\"}'")


def _object_arg(text: str, what: str) -> dict:
    value = _json_arg(text, what)
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object, e.g. '{{\"interval\": 10}}'")
    return value


def _twin_text(t: dict) -> str:
    return "\n".join([f"deviceId: {t['deviceId']}  ({t['connectionState']}, twin version {t['version']})",
                      f"tags: {json.dumps(t['tags'])}",
                      f"desired: {json.dumps(t['properties']['desired'])}",
                      f"reported: {json.dumps(t['properties']['reported'])}"])


def _invoke(sub: Any, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("invoke", help="invoke a direct method on a connected device", parents=[common])
    parser.add_argument("id")
    parser.add_argument("method")
    parser.add_argument("payload", nargs="?", default="null", help="JSON payload (default null)")
    parser.add_argument("--timeout", type=int, default=30, help="response timeout, s (5-300, default 30)")
    parser.add_argument("--connect-timeout", type=int, default=0,
                        help="how long to wait for the device to connect, s (default 0: fail at once)")
    parser.set_defaults(func=lambda args: _run(args, _invoke_action, _method_text))


def _invoke_action(client: ServiceClient, args: argparse.Namespace) -> Any:
    body = {"methodName": args.method, "payload": _json_arg(args.payload, "the payload"),
            "responseTimeoutInSeconds": args.timeout, "connectTimeoutInSeconds": args.connect_timeout}
    return client.request("POST", f"/twins/{args.id}/methods", body,
                          timeout=args.timeout + args.connect_timeout + 15)


def _method_text(result: dict) -> str:
    return f"status {result['status']}\n{json.dumps(result['payload'], indent=2)}"


# --- cloud-to-device ------------------------------------------------------------------------------------------

def _c2d(sub: Any, common: argparse.ArgumentParser) -> None:
    group = _group(sub, "c2d", "cloud-to-device messages")
    send = _command(group, "send", common, "queue a message for a device", _c2d_send,
                    lambda m: f"queued {m['messageId']} for {m['deviceId']} ({len(m['bodyBase64']) * 3 // 4} bytes)")
    send.add_argument("id")
    send.add_argument("body", help="message text")
    send.add_argument("-p", "--property", action="append", default=[], metavar="K=V", help="application property")
    send.add_argument("--message-id")
    send.add_argument("--correlation-id")
    send.add_argument("--ack", choices=("none", "positive", "negative", "full"), default="none",
                      help="delivery feedback to record")
    send.add_argument("--ttl", type=float, default=3600, help="seconds before it expires undelivered")
    pending = _command(group, "list", common, "messages still queued for a device",
                       lambda c, a: c.request("GET", f"/roost/devices/{a.id}/c2d"),
                       lambda ms: _table([[m["messageId"], m["state"], m["deliveryCount"], m["body"]] for m in ms],
                                         ["MESSAGE", "STATE", "DELIVERIES", "BODY"]) if ms else "queue empty")
    pending.add_argument("id")
    purge = _command(group, "purge", common, "drop every queued message of a device",
                     lambda c, a: c.request("DELETE", f"/roost/devices/{a.id}/c2d"),
                     lambda r: f"purged {r['totalMessagesPurged']} message(s) of {r['deviceId']}")
    purge.add_argument("id")
    feedback = _command(group, "feedback", common, "delivery feedback records",
                        lambda c, a: c.request("GET", "/roost/feedback", params={"since": a.since}),
                        lambda r: _table([[f["seq"], f["originalMessageId"], f["deviceId"], f["statusCode"]]
                                          for f in r["records"]], ["SEQ", "MESSAGE", "DEVICE", "STATUS"])
                        if r["records"] else "no feedback")
    feedback.add_argument("--since", type=int, default=0)


def _c2d_send(client: ServiceClient, args: argparse.Namespace) -> Any:
    properties = {}
    for item in args.property:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"property {item!r} must be KEY=VALUE")
        properties[key] = value
    body: dict[str, Any] = {"body": args.body, "properties": properties, "ack": args.ack, "ttlSeconds": args.ttl}
    if args.message_id:
        body["messageId"] = args.message_id
    if args.correlation_id:
        body["correlationId"] = args.correlation_id
    return client.request("POST", f"/roost/devices/{args.id}/c2d", body)


# --- telemetry ------------------------------------------------------------------------------------------------

def _telemetry(sub: Any, common: argparse.ArgumentParser) -> None:
    group = _group(sub, "telemetry", "device-to-cloud messages the hub received")
    tail = group.add_parser("tail", help="print messages (oldest first); --follow waits for new ones",
                            parents=[common])
    tail.add_argument("--follow", "-f", action="store_true", help="keep waiting for new messages (Ctrl-C stops)")
    tail.add_argument("--count", type=int, help="stop after this many messages")
    tail.add_argument("--timeout", type=float, help="with --follow: stop after this many seconds")
    export = group.add_parser("export", help="write every stored message as JSON lines", parents=[common])
    export.add_argument("-o", "--output", type=Path, help="file to write (default: standard output)")
    for parser in (tail, export):
        parser.add_argument("--device", help="only this device's messages")
        parser.add_argument("--since", default="0", help="after this seq; 'latest' for only new ones (default 0)")
    tail.set_defaults(func=lambda args: _run(args, _tail, None))
    export.set_defaults(func=lambda args: _run(args, _export, None))


def _since(text: str) -> str:
    if text not in ("latest", "end") and not text.isdigit():
        raise ValueError(f"--since {text!r} must be a seq number or 'latest'")
    return text


def _message_line(m: dict) -> str:
    body = m["body"]
    if body is None:
        body = f"<binary, base64 {m['bodyBase64'][:60]}{'...' if len(m['bodyBase64']) > 60 else ''}>"
    elif not body.isprintable():
        body = json.dumps(body)    # control characters and line breaks stay on one visible line
    props = f"  {json.dumps(m['properties'])}" if m["properties"] else ""
    return f"#{m['seq']} {m['enqueuedTime']} {m['deviceId']}: {body}{props}"


def _tail(client: ServiceClient, args: argparse.Namespace) -> int:
    since: Any = _since(args.since)
    seen = 0
    deadline = time.monotonic() + args.timeout if args.timeout else None
    while True:
        wait = 20.0 if args.follow else 0.0
        if deadline is not None:
            wait = max(0.0, min(wait, deadline - time.monotonic()))
        page = client.request("GET", "/roost/telemetry", params={"device": args.device, "since": since,
                                                                 "limit": 100, "wait": wait}, timeout=wait + 30)
        for message in page["messages"]:
            print(json.dumps(message) if args.json else _message_line(message), flush=True)
            seen += 1
            if args.count is not None and seen >= args.count:
                return 0
        since = page["next"]
        if not page["messages"] and (not args.follow or (deadline is not None and time.monotonic() >= deadline)):
            return 0


def _export(client: ServiceClient, args: argparse.Namespace) -> int:
    since: Any = _since(args.since)
    out: TextIO = sys.stdout
    try:
        if args.output:
            out = args.output.open("w")
    except OSError as exc:
        raise ValueError(f"cannot write {args.output}: {exc.strerror}") from None
    count = 0
    try:
        while True:
            page = client.request("GET", "/roost/telemetry", params={"device": args.device, "since": since,
                                                                     "limit": 1000})
            for message in page["messages"]:
                out.write(json.dumps(message) + "\n")
            count += len(page["messages"])
            if not page["messages"]:
                break
            since = page["next"]
    finally:
        if out is not sys.stdout:
            out.close()
    if args.output:
        print(f"exported {count} message(s) to {args.output}", file=sys.stderr)
    return 0


# --- connections, metering, files ------------------------------------------------------------------------------

def _simple(sub: Any, common: argparse.ArgumentParser) -> None:
    _command(sub, "connections", common, "connection state of every device",
             lambda c, a: c.request("GET", "/roost/connections"),
             lambda r: _table([[d["deviceId"], d["connectionState"], d["lastActivityTime"],
                                "yes" if d["viaGateway"] else ""] for d in r["devices"]],
                              ["DEVICE", "STATE", "LAST ACTIVITY", "VIA GATEWAY"]) if r["devices"] else "no devices")
    metering = _command(sub, "metering", common, "today's (or --day's) counters and the hub's quotas",
                        lambda c, a: c.request("GET", "/roost/metering", params={"day": a.day}),
                        lambda r: f"day {r['day']} (UTC)\n" + "\n".join(
                            f"  {k}: {v}" for k, v in sorted(r["counters"].items())) + "\nquotas:\n" + "\n".join(
                            f"  {k}: {'unlimited' if v is None else v}" for k, v in r["quotas"].items()))
    metering.add_argument("--day", help="YYYY-MM-DD (UTC)")
    files = _command(sub, "files", common, "file uploads and the blobs they stored",
                     lambda c, a: c.request("GET", "/roost/files", params={"device": a.device}),
                     lambda r: _table([[u["deviceId"], u["blobName"], u["state"], u["statusCode"]]
                                       for u in r["uploads"]], ["DEVICE", "BLOB", "STATE", "STATUS"])
                     if r["uploads"] else "no file uploads")
    files.add_argument("--device")
    _command(sub, "service-info", common, "the service API's URL and iothubowner connection string",
             lambda c, a: {"url": c.target.url, "hostName": c.target.host, "rootCa": c.target.ca_file,
                           "connectionString": f"HostName={c.target.host};SharedAccessKeyName={c.target.key_name};"
                                               f"SharedAccessKey={c.target.key}"},
             lambda r: f"url: {r['url']}\nroot CA: {r['rootCa']}\nconnection string: {r['connectionString']}")


# --- faults ---------------------------------------------------------------------------------------------------

def _faults(sub: Any, common: argparse.ArgumentParser) -> None:
    group = _group(sub, "fault", "inject faults into device connections (the SDK sees them)")

    def inject(kind: str, body: Callable[[argparse.Namespace], dict]) -> Callable:
        return lambda c, a: c.request("POST", f"/roost/faults/{kind}", body(a))

    cmd = _command(group, "drop", common, "close a device's connection now", inject("drop", _device_body),
                   _fault_text)
    cmd.add_argument("id")
    cmd = _command(group, "expire-token", common, "disconnect a device as if its SAS token expired",
                   inject("expire-token", _device_body), _fault_text)
    cmd.add_argument("id")
    cmd = _command(group, "withhold-puback", common, "store but do not acknowledge a device's next messages",
                   inject("withhold-puback", lambda a: {"deviceId": a.id, "count": a.count}), _fault_text)
    cmd.add_argument("id")
    cmd.add_argument("--count", type=int, default=1)
    cmd = _command(group, "delay", common, "delay every reply to a device (or all devices); 0 clears",
                   inject("delay", lambda a: {"deviceId": a.device, "seconds": a.seconds}), _fault_text)
    cmd.add_argument("seconds", type=float)
    cmd.add_argument("--device", help="only this device (default: every device)")
    cmd = _command(group, "throttle", common, "limit device-to-cloud messages per second (hub-wide); 'off' clears",
                   inject("throttle", lambda a: {"d2cPerSecond": _rate(a.rate), "burst": a.burst}), _fault_text)
    cmd.add_argument("rate", help="messages per second, or off")
    cmd.add_argument("--burst", type=int, help="messages allowed at once (default: one second's worth)")
    cmd = _command(group, "quota", common, "daily quota of 4 KB message units; 'off' clears",
                   inject("quota", lambda a: {"dailyMessageUnits": _rate(a.units, integer=True)}), _fault_text)
    cmd.add_argument("units", help="message units per UTC day, or off")
    cmd = _command(group, "refuse", common, "refuse connections (CONNACK 3) of a device or all devices",
                   inject("refuse", lambda a: {"deviceId": a.device, "count": a.count}), _fault_text)
    cmd.add_argument("--device", help="only this device (default: every device)")
    cmd.add_argument("--count", type=int, help="refuse this many attempts (default: until cleared)")
    _command(group, "list", common, "faults in effect", lambda c, a: c.request("GET", "/roost/faults"), _fault_text)
    _command(group, "clear", common, "clear every fault and restore the hub's quotas",
             lambda c, a: c.request("DELETE", "/roost/faults"), _fault_text)


def _device_body(args: argparse.Namespace) -> dict:
    return {"deviceId": args.id}


def _rate(text: str, integer: bool = False) -> Any:
    if text.lower() in ("off", "none", "0"):
        return None
    try:
        return int(text) if integer else float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number (or 'off')") from None


def _fault_text(f: dict) -> str:
    lines = []
    shown = [("withheldPubacks", "withheld PUBACKs"), ("delays", "reply delays (s)"),
             ("refusals", "refused connections")]
    if f.get("delays"):   # replies released by a cleared delay leave a moment later: not worth showing
        shown.insert(2, ("heldReplies", "replies held by a delay now"))
    for key, label in shown:
        if f.get(key):
            lines.append(f"{label}: " + ", ".join(f"{k}={'until cleared' if v is None else v}"
                                                   for k, v in f[key].items()))
    limits = {k: v for k, v in f["quotas"].items() if v is not None and k != "maxMessageBytes"}
    if limits:
        lines.append("limits: " + ", ".join(f"{k}={v}" for k, v in limits.items()))
    return "\n".join(lines) or "no faults in effect"
