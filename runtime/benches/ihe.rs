//! Wire-layer benchmarks (issue 2): parse and write an AdhocQueryResponse of 1,000 DocumentEntries
//! (throughput in MB/s of the SOAP message), map it to the model, and relay a 1 GiB MTOM retrieve
//! response reader → writer. Peak memory of the relay is measured by `benches/ihe_rss.rs`.
//!
//! `cargo bench -p duo-runtime --bench ihe`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group};
use duo_runtime::ihe::query::AdhocQueryResponse;
use duo_runtime::ihe::soap::{SoapHeader, Transaction};
use duo_runtime::ihe::transform::document_entries;
use duo_runtime::ihe::{read_soap, write_soap};
use duo_runtime::xml::Limits;

#[path = "../tests/common/fixtures.rs"]
mod fixtures;
mod relay;

fn query_response(c: &mut Criterion) {
    let resp = fixtures::query_response(1000);
    let h = SoapHeader::request(Transaction::Iti38.response_action(), None);
    let xml = write_soap(&h, &resp);
    let limits = Limits::default();
    let mut g = c.benchmark_group("AdhocQueryResponse 1000 DocumentEntries");
    g.throughput(Throughput::Bytes(xml.len() as u64));
    g.sample_size(20);
    g.bench_function("xml reader walk (no decoding)", |b| {
        b.iter(|| {
            let mut r = duo_runtime::xml::Reader::new(black_box(xml.as_bytes()), &limits).unwrap();
            let root = r.root().unwrap();
            r.skip(&root).unwrap();
        })
    });
    g.bench_function("parse", |b| {
        b.iter_with_large_drop(|| {
            let (_, r): (SoapHeader, AdhocQueryResponse) =
                read_soap(black_box(xml.as_bytes()), &limits).unwrap();
            r
        })
    });
    g.bench_function("write", |b| {
        b.iter(|| black_box(write_soap(&h, black_box(&resp))))
    });
    let (_, parsed): (SoapHeader, AdhocQueryResponse) = read_soap(xml.as_bytes(), &limits).unwrap();
    g.bench_function("parse + to DocumentEntry", |b| {
        b.iter_with_large_drop(|| {
            let (_, r): (SoapHeader, AdhocQueryResponse) =
                read_soap(black_box(xml.as_bytes()), &limits).unwrap();
            document_entries(&r.objects)
        })
    });
    g.finish();
    eprintln!(
        "AdhocQueryResponse: {} entries, {:.2} MiB of SOAP, {} objects",
        1000,
        xml.len() as f64 / (1024.0 * 1024.0),
        parsed.objects.len()
    );
}

fn retrieve_relay(c: &mut Criterion) {
    // 2,048 parts of 512 KiB = 1 GiB of DICOM content
    const PARTS: usize = 2048;
    const PART: usize = 512 * 1024;
    let mut g = c.benchmark_group("retrieve response relay 1 GiB");
    g.throughput(Throughput::Bytes((PARTS * PART) as u64));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("MTOM reader -> writer, 2048 parts x 512 KiB", |b| {
        b.iter(|| {
            let (read, written, n) = futures::executor::block_on(relay::relay(PARTS, PART));
            assert_eq!(n, PARTS);
            assert!(written > (PARTS * PART) as u64 && read > (PARTS * PART) as u64);
            black_box(written)
        })
    });
    g.finish();
}

criterion_group!(benches, query_response, retrieve_relay);

fn main() {
    // the allocator set-up of the shipped binaries (criterion_main! would skip it)
    duo_runtime::tune_allocator();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
