"""zeep (PyPI), loaded with the IHE WSDLs of testdata/ihe/schema, against the duo IHE codec (issue 2) and a
real duo-gateway process (issue 7); see conftest.py for the two targets.

Each test: zeep builds a request from Python values → the target decodes it (for the codec target the decoded
form is checked against those values) → the target answers (the codec from the fixture; the gateway from its
simulated communities, seeded with the same fixture) → zeep decodes the answer (checked against the fixture).

zeep has no support for XML Schema substitution groups, which ebRIM's RegistryObjectList uses
(`rim:Identifiable`). With `strict=False` zeep keeps those members as raw elements; each is then decoded
by zeep's own schema type for that element (`client.get_element(...).parse(...)`), so zeep still does the
decoding from the WSDL's schemas.
"""

import base64

import pytest
import zeep
from zeep.transports import Transport

from conftest import HOME, REPO, SERIES, STUDY, dicom_like, entry

RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
XDSB = "urn:ihe:iti:xds-b:2007"
XDSI = "urn:ihe:rad:xdsi-b:2009"
FIND_DOCUMENTS = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
GET_DOCUMENTS = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
PARTIAL = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"
PATIENT = "999911120^^^&2.16.840.1.113883.2.4.6.3&ISO"

TRANSACTIONS = {
    # transaction: (wsdl, binding, operation)
    "ITI-18": ("iti18.wsdl", f"{{{XDSB}}}DocumentRegistry_Binding_Soap12", "DocumentRegistry_RegistryStoredQuery"),
    "ITI-38": ("iti38.wsdl", f"{{{XDSB}}}RespondingGateway_Binding_Soap12", "RespondingGateway_CrossGatewayQuery"),
    "ITI-39": ("iti39.wsdl", f"{{{XDSB}}}RespondingGateway_Binding_Soap12", "RespondingGateway_CrossGatewayRetrieve"),
    "ITI-43": ("iti43.wsdl", f"{{{XDSB}}}DocumentRepository_Binding_Soap12", "DocumentRepository_RetrieveDocumentSet"),
    "RAD-69": ("rad69.wsdl", f"{{{XDSI}}}DocumentRepository_Binding_Soap12", "DocumentRepository_RetrieveImagingDocumentSet"),
    "RAD-75": ("rad75.wsdl", f"{{{XDSI}}}RespondingGateway_Binding_Soap12", "RespondingGateway_CrossGatewayRetrieveImagingDocumentSet"),
}


def client(testdata, endpoint, tx):
    wsdl, binding, op = TRANSACTIONS[tx]
    session = endpoint.session_for(tx)
    transport = Transport(session=session) if session is not None else None
    c = zeep.Client(str(testdata / "ihe/schema" / wsdl), settings=zeep.Settings(strict=False), transport=transport)
    return c, getattr(c.create_service(binding, endpoint.url_for(tx)), op)


def last_decoded(endpoint):
    """The request as the codec decoded it; None when the target does not show it (the gateway, or an
    external endpoint): then only the answer is checked."""
    if endpoint.dumps is None:
        return None
    return endpoint.dumps[-1]


def documents_home(endpoint, tx):
    """HomeCommunityId expected on DocumentResponses: the codec sets it for cross-gateway answers only;
    the gateway's initiating side also stamps the community a local document came from."""
    if endpoint.kind == "gateway" or tx in ("ITI-39", "RAD-75"):
        return HOME
    return None


def slot(name, *values):
    return {"name": name, "ValueList": {"_value_1": [{"Value": v} for v in values]}}


def members(c, registry_object_list):
    """RegistryObjectList members, each decoded by zeep's schema type for its element."""
    out = []
    for el in registry_object_list._raw_elements:
        out.append((el.tag.split("}")[1], c.get_element(el.tag).parse(el, c.wsdl.types)))
    return out


def code_slot(c, classification):
    for el in getattr(classification, "_raw_elements", None) or []:
        if el.tag == f"{{{RIM}}}Slot":
            s = c.get_element(el.tag).parse(el, c.wsdl.types)
            return [v["Value"] for v in s.ValueList._value_1]
    return [v.Value for s in (classification.Slot or []) for v in s.ValueList._value_1]


@pytest.mark.parametrize("tx", ["ITI-18", "ITI-38"])
def test_stored_query_leafclass(testdata, endpoint, tx):
    c, call = client(testdata, endpoint, tx)
    resp = call(
        ResponseOption={"returnType": "LeafClass", "returnComposedObjects": True},
        AdhocQuery={
            "id": FIND_DOCUMENTS,
            # the community without urn:oid: (accepted, canonical when decoded)
            "home": HOME.removeprefix("urn:oid:"),
            "Slot": [
                slot("$XDSDocumentEntryPatientId", f"'{PATIENT}'"),
                slot("$XDSDocumentEntryStatus", f"('{APPROVED}')"),
                slot("$XDSDocumentEntryEventCodeList", "('CT^^DCM','MR^^DCM')"),
                slot("$XDSDocumentEntryEventCodeList", "('T-D3000^^SRT')"),
            ],
        },
    )
    d = last_decoded(endpoint)
    if d is not None:
        assert d["header"]["transaction"] == tx
        assert d["header"]["messageId"].startswith("urn:uuid:")
        assert d["storedQuery"] == "FindDocuments"
        assert d["home"] == HOME
        assert d["returnType"] == "LeafClass" and d["returnComposedObjects"] is True
        assert d["patientId"] == PATIENT
        assert d["status"] == [APPROVED]
        assert d["eventCodes"] == [["CT^^DCM", "MR^^DCM"], ["T-D3000^^SRT"]]

    assert resp.status == SUCCESS
    objs = members(c, resp.RegistryObjectList)
    assert [k for k, _ in objs] == ["ExtrinsicObject"] * 3
    by_id = {eo.id: eo for _, eo in objs}
    assert set(by_id) == {entry(i)["entryUuid"] for i in range(3)}
    for i in range(3):
        want = entry(i)
        eo = by_id[want["entryUuid"]]
        assert eo.home == HOME
        assert eo.objectType == "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
        assert eo.status == APPROVED and eo.mimeType == "application/dicom"
        assert eo.Name._value_1[0]["LocalizedString"].value == want["title"]
        slots = {s.name: [v["Value"] for v in s.ValueList._value_1] for s in eo.Slot}
        assert slots["creationTime"] == [want["creationTime"]]
        assert slots["size"] == [str(want["size"])]
        assert slots["urn:ihe:iti:xds:2013:referenceIdList"] == [
            f"ACC{i}^^^&1.2.3.4&ISO^urn:ihe:iti:xds:2013:accession",
            f"1.2.826.0.1.3680043.10.511.1.{i}^^^^urn:ihe:iti:xds:2016:studyInstanceUID",
        ]
        ext = {e.identificationScheme: e.value for e in eo.ExternalIdentifier}
        assert ext["urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"] == want["patientId"]
        assert ext["urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"] == want["uniqueId"]
        events = [
            (cl.nodeRepresentation, code_slot(c, cl))
            for cl in eo.Classification
            if cl.classificationScheme == "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4"
        ]
        assert events == [("CT", ["DCM"]), ("T-D3000", ["SRT"])]
        fmt = {cl.classificationScheme: cl for cl in eo.Classification}["urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"]
        assert fmt.nodeRepresentation == "1.2.840.10008.5.1.4.1.1.88.59"


def test_stored_query_objectref(testdata, endpoint):
    c, call = client(testdata, endpoint, "ITI-38")
    resp = call(
        ResponseOption={"returnType": "ObjectRef", "returnComposedObjects": True},
        AdhocQuery={"id": FIND_DOCUMENTS, "home": HOME, "Slot": [
            slot("$XDSDocumentEntryPatientId", f"'{PATIENT}'"),
            slot("$XDSDocumentEntryStatus", f"('{APPROVED}')"),
        ]},
    )
    d = last_decoded(endpoint)
    if d is not None:
        assert d["returnType"] == "ObjectRef"
    assert resp.status == SUCCESS
    refs = members(c, resp.RegistryObjectList)
    assert sorted((k, r.id, r.home) for k, r in refs) == [("ObjectRef", entry(i)["entryUuid"], HOME) for i in range(3)]


def test_stored_query_error_is_a_registry_error(testdata, endpoint):
    """A GetDocuments without its required parameter: Failure with XDSStoredQueryMissingParam."""
    c, call = client(testdata, endpoint, "ITI-38")
    resp = call(
        ResponseOption={"returnType": "LeafClass", "returnComposedObjects": True},
        AdhocQuery={"id": GET_DOCUMENTS, "home": HOME, "Slot": [slot("$homeCommunityId", f"'{HOME}'")]},
    )
    d = last_decoded(endpoint)
    if d is not None:
        assert d["storedQuery"] == "GetDocuments"
    assert resp.status == FAILURE
    errs = resp.RegistryErrorList.RegistryError
    assert [e.errorCode for e in errs] == ["XDSStoredQueryMissingParam"]
    assert errs[0].severity == "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"


@pytest.mark.parametrize("tx", ["ITI-39", "ITI-43"])
def test_retrieve_document_set_mtom(testdata, endpoint, tx):
    c, call = client(testdata, endpoint, tx)
    home = {"HomeCommunityId": HOME} if tx == "ITI-39" else {}
    reqs = [
        {**home, "RepositoryUniqueId": REPO, "DocumentUniqueId": f"1.2.826.0.1.3680043.10.511.4.{i}"} for i in (2, 0)
    ] + [{**home, "RepositoryUniqueId": REPO, "DocumentUniqueId": "1.2.3.unknown"}]
    resp = call(DocumentRequest=reqs)
    d = last_decoded(endpoint)
    if d is not None:
        assert d["header"]["transaction"] == tx
        assert [(r["homeCommunityId"], r["repositoryUniqueId"], r["documentUniqueId"]) for r in d["documents"]] == [
            (r.get("HomeCommunityId"), r["RepositoryUniqueId"], r["DocumentUniqueId"]) for r in reqs
        ]
    # MTOM answer, decoded by zeep (multipart/related + xop:Include)
    rr = resp.RegistryResponse
    assert rr.status == PARTIAL, rr.RegistryErrorList
    assert [(e.errorCode, e.location) for e in rr.RegistryErrorList.RegistryError] == [
        ("XDSDocumentUniqueIdError", "1.2.3.unknown")
    ]
    got = {r.DocumentUniqueId: r for r in resp.DocumentResponse}
    assert set(got) == {"1.2.826.0.1.3680043.10.511.4.2", "1.2.826.0.1.3680043.10.511.4.0"}
    for i in (2, 0):
        r = got[f"1.2.826.0.1.3680043.10.511.4.{i}"]
        assert r.Document == dicom_like(i, 40_000 + i)
        assert r.mimeType == "application/dicom" and r.RepositoryUniqueId == REPO
        assert r.HomeCommunityId == documents_home(endpoint, tx)


@pytest.mark.parametrize("tx", ["RAD-69", "RAD-75"])
def test_retrieve_imaging_document_set(testdata, endpoint, tx):
    c, call = client(testdata, endpoint, tx)
    docs = [{"HomeCommunityId": HOME, "RepositoryUniqueId": REPO, "DocumentUniqueId": f"1.2.826.0.1.3680043.10.511.4.{i}"} for i in (1, 3)]
    resp = call(
        StudyRequest=[{"studyInstanceUID": STUDY, "SeriesRequest": [
            {"seriesInstanceUID": SERIES, "DocumentRequest": docs},
        ]}],
        TransferSyntaxUIDList={"TransferSyntaxUID": ["1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.1"]},
    )
    d = last_decoded(endpoint)
    # IPF's WSDL puts DocumentRequest in the XDS-I.b namespace (testdata README "Schema caveats" 2); read anyway
    if d is not None:
        assert d["studies"] == [{
            "studyInstanceUID": STUDY,
            "series": [{"seriesInstanceUID": SERIES, "documents": [
                {"homeCommunityId": HOME, "repositoryUniqueId": REPO, "documentUniqueId": x["DocumentUniqueId"]}
                for x in docs
            ]}],
        }]
        assert d["transferSyntaxes"] == ["1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.1"]
    assert resp.RegistryResponse.status == SUCCESS
    assert [r.DocumentUniqueId for r in resp.DocumentResponse] == [x["DocumentUniqueId"] for x in docs]
    for r, i in zip(resp.DocumentResponse, (1, 3)):
        assert r.Document == dicom_like(i, 40_000 + i)
        assert r.HomeCommunityId == documents_home(endpoint, tx)
