"""Interop harness: python zeep (an independent SOAP stack, loaded with the IHE WSDLs of testdata/ihe/schema)
talks to the duo IHE codec over real HTTP.

Until the gateway server exists, the server side is a small HTTP server here that hands each request body to
`ihe-codec respond` (runtime/src/bin/ihe-codec.rs): the codec decodes what zeep built and encodes the answer
zeep parses. Point DUO_IHE_ENDPOINT at a running gateway later to run the same tests against it.
"""

import base64
import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _require(cond, msg):
    if not cond:
        pytest.fail(msg, pytrace=False)


@pytest.fixture(scope="session")
def testdata() -> Path:
    p = Path(os.environ.get("DUO_TESTDATA", ROOT / "testdata"))
    _require((p / "ihe/schema/iti38.wsdl").is_file(), f"IHE WSDLs not found under {p} (set DUO_TESTDATA)")
    return p


@pytest.fixture(scope="session")
def codec_bin() -> str:
    b = os.environ.get("DUO_IHE_CODEC_BIN")
    if not b:
        target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
        b = str(Path(target) / "release" / "ihe-codec")
    _require(os.access(b, os.X_OK), f"{b} missing: run scripts/interop.sh (cargo build --release --bin ihe-codec)")
    return b


def document(uid: str, repo: str, content: bytes, mime="application/dicom") -> dict:
    return {
        "repositoryUniqueId": repo,
        "documentUniqueId": uid,
        "mimeType": mime,
        "contentBase64": base64.b64encode(content).decode(),
    }


def entry(i: int) -> dict:
    """A KOS manifest DocumentEntry in the model's JSON form (duo_runtime::model::DocumentEntry)."""
    return {
        "entryUuid": f"urn:uuid:7d1c2b4e-0000-4000-8000-{i:012d}",
        "uniqueId": f"1.2.826.0.1.3680043.10.511.3.{i}",
        "repositoryUniqueId": "1.3.6.1.4.1.21367.13.71.201.1",
        "patientId": "999911120^^^&2.16.840.1.113883.2.4.6.3&ISO",
        "status": "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved",
        "mimeType": "application/dicom",
        "title": f"CT thorax {i} — contrast & <spoed>",
        "classCode": {"code": "IMAGES", "scheme": "2.16.840.1.113883.2.4.3.111.5.10.1", "display": "Beelden"},
        "formatCode": {"code": "1.2.840.10008.5.1.4.1.1.88.59", "scheme": "1.2.840.10008.2.6.1", "display": "KOS"},
        "eventCodes": [{"code": "CT", "scheme": "DCM", "display": "Computed Tomography"}],
        "creationTime": "20240115093000",
        "serviceStartTime": "20240115090000",
        "size": 1000 + i,
        "referenceIds": [
            {"id": f"ACC{i}", "assigning_authority": "&1.2.3.4&ISO", "id_type": "urn:ihe:iti:xds:2013:accession"},
            {"id": f"1.2.826.0.1.3680043.10.511.1.{i}", "id_type": "urn:ihe:iti:xds:2016:studyInstanceUID"},
        ],
    }


HOME = "urn:oid:1.3.6.1.4.1.21367.13.70.201"
REPO = "1.3.6.1.4.1.21367.13.71.201.2"


def dicom_like(i: int, size: int) -> bytes:
    """Binary content with CR/LF and boundary-like bytes inside (zeep strips CR/LF at the ends only)."""
    body = bytes((i * 31 + j * 7) % 256 for j in range(size))
    return b"DICM" + body.replace(b"\r", b"\x00") + b"\r\n--MIMEBoundary\r\n" + body + b"X"


@pytest.fixture(scope="session")
def fixture_data():
    return {
        "home": HOME,
        "entries": [entry(i) for i in range(3)],
        "documents": [document(f"1.2.826.0.1.3680043.10.511.4.{i}", REPO, dicom_like(i, 40_000 + i)) for i in range(4)],
    }


class Endpoint:
    def __init__(self, url, dumps):
        self.url = url
        self.dumps = dumps  # decoded requests, in order


@pytest.fixture(scope="session")
def endpoint(tmp_path_factory, codec_bin, fixture_data):
    ext = os.environ.get("DUO_IHE_ENDPOINT")
    if ext:
        yield Endpoint(ext, None)
        return
    tmp = tmp_path_factory.mktemp("ihe")
    fx = tmp / "fixture.json"
    fx.write_text(json.dumps(fixture_data))
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
    yield Endpoint(f"http://127.0.0.1:{srv.server_address[1]}/ihe", dumps)
    srv.shutdown()
