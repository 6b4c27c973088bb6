//! ebRIM parse throughput of our codec next to python lxml on the same message, in one run (issue 7
//! performance figure c): the SOAP `AdhocQueryResponse` of 1,000 DocumentEntries of `benches/ihe.rs`
//! (KOS manifests and reports, 8 classifications and 2 external identifiers each) is written to a file;
//! then, each timed for about 3 s and reported as the median of single runs (freeing the result
//! included, as Python frees it too):
//! - ours: `read_soap::<AdhocQueryResponse>` (envelope → typed wire objects), and the same plus the
//!   mapping to `model::DocumentEntry`;
//! - lxml (`DUO_PYTHON`): `etree.fromstring` (a tree, nothing decoded), and `fromstring` plus pulling
//!   every ExtrinsicObject's attributes, slots, names, classifications and external identifiers into
//!   Python values (roughly what our parse hands over).
//!
//! `scripts/perf.sh` runs it: `cargo bench -p duo-runtime --bench ebrim_lxml`.

use std::process::Command;
use std::time::{Duration, Instant};

use duo_runtime::ihe::query::AdhocQueryResponse;
use duo_runtime::ihe::soap::{SoapHeader, Transaction};
use duo_runtime::ihe::transform::document_entries;
use duo_runtime::ihe::{read_soap, write_soap};
use duo_runtime::xml::Limits;

#[path = "../tests/common/fixtures.rs"]
mod fixtures;

const LXML: &str = r#"
import statistics, sys, time
from lxml import etree

data = open(sys.argv[1], "rb").read()
RIM = "{urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0}"

def parse():
    etree.fromstring(data)

def slots(e):
    return {s.get("name"): [v.text for v in s.iter(RIM + "Value")] for s in e.findall(RIM + "Slot")}

def extract():
    root = etree.fromstring(data)
    out = []
    for eo in root.iter(RIM + "ExtrinsicObject"):
        out.append({
            "attrs": dict(eo.attrib),
            "slots": slots(eo),
            "name": [ls.get("value") for ls in eo.iterfind(RIM + "Name/" + RIM + "LocalizedString")],
            "classifications": [
                (c.get("classificationScheme"), c.get("nodeRepresentation"), slots(c),
                 [ls.get("value") for ls in c.iterfind(RIM + "Name/" + RIM + "LocalizedString")])
                for c in eo.findall(RIM + "Classification")
            ],
            "externalIdentifiers": [(x.get("identificationScheme"), x.get("value")) for x in eo.findall(RIM + "ExternalIdentifier")],
        })
    assert len(out) == 1000, len(out)
    return out

def bench(f, seconds=3.0):
    for _ in range(3):
        f()
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 10:
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times)

import lxml
print(bench(parse), bench(extract), lxml.__version__, ".".join(map(str, etree.LIBXML_VERSION)))
"#;

fn bench<T>(mut f: impl FnMut() -> T) -> f64 {
    for _ in 0..3 {
        drop(f());
    }
    let mut times = Vec::new();
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end || times.len() < 10 {
        let t = Instant::now();
        drop(f());
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    duo_runtime::tune_allocator();
    let resp = fixtures::query_response(1000);
    let h = SoapHeader::request(Transaction::Iti38.response_action(), None);
    let xml = write_soap(&h, &resp);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("AdhocQueryResponse.xml");
    std::fs::write(&file, &xml).unwrap();
    let mb = xml.len() as f64 / 1e6;
    let limits = Limits::default();

    let ours = bench(|| {
        let (_, r): (SoapHeader, AdhocQueryResponse) = read_soap(xml.as_bytes(), &limits).unwrap();
        assert!(r.objects.len() >= 1000);
        r
    });
    let ours_model = bench(|| {
        let (_, r): (SoapHeader, AdhocQueryResponse) = read_soap(xml.as_bytes(), &limits).unwrap();
        document_entries(&r.objects)
    });

    let python = std::env::var("DUO_PYTHON").unwrap_or_else(|_| {
        eprintln!("DUO_PYTHON not set: source .tools/env (scripts/setup.sh writes it)");
        std::process::exit(2)
    });
    let out = Command::new(&python)
        .arg("-c")
        .arg(LXML)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lxml run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<&str> = text.split_whitespace().collect();
    let lxml_parse: f64 = f[0].parse().unwrap();
    let lxml_extract: f64 = f[1].parse().unwrap();
    println!(
        "AdhocQueryResponse, 1,000 DocumentEntries, {:.2} MB of SOAP (median of single runs, ~3 s each; lxml {} on libxml2 {})",
        mb,
        f.get(2).unwrap_or(&"?"),
        f.get(3).unwrap_or(&"?")
    );
    let line =
        |name: &str, s: f64| println!("  {name:58} {:7.1} ms  {:7.1} MB/s", s * 1000.0, mb / s);
    line("ours: read_soap → typed wire objects", ours);
    line(
        "ours: read_soap → wire objects → model::DocumentEntry",
        ours_model,
    );
    line("lxml: etree.fromstring (tree only)", lxml_parse);
    line(
        "lxml: fromstring + fields of every ExtrinsicObject",
        lxml_extract,
    );
    println!(
        "  ours / lxml fromstring: {:.2}×; ours / lxml fromstring+fields: {:.2}× (bar: ours ≥ 2× lxml: {})",
        lxml_parse / ours,
        lxml_extract / ours,
        if lxml_parse / ours >= 2.0 {
            "met"
        } else {
            "NOT met"
        }
    );
}
