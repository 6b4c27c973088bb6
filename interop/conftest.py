"""Interop harness: python zeep (an independent SOAP stack, loaded with the IHE WSDLs of testdata/ihe/schema)
talks over real HTTP to two targets; every test in `test_zeep_ihe.py` runs against both:

- `codec`: a small HTTP server here hands each request body to `ihe-codec respond` (runtime/testkit/src/bin/ihe-codec.rs):
  the codec decodes what zeep built (the decoded form is checked against what zeep was given) and encodes
  the answer zeep parses.
- `gateway`: a real `duo-gateway serve` process, over mutual TLS. `duo-testbed interop`
  (runtime/testkit/src/bin/duo-testbed.rs) writes its PKI and configuration and runs its communities: the hospital's
  own XDS-I.b affinity domain (seeded with this fixture's entries, documents and instances) and a remote
  TLB node. zeep acts as a document consumer of the hospital (ITI-18 / ITI-43 / RAD-69 to the initiating
  gateway, presenting a trusted front end's client certificate) and as a remote initiating gateway (ITI-38 /
  ITI-39 / RAD-75 to the responding gateway, presenting the remote community's certificate); a requests
  Session carries the client certificate and verifies the gateway's against the test CA.

`scripts/interop.sh` builds the binaries and exports DUO_GATEWAY_BIN, DUO_TESTBED_BIN and DUO_IHE_CODEC_BIN.
DUO_IHE_ENDPOINT points the `codec` target at another server instead (decoded requests are then not checked).
"""

import base64
import json
import os
import select
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent


def _require(cond, msg):
    if not cond:
        pytest.fail(msg, pytrace=False)


def _binary(env: str, name: str) -> str:
    b = os.environ.get(env)
    if not b:
        target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
        b = str(Path(target) / "release" / name)
    _require(os.access(b, os.X_OK), f"{b} missing: run scripts/interop.sh (cargo build --release --bin {name})")
    return b


@pytest.fixture(scope="session")
def testdata() -> Path:
    p = Path(os.environ.get("DUO_TESTDATA", ROOT / "testdata"))
    _require((p / "ihe/schema/iti38.wsdl").is_file(), f"IHE WSDLs not found under {p} (set DUO_TESTDATA)")
    return p


def document(uid: str, repo: str, content: bytes, mime="application/dicom") -> dict:
    return {
        "repositoryUniqueId": repo,
        "documentUniqueId": uid,
        "mimeType": mime,
        "contentBase64": base64.b64encode(content).decode(),
    }


PATIENT = "999911120^^^&2.16.840.1.113883.2.4.6.3&ISO"
# a second patient (valid BSN) whose studies are in the hospital's own community and the remote one
PATIENT2 = "900186021^^^&2.16.840.1.113883.2.4.6.3&ISO"


def entry(i: int, patient: str = PATIENT) -> dict:
    """A KOS manifest DocumentEntry in the model's JSON form (duo_runtime::model::DocumentEntry)."""
    return {
        "entryUuid": f"urn:uuid:7d1c2b4e-0000-4000-8000-{i:012d}",
        "uniqueId": f"1.2.826.0.1.3680043.10.511.3.{i}",
        "repositoryUniqueId": "1.3.6.1.4.1.21367.13.71.201.1",
        "patientId": patient,
        "status": "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved",
        "mimeType": "application/dicom",
        "title": f"CT thorax {i} — contrast & <spoed>",
        "classCode": {"code": "IMAGES", "scheme": "2.16.840.1.113883.2.4.3.111.5.10.1", "display": "Beelden"},
        "formatCode": {"code": "1.2.840.10008.5.1.4.1.1.88.59", "scheme": "1.2.840.10008.2.6.1", "display": "KOS"},
        "eventCodes": [
            {"code": "CT", "scheme": "DCM", "display": "Computed Tomography"},
            {"code": "T-D3000", "scheme": "SRT", "display": "Chest"},
        ],
        "creationTime": "20240115093000",
        "serviceStartTime": "20240115090000",
        "size": 1000 + i,
        "referenceIds": [
            {"id": f"ACC{i}", "assigning_authority": "&1.2.3.4&ISO", "id_type": "urn:ihe:iti:xds:2013:accession"},
            {"id": f"1.2.826.0.1.3680043.10.511.1.{i}", "id_type": "urn:ihe:iti:xds:2016:studyInstanceUID"},
        ],
    }


HOME = "urn:oid:1.3.6.1.4.1.21367.13.70.201"
REMOTE_HOME = "urn:oid:1.3.6.1.4.1.21367.13.70.202"
REPO = "1.3.6.1.4.1.21367.13.71.201.2"
STUDY = "1.2.826.0.1.3680043.10.511.1.1"
SERIES = "1.2.826.0.1.3680043.10.511.2.1"


def dicom_like(i: int, size: int) -> bytes:
    """Binary content with CR/LF and boundary-like bytes inside (zeep strips CR/LF at the ends only)."""
    body = bytes((i * 31 + j * 7) % 256 for j in range(size))
    return b"DICM" + body.replace(b"\r", b"\x00") + b"\r\n--MIMEBoundary\r\n" + body + b"X"


@pytest.fixture(scope="session")
def fixture_data():
    docs = [document(f"1.2.826.0.1.3680043.10.511.4.{i}", REPO, dicom_like(i, 40_000 + i)) for i in range(4)]
    return {
        "home": HOME,
        "entries": [entry(i) for i in range(3)] + [entry(10, PATIENT2)],
        "documents": docs,
        # the same contents as instances of one study in an imaging document source (RAD-69 / RAD-75)
        "instances": [
            {
                "sourceUniqueId": REPO,
                "studyInstanceUid": STUDY,
                "seriesInstanceUid": SERIES,
                "sopInstanceUid": d["documentUniqueId"],
                "transferSyntaxUid": "1.2.840.10008.1.2.1",
                "contentBase64": d["contentBase64"],
            }
            for d in docs
        ],
        "remote": {"home": REMOTE_HOME, "entries": [{**entry(11, PATIENT2), "homeCommunityId": REMOTE_HOME}]},
    }


# the gateway's path and the client identity per transaction (initiating side: a local consumer; responding
# side: a remote initiating gateway)
GATEWAY_ROUTES = {
    "ITI-18": ("/xds/iti18", "consumer"),
    "ITI-43": ("/xds/iti43", "consumer"),
    "RAD-69": ("/xdsi/rad69", "consumer"),
    "ITI-38": ("/xca/iti38", "peer"),
    "ITI-39": ("/xca/iti39", "peer"),
    "RAD-75": ("/xcai/rad75", "peer"),
}


class Endpoint:
    def __init__(self, kind, url, dumps, sessions=None, bed=None):
        self.kind = kind  # "codec" or "gateway"
        self.url = url
        self.dumps = dumps  # decoded requests, in order (codec target only)
        self.sessions = sessions or {}
        self.bed = bed

    def url_for(self, tx):
        if self.kind == "gateway":
            return self.url + GATEWAY_ROUTES[tx][0]
        return self.url

    def session_for(self, tx):
        if self.kind == "gateway":
            return self.sessions[GATEWAY_ROUTES[tx][1]]
        return None


@pytest.fixture(scope="session")
def codec_endpoint(tmp_path_factory, fixture_data):
    ext = os.environ.get("DUO_IHE_ENDPOINT")
    if ext:
        yield Endpoint("codec", ext, None)
        return
    codec_bin = _binary("DUO_IHE_CODEC_BIN", "ihe-codec")
    tmp = tmp_path_factory.mktemp("ihe")
    fx = tmp / "fixture.json"
    # the codec answers every stored query with all of its entries: only those of PATIENT
    fx.write_text(json.dumps({**fixture_data, "entries": [e for e in fixture_data["entries"] if e["patientId"] == PATIENT]}))
    dumps = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(n)
            with lock:
                dump = tmp / f"dump{len(dumps)}.json"
                proc = subprocess.run(
                    [codec_bin, "respond", "--content-type", self.headers.get("Content-Type", ""),
                     "--fixture", str(fx), "--dump", str(dump)],
                    input=body, capture_output=True, check=False,
                )
                if proc.returncode != 0:
                    self.send_error(500, proc.stderr.decode(errors="replace"))
                    return
                dumps.append(json.loads(dump.read_text()))
            head, _, payload = proc.stdout.partition(b"\n\n")
            meta = dict(line.split(": ", 1) for line in head.decode().splitlines())
            self.send_response(int(meta["status"]))
            self.send_header("Content-Type", meta["content-type"])
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield Endpoint("codec", f"http://127.0.0.1:{srv.server_address[1]}/ihe", dumps)
    srv.shutdown()


def _read_line(stream, proc, deadline, what):
    """One line from a child's pipe, failing when the child exits or the deadline passes."""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], 0.2)
        if ready:
            line = stream.readline()
            if line:
                return line.decode(errors="replace")
        if proc.poll() is not None:
            rest = stream.read().decode(errors="replace") if stream else ""
            pytest.fail(f"{what} exited with {proc.returncode}: {rest}", pytrace=False)
    pytest.fail(f"{what} did not start in time", pytrace=False)


@pytest.fixture(scope="session")
def gateway_endpoint(tmp_path_factory, fixture_data):
    gateway_bin = _binary("DUO_GATEWAY_BIN", "duo-gateway")
    testbed_bin = _binary("DUO_TESTBED_BIN", "duo-testbed")
    tmp = tmp_path_factory.mktemp("gateway")
    fx = tmp / "fixture.json"
    fx.write_text(json.dumps(fixture_data))
    bed_proc = subprocess.Popen(
        [testbed_bin, "interop", "--dir", str(tmp), "--fixture", str(fx)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    gw = None
    try:
        bed = json.loads(_read_line(bed_proc.stdout, bed_proc, time.monotonic() + 60, "duo-testbed interop"))
        gw_log = open(tmp / "gateway.log", "wb")
        gw = subprocess.Popen(
            [gateway_bin, "serve", "--config", bed["config"]],
            stdin=subprocess.DEVNULL, stdout=gw_log, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        listen = None
        while listen is None:
            line = _read_line(gw.stderr, gw, deadline, "duo-gateway serve")
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            fields = rec.get("fields", {})
            if fields.get("message") == "duo-gateway serving":
                listen = fields["listen"]
                bed["ops"] = fields["ops"]
        # keep draining the gateway's log so it never blocks on a full pipe
        threading.Thread(target=lambda: [gw_log.write(x) for x in gw.stderr], daemon=True).start()
        port = listen.rsplit(":", 1)[1]
        sessions = {}
        for who in ("consumer", "peer"):
            s = requests.Session()
            # no REQUESTS_CA_BUNDLE / proxy from the environment: it would replace `verify` below
            s.trust_env = False
            s.cert = (bed[who]["cert"], bed[who]["key"])
            s.verify = bed["ca"]
            sessions[who] = s
        yield Endpoint("gateway", f"https://localhost:{port}", None, sessions, bed)
    finally:
        if gw is not None:
            gw.terminate()
            try:
                gw.wait(timeout=15)
            except subprocess.TimeoutExpired:
                gw.kill()
        bed_proc.stdin.close()
        try:
            bed_proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            bed_proc.kill()


@pytest.fixture(scope="session", params=["codec", "gateway"])
def endpoint(request):
    return request.getfixturevalue(f"{request.param}_endpoint")
