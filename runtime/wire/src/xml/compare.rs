//! Structural comparison of XML documents, for tests (feature `test-support`, and this crate's own
//! tests): namespace URI and local name, attributes without namespace declarations, trimmed text,
//! children in order. Prefixes and whitespace do not matter, so a document written by this project can be
//! compared with a published sample element by element.

use std::collections::BTreeMap;

use quick_xml::NsReader;
use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;

/// An XML element compared structurally: namespace URI + local name, attributes by (namespace, local
/// name) without namespace declarations, trimmed text, children in order. Prefixes and whitespace do not
/// matter.
#[derive(Debug, PartialEq, Eq)]
pub struct Node {
    pub ns: String,
    pub local: String,
    pub attrs: BTreeMap<(String, String), String>,
    pub text: String,
    pub children: Vec<Node>,
}

fn resolved(r: ResolveResult<'_>) -> String {
    match r {
        ResolveResult::Bound(n) => n.into_inner().to_owned(),
        _ => String::new(),
    }
}

fn node(r: &NsReader<&[u8]>, e: &BytesStart<'_>) -> Node {
    let (nsr, local) = r.resolver().resolve_element(e.name());
    let mut attrs = BTreeMap::new();
    for a in e.attributes() {
        let a = a.unwrap();
        if a.key.as_namespace_binding().is_some() {
            continue;
        }
        let (ans, alocal) = r.resolver().resolve_attribute(a.key);
        let v = a.normalized_value(XmlVersion::Implicit1_0).unwrap();
        attrs.insert(
            (resolved(ans), alocal.into_inner().to_owned()),
            v.into_owned(),
        );
    }
    Node {
        ns: resolved(nsr),
        local: local.into_inner().to_owned(),
        attrs,
        text: String::new(),
        children: Vec::new(),
    }
}

/// Parses `xml` into a [`Node`] tree (test helper; panics on malformed input).
pub fn tree(xml: &str) -> Node {
    let mut r = NsReader::from_str(xml);
    let mut stack: Vec<Node> = Vec::new();
    loop {
        match r.read_event().unwrap() {
            Event::Start(e) => {
                let n = node(&r, &e);
                stack.push(n);
            }
            Event::Empty(e) => {
                let n = node(&r, &e);
                match stack.last_mut() {
                    Some(p) => p.children.push(n),
                    None => return n,
                }
            }
            Event::End(_) => {
                let mut n = stack.pop().unwrap();
                n.text = n.text.trim().to_owned();
                match stack.last_mut() {
                    Some(p) => p.children.push(n),
                    None => return n,
                }
            }
            Event::Text(t) => {
                if let Some(p) = stack.last_mut() {
                    p.text.push_str(&t.xml10_content());
                }
            }
            Event::Eof => panic!("unexpected end"),
            _ => {}
        }
    }
}

/// The first structural difference between `a` (ours) and `b` (the sample), naming the path; the text of
/// the elements in `ignore_text` (by local name) is not compared.
pub fn diff(a: &Node, b: &Node, path: &str, ignore_text: &[&str]) -> Option<String> {
    let here = format!("{path}/{{{}}}{}", b.ns, b.local);
    if a.ns != b.ns || a.local != b.local {
        return Some(format!("{here}: element {{{}}}{} instead", a.ns, a.local));
    }
    if a.attrs != b.attrs {
        return Some(format!(
            "{here}: attributes {:?} instead of {:?}",
            a.attrs, b.attrs
        ));
    }
    if !ignore_text.contains(&b.local.as_str()) && a.text != b.text {
        return Some(format!("{here}: text {:?} instead of {:?}", a.text, b.text));
    }
    if a.children.len() != b.children.len() {
        return Some(format!(
            "{here}: {} children instead of {}",
            a.children.len(),
            b.children.len()
        ));
    }
    a.children
        .iter()
        .zip(&b.children)
        .find_map(|(x, y)| diff(x, y, &here, ignore_text))
}
