//! `ihe-codec`: a test companion that puts the IHE wire codec (`duo_runtime::ihe`) behind a pipe, so an
//! independent SOAP stack (python zeep in `interop/`) can be checked against it before the gateway
//! server exists.
//!
//! `ihe-codec respond --content-type <CT> --fixture <JSON> [--dump <JSON>]` reads one HTTP request body
//! from stdin (plain SOAP or MTOM), decodes it with the codec of its WS-Addressing Action (ITI-18,
//! ITI-38, ITI-39, ITI-43, RAD-69, RAD-75), writes what it decoded to `--dump`, and answers on stdout
//! with `status: <http status>\ncontent-type: <type>\n\n<body>`: a stored-query response built from the
//! fixture's DocumentEntries, or an MTOM retrieve response with the fixture's documents (streamed through
//! `RetrieveResponseWriter`). Errors become SOAP faults (400 for the peer's, 500 for ours) or
//! RegistryErrors, as the gateway will answer them.
//!
//! Fixture: `{"home": "urn:oid:…", "entries": [DocumentEntry…], "documents": [{"repositoryUniqueId",
//! "documentUniqueId", "mimeType", "contentBase64"}]}`.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use duo_runtime::ihe::ebrim::{ErrorCode, Identifiable, ObjectRef, RegistryError};
use duo_runtime::ihe::mtom::{self, MtomLimits, RetrieveItem, RetrieveResponseWriter};
use duo_runtime::ihe::query::{AdhocQueryRequest, AdhocQueryResponse, ReturnType, param};
use duo_runtime::ihe::retrieve::{
    DocumentRequest, DocumentResponseMeta, RegistryResponse, RetrieveDocumentSetRequest,
    RetrieveImagingDocumentSetRequest, decode_base64,
};
use duo_runtime::ihe::soap::{self, Fault, FaultCode, SoapError, SoapHeader, Transaction};
use duo_runtime::ihe::transform::document_entry_to_wire;
use duo_runtime::ihe::{read_soap, write_soap};
use duo_runtime::model::{DocumentEntry, HomeCommunityId};
use duo_runtime::xml::Limits;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    name = "ihe-codec",
    about = "IHE wire codec behind a pipe (interop tests)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decode a request from stdin and write a response to stdout.
    Respond {
        /// The request's HTTP Content-Type.
        #[arg(long)]
        content_type: String,
        /// JSON fixture with the community's entries and documents.
        #[arg(long)]
        fixture: PathBuf,
        /// Where to write the decoded request as JSON.
        #[arg(long)]
        dump: Option<PathBuf>,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Fixture {
    home: HomeCommunityId,
    #[serde(default)]
    entries: Vec<DocumentEntry>,
    #[serde(default)]
    documents: Vec<FixtureDocument>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FixtureDocument {
    repository_unique_id: String,
    document_unique_id: String,
    mime_type: String,
    content_base64: String,
}

struct Answer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

fn fault_answer(f: &Fault, req: Option<&SoapHeader>) -> Answer {
    Answer {
        status: if f.code == FaultCode::Sender {
            400
        } else {
            500
        },
        content_type: "application/soap+xml; charset=UTF-8".into(),
        body: soap::write_fault(f, req).into_bytes(),
    }
}

fn soap_answer(xml: String, action: &str) -> Answer {
    Answer {
        status: 200,
        content_type: format!("application/soap+xml; charset=UTF-8; action=\"{action}\""),
        body: xml.into_bytes(),
    }
}

fn home_json(h: &Option<HomeCommunityId>) -> Value {
    h.as_ref()
        .map(|h| Value::String(h.to_string()))
        .unwrap_or(Value::Null)
}

fn doc_request_json(d: &DocumentRequest) -> Value {
    json!({
        "homeCommunityId": home_json(&d.home_community_id),
        "repositoryUniqueId": d.repository_unique_id,
        "documentUniqueId": d.document_unique_id,
    })
}

fn header_json(tx: Transaction, h: &SoapHeader) -> Value {
    json!({
        "transaction": tx.name(),
        "action": h.action,
        "messageId": h.message_id,
        "to": h.to,
        "replyTo": h.reply_to,
    })
}

fn query(fx: &Fixture, h: &SoapHeader, tx: Transaction, q: &AdhocQueryRequest) -> (Value, Answer) {
    let dump = json!({
        "header": header_json(tx, h),
        "queryId": q.query.id,
        "storedQuery": q.query.stored_query().map(|s| s.name()),
        "home": home_json(&q.query.home),
        "returnType": q.response_option.return_type.as_str(),
        "returnComposedObjects": q.response_option.return_composed_objects,
        "slots": q.query.slots.iter().map(|s| json!({"name": s.name, "values": s.values})).collect::<Vec<_>>(),
        "patientId": q.query.single(param::DE_PATIENT_ID).ok().flatten(),
        "status": q.query.list(param::DE_STATUS).ok(),
        "eventCodes": q.query.and_lists(param::DE_EVENT_CODE_LIST).ok(),
    });
    let resp = match q.query.check_required() {
        Err(e) => AdhocQueryResponse::new(Vec::new(), vec![e.to_registry_error()]),
        Ok(_) => {
            let objects = fx
                .entries
                .iter()
                .map(|e| {
                    let mut e = e.clone();
                    e.home_community_id = Some(fx.home.clone());
                    match q.response_option.return_type {
                        ReturnType::LeafClass => {
                            Identifiable::ExtrinsicObject(document_entry_to_wire(&e))
                        }
                        ReturnType::ObjectRef => Identifiable::ObjectRef(ObjectRef {
                            id: e.entry_uuid.clone(),
                            home: e.home_community_id.clone(),
                            slots: Vec::new(),
                        }),
                    }
                })
                .collect();
            AdhocQueryResponse::new(objects, Vec::new())
        }
    };
    let rh = SoapHeader::response(tx.response_action(), h);
    (dump, soap_answer(write_soap(&rh, &resp), &rh.action))
}

/// Answers a retrieve for `requests` from the fixture, streaming the MTOM body through the writer.
fn retrieve(
    fx: &Fixture,
    h: &SoapHeader,
    tx: Transaction,
    requests: &[&DocumentRequest],
    mut errors: Vec<RegistryError>,
) -> Result<Answer, String> {
    let with_home = matches!(tx, Transaction::Iti39 | Transaction::Rad75);
    let mut metas = Vec::new();
    let mut contents = Vec::new();
    for r in requests {
        match fx.documents.iter().find(|d| {
            d.document_unique_id == r.document_unique_id
                && d.repository_unique_id == r.repository_unique_id
        }) {
            None => errors.push(
                RegistryError::new(
                    ErrorCode::XDSDocumentUniqueIdError,
                    format!("document {} is not known", r.document_unique_id),
                )
                .at(r.document_unique_id.clone()),
            ),
            Some(d) => {
                metas.push(DocumentResponseMeta {
                    home_community_id: with_home.then(|| fx.home.clone()),
                    repository_unique_id: d.repository_unique_id.clone(),
                    document_unique_id: d.document_unique_id.clone(),
                    mime_type: d.mime_type.clone(),
                    ..Default::default()
                });
                contents.push(Bytes::from(
                    decode_base64(&d.content_base64).map_err(|e| e.to_string())?,
                ));
            }
        }
    }
    let response = RegistryResponse::derive(errors, metas.len());
    let rh = SoapHeader::response(tx.response_action(), h);
    let w = RetrieveResponseWriter::new(&rh, &response, &metas);
    let content_type = w.content_type();
    // documents in reverse order, each in 1 KiB chunks: the writer must not care
    let mut items = Vec::new();
    for (i, c) in contents.iter().enumerate().rev() {
        items.push(Ok::<_, mtom::MtomError>(RetrieveItem::Document(i)));
        for k in (0..c.len()).step_by(1024) {
            items.push(Ok(RetrieveItem::Chunk(c.slice(k..(k + 1024).min(c.len())))));
        }
        items.push(Ok(RetrieveItem::End));
    }
    let chunks: Vec<_> = futures::executor::block_on(
        w.into_body(futures::stream::iter(items), None)
            .collect::<Vec<_>>(),
    );
    let mut body = Vec::new();
    for c in chunks {
        body.extend_from_slice(&c.map_err(|e| e.to_string())?);
    }
    Ok(Answer {
        status: 200,
        content_type,
        body,
    })
}

fn respond(ct: &str, input: Vec<u8>, fx: &Fixture) -> (Value, Answer) {
    let limits = MtomLimits::default();
    let xml = Limits::default();
    let root = match mtom::soap_envelope(ct, Bytes::from(input), &limits) {
        Ok((root, _)) => root,
        Err(e) => {
            return (
                json!({"error": e.to_string()}),
                fault_answer(&e.to_fault(), None),
            );
        }
    };
    let header = match soap::read_envelope(&root, &xml, |r, el| r.skip(&el)) {
        Ok((h, ())) => h,
        Err(e) => {
            return (
                json!({"error": e.to_string()}),
                fault_answer(&e.to_fault(), None),
            );
        }
    };
    let Some(tx) = Transaction::from_request_action(&header.action) else {
        let f = Fault {
            code: FaultCode::Sender,
            subcode: Some("wsa:ActionNotSupported".into()),
            reason: format!("action {:?} is not supported", header.action),
        };
        return (json!({"error": f.reason}), fault_answer(&f, Some(&header)));
    };
    let bad = |e: SoapError, h: &SoapHeader| {
        (
            json!({"error": e.to_string()}),
            fault_answer(&e.to_fault(), Some(h)),
        )
    };
    match tx {
        Transaction::Iti18 | Transaction::Iti38 => {
            match read_soap::<AdhocQueryRequest>(&root, &xml) {
                Ok((h, q)) => query(fx, &h, tx, &q),
                Err(e) => bad(e, &header),
            }
        }
        Transaction::Iti39 | Transaction::Iti43 => {
            match read_soap::<RetrieveDocumentSetRequest>(&root, &xml) {
                Ok((h, r)) => {
                    let dump = json!({
                        "header": header_json(tx, &h),
                        "documents": r.documents.iter().map(doc_request_json).collect::<Vec<_>>(),
                    });
                    let errors = if tx == Transaction::Iti39 {
                        r.missing_home_errors()
                    } else {
                        Vec::new()
                    };
                    let reqs: Vec<&DocumentRequest> = r.documents.iter().collect();
                    match retrieve(fx, &h, tx, &reqs, errors) {
                        Ok(a) => (dump, a),
                        Err(e) => (dump, fault_answer(&receiver(e), Some(&h))),
                    }
                }
                Err(e) => bad(e, &header),
            }
        }
        Transaction::Rad69 | Transaction::Rad75 => {
            match read_soap::<RetrieveImagingDocumentSetRequest>(&root, &xml) {
                Ok((h, r)) => {
                    let dump = json!({
                        "header": header_json(tx, &h),
                        "studies": r.studies.iter().map(|st| json!({
                            "studyInstanceUID": st.study_instance_uid,
                            "series": st.series.iter().map(|se| json!({
                                "seriesInstanceUID": se.series_instance_uid,
                                "documents": se.documents.iter().map(doc_request_json).collect::<Vec<_>>(),
                            })).collect::<Vec<_>>(),
                        })).collect::<Vec<_>>(),
                        "transferSyntaxes": r.transfer_syntaxes,
                    });
                    let errors = r.validate(tx == Transaction::Rad75);
                    let reqs: Vec<&DocumentRequest> = r.documents().map(|(_, _, d)| d).collect();
                    match retrieve(fx, &h, tx, &reqs, errors) {
                        Ok(a) => (dump, a),
                        Err(e) => (dump, fault_answer(&receiver(e), Some(&h))),
                    }
                }
                Err(e) => bad(e, &header),
            }
        }
    }
}

fn receiver(reason: String) -> Fault {
    Fault {
        code: FaultCode::Receiver,
        subcode: None,
        reason,
    }
}

fn run(content_type: &str, fixture: &PathBuf, dump: Option<&PathBuf>) -> Result<(), String> {
    let fx: Fixture = serde_json::from_slice(
        &std::fs::read(fixture).map_err(|e| format!("{}: {e}", fixture.display()))?,
    )
    .map_err(|e| format!("{}: {e}", fixture.display()))?;
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .map_err(|e| format!("stdin: {e}"))?;
    let (decoded, answer) = respond(content_type, input, &fx);
    if let Some(p) = dump {
        std::fs::write(
            p,
            serde_json::to_vec_pretty(&decoded).map_err(|e| e.to_string())?,
        )
        .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    let mut out = std::io::stdout().lock();
    write!(
        out,
        "status: {}\ncontent-type: {}\n\n",
        answer.status, answer.content_type
    )
    .and_then(|_| out.write_all(&answer.body))
    .and_then(|_| out.flush())
    .map_err(|e| format!("stdout: {e}"))
}

fn main() -> ExitCode {
    duo_runtime::tune_allocator();
    let cli = Cli::parse();
    match cli.command {
        Command::Respond {
            content_type,
            fixture,
            dump,
        } => match run(&content_type, &fixture, dump.as_ref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ihe-codec: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
