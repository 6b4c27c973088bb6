//! The streaming retrieve relay measured by both IHE benches: a synthetic MTOM retrieve response of
//! `parts` DICOM-sized parts (generated on the fly in 64 KiB chunks, never held in memory) is read by
//! `RetrieveResponseReader` and piped into `RetrieveResponseWriter`, whose output is counted and dropped —
//! what the gateway does between a responding gateway and its client.

use bytes::Bytes;
use duo_runtime::ihe::ebrim::ResponseStatus;
use duo_runtime::ihe::mtom::{
    MtomLimits, RetrieveItem, RetrieveResponseReader, RetrieveResponseWriter,
};
use duo_runtime::ihe::retrieve::{DocumentResponseMeta, RegistryResponse};
use duo_runtime::ihe::soap::{SoapHeader, Transaction};
use futures::StreamExt;

/// Network-sized chunk of the source body.
pub const CHUNK: usize = 64 * 1024;

/// Builds the source: Content-Type and a lazy body stream of `parts` parts of `part_size` bytes.
pub fn source(
    parts: usize,
    part_size: usize,
) -> (
    String,
    impl futures::Stream<Item = Result<Bytes, duo_runtime::ihe::mtom::MtomError>> + Send + 'static,
) {
    let header = SoapHeader::request(Transaction::Rad75.response_action(), None);
    let metas: Vec<DocumentResponseMeta> = (0..parts)
        .map(|i| DocumentResponseMeta {
            home_community_id: Some("urn:oid:1.3.6.1.4.1.21367.13.70.201".parse().unwrap()),
            repository_unique_id: "1.3.6.1.4.1.21367.13.71.201.2".into(),
            document_unique_id: format!("1.2.826.0.1.3680043.10.511.4.0.0.{i}"),
            mime_type: "application/dicom".into(),
            ..Default::default()
        })
        .collect();
    let w = RetrieveResponseWriter::new(
        &header,
        &RegistryResponse {
            status: ResponseStatus::Success,
            errors: Vec::new(),
        },
        &metas,
    );
    let ct = w.content_type();
    let block = {
        let mut v = vec![0u8; CHUNK];
        let mut x: u32 = 0x9e37_79b9;
        for b in &mut v {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        Bytes::from(v)
    };
    let per_part = part_size.div_ceil(CHUNK);
    let items = futures::stream::iter((0..parts).flat_map(move |i| {
        let block = block.clone();
        std::iter::once(RetrieveItem::Document(i))
            .chain((0..per_part).map(move |k| {
                let n = (part_size - k * CHUNK).min(CHUNK);
                RetrieveItem::Chunk(block.slice(..n))
            }))
            .chain(std::iter::once(RetrieveItem::End))
            .map(Ok::<_, duo_runtime::ihe::mtom::MtomError>)
    }));
    (ct, w.into_body(items, None))
}

/// Relays one response; returns (bytes read from the source, bytes written, documents relayed).
pub async fn relay(parts: usize, part_size: usize) -> (u64, u64, usize) {
    let (ct, body) = source(parts, part_size);
    let counted_in = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let c = counted_in.clone();
    let body = body.map(move |r| {
        if let Ok(b) = &r {
            c.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        r
    });
    let reader = RetrieveResponseReader::open(&ct, None, body, &MtomLimits::default())
        .await
        .expect("open");
    let n = reader.documents().len();
    let w = RetrieveResponseWriter::new(
        reader.header(),
        reader.registry_response(),
        reader.documents(),
    );
    let mut out = std::pin::pin!(w.into_body(reader.into_items(), None));
    let mut written = 0u64;
    while let Some(c) = out.next().await {
        written += c.expect("relay").len() as u64;
    }
    (
        counted_in.load(std::sync::atomic::Ordering::Relaxed),
        written,
        n,
    )
}
