//! Throughput of the DICOM layer: reading instances (whole and header only), building and parsing
//! manifests, generating studies and writing reports. `cargo bench -p duo-runtime --bench dicom`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use duo_runtime::dicom::kos::{KosOptions, build_kos, parse_kos};
use duo_runtime::dicom::{InstanceInfo, read_instance, read_instance_header};
use duo_runtime::model::AuthorInstitution;
use duo_testkit::dicom::report::{RadiologyReport, ReportAuthor, cda, pdf};
use duo_testkit::dicom::synth::{Modality, SynthConfig, SynthPatient, generate_study};

fn bench(c: &mut Criterion) {
    let patient = SynthPatient::example();
    // one 512x512 16-bit CT instance (~512 KiB)
    let big = SynthConfig {
        modalities: vec![Modality::Ct],
        rows: 512,
        columns: 512,
        series_per_study: (1, 1),
        instances_per_series: (1, 1),
        ..SynthConfig::default()
    };
    let ct = generate_study(&big, &patient, 1).expect("study");
    let bytes = ct.instances[0].bytes.clone();
    let mut g = c.benchmark_group("read");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("read_instance 512x512 CT", |b| {
        b.iter(|| read_instance(black_box(&bytes)).expect("read"))
    });
    g.bench_function("read_instance_header 512x512 CT", |b| {
        b.iter(|| read_instance_header(black_box(&bytes)).expect("read"))
    });
    g.finish();

    // a manifest of 1000 instances (10 series of 100)
    let small = SynthConfig {
        modalities: vec![Modality::Ct],
        rows: 8,
        columns: 8,
        series_per_study: (10, 10),
        instances_per_series: (100, 100),
        ..SynthConfig::default()
    };
    let many = generate_study(&small, &patient, 2).expect("study");
    let infos: Vec<InstanceInfo> = many.infos();
    let opts = KosOptions {
        retrieve_location_uid: "1.2.3.4".into(),
        ..KosOptions::default()
    };
    let kos = build_kos(&infos, &opts).expect("kos");
    let mut g = c.benchmark_group("kos");
    g.throughput(Throughput::Elements(infos.len() as u64));
    g.bench_function("build_kos 1000 instances", |b| {
        b.iter(|| build_kos(black_box(&infos), &opts).expect("kos"))
    });
    g.bench_function("parse_kos 1000 instances", |b| {
        b.iter(|| parse_kos(black_box(&kos.bytes)).expect("parse"))
    });
    g.finish();

    let mut g = c.benchmark_group("synth");
    g.bench_function("generate_study default (64x64)", |b| {
        b.iter(|| generate_study(&SynthConfig::default(), &patient, black_box(3)).expect("study"))
    });
    let report = RadiologyReport::for_study(
        &ct.infos(),
        patient.bsn.clone(),
        ReportAuthor {
            name: "de Boer^Pieter".into(),
            uzi: None,
        },
        AuthorInstitution {
            name: "Ziekenhuis".into(),
            ura: None,
        },
        1,
    )
    .expect("report");
    g.bench_function("report pdf", |b| b.iter(|| pdf(black_box(&report))));
    g.bench_function("report cda", |b| b.iter(|| cda(black_box(&report))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
