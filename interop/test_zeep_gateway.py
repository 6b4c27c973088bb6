"""zeep against the real duo-gateway process only (conftest.py `gateway_endpoint`): what only a gateway does —
fan-out to its communities, routing rules, and mutual TLS with the client certificate deciding who may use
which side.
"""

import pytest
import requests
import zeep
from zeep.transports import Transport

from conftest import HOME, PATIENT2, REMOTE_HOME, entry
from test_zeep_ihe import APPROVED, FIND_DOCUMENTS, GET_DOCUMENTS, SUCCESS, FAILURE, TRANSACTIONS, members, slot


def service(testdata, gw, tx, session):
    wsdl, binding, op = TRANSACTIONS[tx]
    c = zeep.Client(str(testdata / "ihe/schema" / wsdl), settings=zeep.Settings(strict=False),
                    transport=Transport(session=session))
    return c, getattr(c.create_service(binding, gw.url_for(tx)), op)


def test_iti18_fans_out_to_the_own_and_the_remote_community(testdata, gateway_endpoint):
    gw = gateway_endpoint
    c, call = service(testdata, gw, "ITI-18", gw.session_for("ITI-18"))
    resp = call(
        ResponseOption={"returnType": "LeafClass", "returnComposedObjects": True},
        AdhocQuery={"id": FIND_DOCUMENTS, "Slot": [
            slot("$XDSDocumentEntryPatientId", f"'{PATIENT2}'"),
            slot("$XDSDocumentEntryStatus", f"('{APPROVED}')"),
        ]},
    )
    assert resp.status == SUCCESS
    got = sorted((eo.id, eo.home) for _, eo in members(c, resp.RegistryObjectList))
    # the own community's entry gets this gateway's home; the remote one keeps its community's
    assert got == sorted([(entry(10)["entryUuid"], HOME), (entry(11)["entryUuid"], REMOTE_HOME)])


def test_iti18_unknown_community_is_not_asked(testdata, gateway_endpoint):
    gw = gateway_endpoint
    c, call = service(testdata, gw, "ITI-18", gw.session_for("ITI-18"))
    resp = call(
        ResponseOption={"returnType": "LeafClass", "returnComposedObjects": True},
        AdhocQuery={"id": GET_DOCUMENTS, "home": "urn:oid:1.2.555.6.7.8",
                    "Slot": [slot("$XDSDocumentEntryUniqueId", "('1.2.3.4.5')")]},
    )
    assert resp.status == FAILURE
    assert [(e.errorCode, e.location) for e in resp.RegistryErrorList.RegistryError] == [
        ("XDSUnknownCommunity", "urn:oid:1.2.555.6.7.8")
    ]


def test_iti38_for_another_community_is_refused_with_xds_unknown_community(testdata, gateway_endpoint):
    gw = gateway_endpoint
    c, call = service(testdata, gw, "ITI-38", gw.session_for("ITI-38"))
    resp = call(
        ResponseOption={"returnType": "LeafClass", "returnComposedObjects": True},
        AdhocQuery={"id": GET_DOCUMENTS, "home": REMOTE_HOME,
                    "Slot": [slot("$XDSDocumentEntryUniqueId", "('1.2.3.4.5')")]},
    )
    assert resp.status == FAILURE
    assert [e.errorCode for e in resp.RegistryErrorList.RegistryError] == ["XDSUnknownCommunity"]


def test_a_remote_gateway_may_not_use_the_initiating_side(testdata, gateway_endpoint):
    """The remote community's certificate is not a local consumer: the gateway answers a SOAP fault."""
    gw = gateway_endpoint
    c, call = service(testdata, gw, "ITI-18", gw.session_for("ITI-38"))
    with pytest.raises(zeep.exceptions.Fault) as f:
        call(
            ResponseOption={"returnType": "LeafClass", "returnComposedObjects": True},
            AdhocQuery={"id": FIND_DOCUMENTS, "Slot": [
                slot("$XDSDocumentEntryPatientId", f"'{PATIENT2}'"),
                slot("$XDSDocumentEntryStatus", f"('{APPROVED}')"),
            ]},
        )
    assert "may not use the initiating gateway" in f.value.message


def test_no_client_certificate_no_connection(testdata, gateway_endpoint):
    gw = gateway_endpoint
    anonymous = requests.Session()
    anonymous.trust_env = False
    anonymous.verify = gw.bed["ca"]
    c, call = service(testdata, gw, "ITI-38", anonymous)
    with pytest.raises(requests.exceptions.RequestException):
        call(
            ResponseOption={"returnType": "ObjectRef", "returnComposedObjects": True},
            AdhocQuery={"id": FIND_DOCUMENTS, "home": HOME, "Slot": [
                slot("$XDSDocumentEntryPatientId", f"'{PATIENT2}'"),
                slot("$XDSDocumentEntryStatus", f"('{APPROVED}')"),
            ]},
        )


def test_an_untrusted_gateway_certificate_is_refused(testdata, gateway_endpoint):
    """zeep verifies the gateway's certificate: without the test CA the handshake fails."""
    gw = gateway_endpoint
    s = requests.Session()
    s.trust_env = False
    s.cert = gw.session_for("ITI-38").cert
    s.verify = True  # the default CAs, which do not know the test CA
    c, call = service(testdata, gw, "ITI-38", s)
    with pytest.raises(requests.exceptions.SSLError):
        call(
            ResponseOption={"returnType": "ObjectRef", "returnComposedObjects": True},
            AdhocQuery={"id": FIND_DOCUMENTS, "home": HOME, "Slot": [
                slot("$XDSDocumentEntryPatientId", f"'{PATIENT2}'"),
                slot("$XDSDocumentEntryStatus", f"('{APPROVED}')"),
            ]},
        )


def test_unsigned_assertions_are_allowed_only_by_the_visible_harness_switch(gateway_endpoint):
    # zeep sends no (signed) XUA assertion: this test bed accepts that only because its configuration
    # says so (xua.allowUnsigned, duo-testbed), and the gateway shows it on /metrics
    ops = requests.Session()
    ops.trust_env = False
    text = ops.get(f"http://{gateway_endpoint.bed['ops']}/metrics", timeout=10).text
    values = [l.split()[-1] for l in text.splitlines() if l.startswith("duo_xua_unsigned_allowed")]
    assert values == ["1"], text
