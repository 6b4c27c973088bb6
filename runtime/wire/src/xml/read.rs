//! A bounded, namespace-aware pull reader over an in-memory XML document.
//!
//! Decoders walk the tree with [`Reader::child`], [`Reader::text`], [`Reader::skip`] and [`Reader::raw`];
//! elements are matched on namespace URI and local name, never on prefix. Hostile input ends in an
//! [`XmlError`]: document type declarations are refused outright (so no entity can be defined, which rules
//! out XXE and entity-expansion attacks), undefined entity references are errors, and nesting depth,
//! element count and input size are bounded by [`Limits`].

use std::borrow::Cow;

use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};

use super::{Limits, XmlError, ns};

/// A namespace URI as resolved on an element or attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ns {
    /// No namespace.
    None,
    /// One of the namespaces this gateway knows (see [`ns`]).
    Known(&'static str),
    /// Any other bound namespace.
    Other(Box<str>),
    /// A prefix with no declaration in scope (tolerated on attributes of blocks the gateway passes on).
    Undeclared,
}

impl Ns {
    /// The namespace a declaration binds: `""` is none (an undeclaration); a known URI resolves to its
    /// `&'static str` once, at the declaration, not at every element that uses it.
    fn from_uri(uri: &str) -> Ns {
        if uri.is_empty() {
            return Ns::None;
        }
        match ns::KNOWN.iter().find(|k| **k == uri) {
            Some(k) => Ns::Known(k),
            None => Ns::Other(uri.into()),
        }
    }

    /// The URI, or `""` for no namespace / an undeclared prefix.
    pub fn uri(&self) -> &str {
        match self {
            Ns::None | Ns::Undeclared => "",
            Ns::Known(s) => s,
            Ns::Other(s) => s,
        }
    }
}

/// One attribute of an element: resolved namespace (unprefixed attributes have none), local name and
/// unescaped, normalised value.
#[derive(Debug, Clone)]
pub struct Attr<'i> {
    /// Namespace of the attribute's prefix.
    pub ns: Ns,
    /// Local name.
    pub local: &'i str,
    /// Value with entity references resolved.
    pub value: Cow<'i, str>,
    /// The name as written (`prefix:local`), for the uniqueness check of undeclared prefixes.
    qname: &'i str,
}

/// An element start as the reader hands it out. Consume it with [`Reader::child`] (until `None`),
/// [`Reader::text`], [`Reader::skip`] or [`Reader::raw`]; an element left unconsumed is skipped
/// automatically by the next [`Reader::child`] call on its parent.
#[derive(Debug, Clone)]
pub struct Elem<'i> {
    /// Namespace of the element.
    pub ns: Ns,
    /// Local name.
    pub local: &'i str,
    /// Attributes in document order.
    pub attrs: Vec<Attr<'i>>,
    /// `<x/>`: no content.
    pub empty: bool,
    /// Nesting level of this element (root = 1).
    depth: usize,
    /// Byte offset of its `<`.
    start: usize,
}

impl<'i> Elem<'i> {
    /// Whether this element is `{ns}local`.
    pub fn is(&self, ns: &str, local: &str) -> bool {
        self.local == local && self.ns.uri() == ns
    }

    /// The value of the unprefixed attribute `local`.
    pub fn attr(&self, local: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns == Ns::None && a.local == local)
            .map(|a| a.value.as_ref())
    }

    /// The value of attribute `{ns}local`.
    pub fn attr_ns(&self, ns: &str, local: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.local == local && a.ns.uri() == ns)
            .map(|a| a.value.as_ref())
    }

    /// The unprefixed attribute `local`, or [`XmlError::Missing`] naming `{element}/@local`.
    pub fn required_attr(&self, local: &str) -> Result<&str, XmlError> {
        self.attr(local)
            .ok_or_else(|| XmlError::Missing(format!("{}/@{local}", self.local)))
    }

    /// Byte offset of the element's start tag in the input (for error positions).
    pub fn position(&self) -> usize {
        self.start
    }

    /// `{ns}local` text for messages.
    pub fn qualified(&self) -> String {
        format!("{{{}}}{}", self.ns.uri(), self.local)
    }
}

/// A namespace declaration in scope (Namespaces in XML 1.0 §3).
#[derive(Debug)]
struct Decl {
    /// Nesting level of the element that declared it.
    depth: usize,
    /// `""` for the default namespace.
    prefix: Box<str>,
    /// What the prefix is bound to; [`Ns::None`] for `xmlns=""` (no default namespace).
    ns: Ns,
}

/// The bounded pull reader. See the module documentation.
pub struct Reader<'i> {
    r: quick_xml::Reader<&'i [u8]>,
    input: &'i str,
    depth: usize,
    elements: usize,
    limits: Limits,
    /// Namespace declarations in scope, innermost last. Names are resolved against them here rather
    /// than by quick-xml's `NsReader`, which parsed every start tag's attributes a second time; they
    /// also make a raw fragment self-contained.
    decls: Vec<Decl>,
}

impl<'i> Reader<'i> {
    /// A reader over `input`. Fails with [`XmlError::TooLarge`] when the input exceeds `limits.max_bytes`
    /// and [`XmlError::Encoding`] when it is not UTF-8 (the only encoding IHE SOAP peers use).
    pub fn new(input: &'i [u8], limits: &Limits) -> Result<Reader<'i>, XmlError> {
        if input.len() > limits.max_bytes {
            return Err(XmlError::TooLarge(limits.max_bytes));
        }
        // Validating UTF-8 once up front lets every later slice be taken as &str without re-checking.
        let text = std::str::from_utf8(input).map_err(|_| XmlError::Encoding)?;
        let mut r = quick_xml::Reader::from_str(text);
        let cfg = r.config_mut();
        cfg.check_end_names = true;
        cfg.expand_empty_elements = false;
        cfg.trim_text(false);
        Ok(Reader {
            r,
            input: text,
            depth: 0,
            elements: 0,
            limits: limits.clone(),
            decls: Vec::new(),
        })
    }

    /// Re-borrows a slice quick-xml handed out (tied to the event's lifetime) from the input itself, so
    /// names and values can outlive the event. Events of an in-memory reader always point into the input.
    fn rebase(&self, s: &str) -> Result<&'i str, XmlError> {
        // ok_or_else: an eager error would allocate its message for every name read
        reborrow(self.input, s).ok_or_else(|| XmlError::Syntax {
            pos: 0,
            msg: "name outside the document".into(),
        })
    }

    fn rebase_cow(&self, c: Cow<'_, str>) -> Result<Cow<'i, str>, XmlError> {
        match c {
            Cow::Borrowed(s) => self.rebase(s).map(Cow::Borrowed),
            Cow::Owned(s) => Ok(Cow::Owned(s)),
        }
    }

    fn syntax(&self, e: impl std::fmt::Display) -> XmlError {
        XmlError::Syntax {
            pos: self.r.error_position(),
            msg: e.to_string(),
        }
    }

    /// Reads the next event, enforcing limits. Returns the event and the byte offset where it began.
    fn next(&mut self) -> Result<(Event<'i>, usize), XmlError> {
        let pos = self.r.buffer_position() as usize;
        let ev = self.r.read_event().map_err(|e| self.syntax(e))?;
        match &ev {
            Event::DocType(_) => return Err(XmlError::Dtd),
            Event::Start(_) | Event::Empty(_) => {
                self.elements += 1;
                if self.elements > self.limits.max_elements {
                    return Err(XmlError::TooManyElements(self.limits.max_elements));
                }
                if self.depth + 1 > self.limits.max_depth {
                    return Err(XmlError::TooDeep(self.limits.max_depth));
                }
            }
            _ => {}
        }
        Ok((ev, pos))
    }

    /// The namespace `prefix` is bound to (`""`: the default namespace; Namespaces in XML 1.0 §6.2),
    /// [`Ns::Undeclared`] when nothing in scope binds it.
    fn lookup(&self, prefix: &str) -> Ns {
        if prefix == "xml" {
            return Ns::Known(ns::XML);
        }
        match self
            .decls
            .iter()
            .rev()
            .find(|d| d.prefix.as_ref() == prefix)
        {
            Some(d) => d.ns.clone(),
            None if prefix.is_empty() => Ns::None,
            None => Ns::Undeclared,
        }
    }

    /// Records the declaration `xmlns[:prefix]="uri"` of the element at `depth`. Errors: a prefix
    /// declared twice on one element, the reserved `xml` / `xmlns` prefixes or URIs misused
    /// (Namespaces in XML 1.0 §3), more bindings in scope than the limit.
    fn declare(
        &mut self,
        depth: usize,
        prefix: &str,
        uri: &str,
        at: usize,
    ) -> Result<(), XmlError> {
        const XMLNS_URI: &str = "http://www.w3.org/2000/xmlns/";
        let bad = |msg: String| XmlError::Syntax {
            pos: at as u64,
            msg,
        };
        if self
            .decls
            .iter()
            .rev()
            .take_while(|d| d.depth == depth)
            .any(|d| d.prefix.as_ref() == prefix)
        {
            return Err(bad(format!(
                "namespace prefix '{prefix}' declared twice on one element"
            )));
        }
        // an empty prefix here is the default namespace; `xmlns:=` never gets this far
        if !prefix.is_empty() && uri.is_empty() {
            return Err(bad(format!(
                "the prefix '{prefix}' may not be undeclared (xmlns:{prefix}=\"\") in XML 1.0"
            )));
        }
        match prefix {
            "xmlns" => return Err(bad("the prefix xmlns may not be declared".into())),
            "xml" if uri != ns::XML => {
                return Err(bad(format!("the prefix xml may not be bound to {uri}")));
            }
            // xml is always bound; nothing to record
            "xml" => return Ok(()),
            p if uri == ns::XML || uri == XMLNS_URI => {
                return Err(bad(format!("the prefix '{p}' may not be bound to {uri}")));
            }
            _ => {}
        }
        if self.decls.len() >= self.limits.max_namespace_bindings {
            return Err(bad(format!(
                "more than {} namespace declarations in scope",
                self.limits.max_namespace_bindings
            )));
        }
        self.decls.push(Decl {
            depth,
            prefix: prefix.into(),
            ns: Ns::from_uri(uri),
        });
        Ok(())
    }

    fn make_elem(
        &mut self,
        e: &BytesStart<'i>,
        empty: bool,
        start: usize,
        depth: usize,
    ) -> Result<Elem<'i>, XmlError> {
        // One pass over the attributes: declarations are recorded first-come, the others kept with
        // their prefix and resolved once the element's own declarations are all in scope.
        let mut attrs: Vec<Attr<'i>> = Vec::new();
        for a in e.attributes().with_checks(false) {
            let a = a.map_err(|err| self.syntax(err))?;
            let key = a.key;
            let value = a
                .normalized_value(XmlVersion::Implicit1_0)
                .map_err(|err| match err {
                    quick_xml::Error::Escape(
                        quick_xml::escape::EscapeError::UnrecognizedEntity(_, name),
                    ) => XmlError::Entity(name),
                    other => self.syntax(other),
                })?;
            if let Some(decl) = key.as_namespace_binding() {
                let prefix = match decl {
                    quick_xml::name::PrefixDeclaration::Default => "",
                    quick_xml::name::PrefixDeclaration::Named("") => {
                        return Err(XmlError::Syntax {
                            pos: start as u64,
                            msg: "'xmlns:' declares no prefix".into(),
                        });
                    }
                    quick_xml::name::PrefixDeclaration::Named(p) => self.rebase(p)?,
                };
                self.declare(depth, prefix, &value, start)?;
                continue;
            }
            let qname = self.rebase(key.into_inner())?;
            attrs.push(Attr {
                ns: Ns::None,
                local: qname,
                value: self.rebase_cow(value)?,
                qname,
            });
        }
        // Resolution and uniqueness of expanded names (Namespaces in XML 1.0 §6.2, §6.3); the
        // second covers the check on names as written, which quick-xml would do with an allocation.
        for a in attrs.iter_mut() {
            if let Some((prefix, local)) = qname_parts(a.qname, start)? {
                a.ns = self.lookup(prefix);
                a.local = local;
            }
        }
        if let Some(dup) = duplicate_attribute(&attrs) {
            return Err(XmlError::Syntax {
                pos: start as u64,
                msg: format!("attribute '{dup}' given twice"),
            });
        }
        let name = self.rebase(e.name().into_inner())?;
        let (ns, local) = match qname_parts(name, start)? {
            // unlike an attribute's, an element's prefix must be declared (Namespaces in XML 1.0
            // §5, "Prefix Declared"): the element would otherwise be taken for one in no namespace
            Some((prefix, local)) => match self.lookup(prefix) {
                Ns::Undeclared => {
                    return Err(XmlError::Syntax {
                        pos: start as u64,
                        msg: format!("the prefix of element '{name}' is not declared"),
                    });
                }
                ns => (ns, local),
            },
            None => (self.lookup(""), name),
        };
        Ok(Elem {
            ns,
            local,
            attrs,
            empty,
            depth,
            start,
        })
    }

    /// The document element. Skips the XML declaration, comments, processing instructions and whitespace;
    /// refuses a DTD.
    pub fn root(&mut self) -> Result<Elem<'i>, XmlError> {
        loop {
            let (ev, pos) = self.next()?;
            match ev {
                Event::Start(e) => {
                    self.depth = 1;
                    return self.make_elem(&e, false, pos, 1);
                }
                Event::Empty(e) => return self.make_elem(&e, true, pos, 1),
                Event::Eof => return Err(XmlError::Missing("document element".into())),
                Event::Text(t) if !t.bytes().all(|b| b.is_ascii_whitespace()) => {
                    return Err(XmlError::Syntax {
                        pos: pos as u64,
                        msg: "text before the document element".into(),
                    });
                }
                _ => {}
            }
        }
    }

    /// Checks that nothing but whitespace, comments and processing instructions follows the document
    /// element `root` (consuming what is left of it). Errors: trailing elements or text.
    pub fn end(&mut self, root: &Elem<'i>) -> Result<(), XmlError> {
        self.skip(root)?;
        loop {
            let (ev, pos) = self.next()?;
            match ev {
                Event::Eof => return Ok(()),
                Event::Text(t) if t.bytes().all(|b| b.is_ascii_whitespace()) => {}
                Event::Comment(_) | Event::PI(_) => {}
                _ => {
                    return Err(XmlError::Syntax {
                        pos: pos as u64,
                        msg: "content after the document element".into(),
                    });
                }
            }
        }
    }

    fn pop_decls(&mut self) {
        while self.decls.last().is_some_and(|d| d.depth > self.depth) {
            self.decls.pop();
        }
    }

    /// The next child element of `parent`, or `None` at its end. Text, comments and processing
    /// instructions between children are ignored; a child the caller did not consume is skipped.
    pub fn child(&mut self, parent: &Elem<'i>) -> Result<Option<Elem<'i>>, XmlError> {
        if parent.empty || self.depth < parent.depth {
            return Ok(None);
        }
        while self.depth > parent.depth {
            self.skip_current()?;
        }
        loop {
            let (ev, pos) = self.next()?;
            match ev {
                Event::Start(e) => {
                    self.depth += 1;
                    let d = self.depth;
                    return self.make_elem(&e, false, pos, d).map(Some);
                }
                Event::Empty(e) => {
                    let d = self.depth + 1;
                    let el = self.make_elem(&e, true, pos, d)?;
                    // an empty element's own declarations go out of scope at once
                    self.pop_decls();
                    return Ok(Some(el));
                }
                Event::End(_) => {
                    self.depth -= 1;
                    self.pop_decls();
                    return Ok(None);
                }
                Event::Eof => {
                    return Err(XmlError::Syntax {
                        pos: pos as u64,
                        msg: "unexpected end of document".into(),
                    });
                }
                Event::GeneralRef(g) => {
                    // entity references in ignored mixed content must still be defined
                    resolve_ref(&g)?;
                }
                _ => {}
            }
        }
    }

    /// Skips the innermost open element (the one at `self.depth`).
    fn skip_current(&mut self) -> Result<(), XmlError> {
        let target = self.depth - 1;
        while self.depth > target {
            let (ev, pos) = self.next()?;
            match ev {
                Event::Start(_) => self.depth += 1,
                Event::End(_) => {
                    self.depth -= 1;
                    self.pop_decls();
                }
                Event::GeneralRef(g) => {
                    resolve_ref(&g)?;
                }
                Event::Eof => {
                    return Err(XmlError::Syntax {
                        pos: pos as u64,
                        msg: "unexpected end of document".into(),
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The text content of `el` (character data, CDATA and entity references, concatenated), consuming
    /// the element. Child elements inside it are skipped (tolerant reading), their text ignored.
    pub fn text(&mut self, el: &Elem<'i>) -> Result<Cow<'i, str>, XmlError> {
        if el.empty || self.depth != el.depth {
            return Ok(Cow::Borrowed(""));
        }
        let mut out: Option<Cow<'i, str>> = None;
        let push = |out: &mut Option<Cow<'i, str>>, s: Cow<'i, str>| match out {
            None => *out = Some(s),
            Some(o) => o.to_mut().push_str(&s),
        };
        loop {
            let (ev, pos) = self.next()?;
            match ev {
                Event::Text(t) => push(&mut out, t.xml10_content()),
                Event::CData(c) => {
                    let s = c.xml10_content().into_owned();
                    push(&mut out, Cow::Owned(s));
                }
                Event::GeneralRef(g) => {
                    let c = resolve_ref(&g)?;
                    push(&mut out, Cow::Owned(c.to_string()));
                }
                Event::Start(_) => {
                    self.depth += 1;
                    self.skip_current()?;
                }
                Event::End(_) => {
                    self.depth -= 1;
                    self.pop_decls();
                    return Ok(out.unwrap_or(Cow::Borrowed("")));
                }
                Event::Eof => {
                    return Err(XmlError::Syntax {
                        pos: pos as u64,
                        msg: "unexpected end of document".into(),
                    });
                }
                _ => {}
            }
        }
    }

    /// Mixed content: the text of `el` (as [`Reader::text`]) while each child element is handed to
    /// `on_child`, which consumes it or leaves it to be skipped. Used where content is either text or an
    /// element, e.g. an XDS.b `Document` holding base64 text or an `xop:Include`.
    pub fn mixed(
        &mut self,
        el: &Elem<'i>,
        mut on_child: impl FnMut(&mut Self, Elem<'i>) -> Result<(), XmlError>,
    ) -> Result<Cow<'i, str>, XmlError> {
        if el.empty || self.depth != el.depth {
            return Ok(Cow::Borrowed(""));
        }
        let mut out: Option<Cow<'i, str>> = None;
        let push = |out: &mut Option<Cow<'i, str>>, s: Cow<'i, str>| match out {
            None => *out = Some(s),
            Some(o) => o.to_mut().push_str(&s),
        };
        loop {
            let (ev, pos) = self.next()?;
            match ev {
                Event::Text(t) => push(&mut out, t.xml10_content()),
                Event::CData(c) => {
                    let s = c.xml10_content().into_owned();
                    push(&mut out, Cow::Owned(s));
                }
                Event::GeneralRef(g) => {
                    let c = resolve_ref(&g)?;
                    push(&mut out, Cow::Owned(c.to_string()));
                }
                Event::Start(e) => {
                    self.depth += 1;
                    let d = self.depth;
                    let child = self.make_elem(&e, false, pos, d)?;
                    on_child(self, child)?;
                    // whatever the callback left of the child is skipped
                    while self.depth >= d {
                        self.skip_current()?;
                    }
                }
                Event::Empty(e) => {
                    let d = self.depth + 1;
                    let child = self.make_elem(&e, true, pos, d)?;
                    self.pop_decls();
                    on_child(self, child)?;
                }
                Event::End(_) => {
                    self.depth -= 1;
                    self.pop_decls();
                    return Ok(out.unwrap_or(Cow::Borrowed("")));
                }
                Event::Eof => {
                    return Err(XmlError::Syntax {
                        pos: pos as u64,
                        msg: "unexpected end of document".into(),
                    });
                }
                _ => {}
            }
        }
    }

    /// Consumes `el` and everything in it.
    pub fn skip(&mut self, el: &Elem<'i>) -> Result<(), XmlError> {
        if el.empty || self.depth < el.depth {
            return Ok(());
        }
        while self.depth >= el.depth {
            self.skip_current()?;
        }
        Ok(())
    }

    /// Consumes `el` and returns its exact source text, from `<` to the end of its end tag.
    pub fn raw(&mut self, el: &Elem<'i>) -> Result<&'i str, XmlError> {
        self.skip(el)?;
        let end = self.r.buffer_position() as usize;
        self.input
            .get(el.start..end)
            .ok_or_else(|| XmlError::Syntax {
                pos: end as u64,
                msg: "raw slice".into(),
            })
    }

    /// Like [`Reader::raw`], but the fragment is made self-contained: the namespace declarations in scope
    /// from ancestors whose prefixes the fragment uses are added to its start tag (unless it declares
    /// them itself), so it can be placed into another document, e.g. a WS-Security header block passed on
    /// to the next hop. Passing the result on again adds nothing.
    pub fn raw_fragment(&mut self, el: &Elem<'i>) -> Result<String, XmlError> {
        let raw = self.raw(el)?;
        // the ancestors' declarations are still in scope once the element is consumed
        let unbound = unbound_prefixes(raw).map_err(|msg| XmlError::Syntax {
            pos: el.start as u64,
            msg,
        })?;
        let name_end = raw[1..]
            .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
            .map(|i| i + 1)
            .unwrap_or(raw.len());
        let mut out = String::with_capacity(raw.len() + 64);
        out.push_str(&raw[..name_end]);
        for p in unbound {
            let inherited = self
                .decls
                .iter()
                .rev()
                .find(|d| d.depth < el.depth && d.prefix.as_ref() == p);
            match (p, inherited) {
                // the default namespace: inherited when an ancestor set one
                ("", Some(d)) if d.ns != Ns::None => {
                    out.push_str(" xmlns=\"");
                    push_attr_value(&mut out, d.ns.uri());
                    out.push('"');
                }
                ("", _) => {}
                (p, Some(d)) => {
                    out.push_str(" xmlns:");
                    out.push_str(p);
                    out.push_str("=\"");
                    push_attr_value(&mut out, d.ns.uri());
                    out.push('"');
                }
                // A prefix used but declared nowhere (a sloppy peer's `foo:attr` in a header block
                // the gateway only passes on) gets a placeholder declaration, so the next hop receives
                // namespace-well-formed XML with the attribute and its value intact.
                (p, None) => {
                    out.push_str(" xmlns:");
                    out.push_str(p);
                    out.push_str("=\"");
                    out.push_str(UNDECLARED_PREFIX_NS);
                    out.extend(percent_encoding::utf8_percent_encode(
                        p,
                        percent_encoding::NON_ALPHANUMERIC,
                    ));
                    out.push('"');
                }
            }
        }
        out.push_str(&raw[name_end..]);
        // The class of fault the fuzzer and the breaking runs found (names no QName, an attribute twice
        // once placeholders resolve): what is passed on must read on its own, every element and
        // attribute of it checked as the reader checks what it consumes.
        reads_whole(&out, &self.limits).map_err(|e| XmlError::Syntax {
            pos: el.start as u64,
            msg: format!("the element as it would be passed on does not read: {e}"),
        })?;
        Ok(out)
    }
}

/// Reads `fragment` as a document, every element with its attributes and namespace declarations (not
/// only those a codec would consume, which [`Reader::child`] skips over).
fn reads_whole(fragment: &str, limits: &Limits) -> Result<(), XmlError> {
    let mut r = Reader::new(fragment.as_bytes(), limits)?;
    let root = r.root()?;
    let mut open = vec![root];
    while let Some(top) = open.last() {
        match r.child(top)? {
            Some(c) => open.push(c),
            None => {
                open.pop();
            }
        }
    }
    Ok(())
}

impl<'i> Reader<'i> {
    /// Like [`Reader::raw_fragment`], but every namespace declaration in scope from the ancestors is added
    /// (unless the element declares that prefix itself), used or not. For an element that is to be
    /// canonicalised on its own, e.g. a signed SAML assertion verified apart from its envelope: exclusive
    /// C14N also renders the prefixes of an `InclusiveNamespaces PrefixList` that are merely in scope, so
    /// the fragment must keep them to digest as it did in place. Extra declarations change nothing else.
    pub fn raw_fragment_in_scope(&mut self, el: &Elem<'i>) -> Result<String, XmlError> {
        let frag = self.raw_fragment(el)?;
        let declared = start_tag_declarations(&frag).map_err(|msg| XmlError::Syntax {
            pos: el.start as u64,
            msg,
        })?;
        let name_end = frag[1..]
            .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
            .map(|i| i + 1)
            .unwrap_or(frag.len());
        let mut extra = String::new();
        let mut seen: std::collections::HashSet<&str> =
            declared.iter().map(|p| p.as_str()).collect();
        // innermost first: the declaration in force for each prefix
        for d in self.decls.iter().rev().filter(|d| d.depth < el.depth) {
            if !seen.insert(d.prefix.as_ref()) {
                continue;
            }
            match (d.prefix.as_ref(), &d.ns) {
                ("", Ns::None | Ns::Undeclared) => {}
                ("", ns) => {
                    extra.push_str(" xmlns=\"");
                    push_attr_value(&mut extra, ns.uri());
                    extra.push('"');
                }
                (_, Ns::None | Ns::Undeclared) => {}
                (p, ns) => {
                    extra.push_str(" xmlns:");
                    extra.push_str(p);
                    extra.push_str("=\"");
                    push_attr_value(&mut extra, ns.uri());
                    extra.push('"');
                }
            }
        }
        if extra.is_empty() {
            return Ok(frag);
        }
        let mut out = String::with_capacity(frag.len() + extra.len());
        out.push_str(&frag[..name_end]);
        out.push_str(&extra);
        out.push_str(&frag[name_end..]);
        Ok(out)
    }
}

/// The prefixes (`""` for the default namespace) the start tag of `fragment` declares.
fn start_tag_declarations(fragment: &str) -> Result<Vec<String>, String> {
    let mut r = quick_xml::Reader::from_str(fragment);
    loop {
        match r.read_event().map_err(|e| e.to_string())? {
            quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e) => {
                let mut out = Vec::new();
                for a in e.attributes().with_checks(false) {
                    let a = a.map_err(|e| e.to_string())?;
                    let key: &str = a.key.into_inner();
                    if key == "xmlns" {
                        out.push(String::new());
                    } else if let Some(p) = key.strip_prefix("xmlns:") {
                        out.push(p.to_owned());
                    }
                }
                return Ok(out);
            }
            quick_xml::events::Event::Eof => return Err("no start tag".into()),
            _ => {}
        }
    }
}

/// The name as written of an attribute whose expanded name (or, for an undeclared prefix, whose name as
/// written) an earlier attribute of the same element already has. Pairwise for the usual handful of
/// attributes; through a hash set above that, so an element with a huge number of attributes costs linear
/// time, not quadratic.
fn duplicate_attribute<'a>(attrs: &[Attr<'a>]) -> Option<&'a str> {
    // an undeclared prefix has no namespace to compare, so it is compared as written
    fn key<'a, 'b>(a: &'b Attr<'a>) -> (bool, &'b str, &'b str) {
        match a.ns {
            Ns::Undeclared => (true, a.qname, ""),
            _ => (false, a.ns.uri(), a.local),
        }
    }
    // the same test as `key(a) == key(b)`, cheapest comparison first
    fn same(a: &Attr<'_>, b: &Attr<'_>) -> bool {
        a.local == b.local
            && match (&a.ns, &b.ns) {
                (Ns::Undeclared, _) | (_, Ns::Undeclared) => a.qname == b.qname,
                (x, y) => x == y,
            }
    }
    if attrs.len() <= 16 {
        for (i, a) in attrs.iter().enumerate() {
            if attrs[..i].iter().any(|b| same(a, b)) {
                return Some(a.qname);
            }
        }
        return None;
    }
    let mut seen = std::collections::HashSet::with_capacity(attrs.len());
    attrs.iter().find(|a| !seen.insert(key(a))).map(|a| a.qname)
}

/// `prefix:local` split at its colon. A byte scan: names are short, and `str::split_once` with a
/// `char` pattern was a measurable part of reading an element.
#[inline]
fn split_qname(qname: &str) -> Option<(&str, &str)> {
    let i = qname.bytes().position(|b| b == b':')?;
    // ':' is ASCII, so both sides are on char boundaries
    Some((&qname[..i], &qname[i + 1..]))
}

/// `prefix:local` split as [`split_qname`], or [`XmlError::Syntax`] when it is not a QName of
/// Namespaces in XML 1.0 §4 (an empty prefix or local part, or a second colon).
#[inline]
fn qname_parts(qname: &str, at: usize) -> Result<Option<(&str, &str)>, XmlError> {
    match split_qname(qname) {
        // a byte scan, as in split_qname: `contains(':')` was measurable per element
        Some((p, l)) if p.is_empty() || l.is_empty() || l.bytes().any(|b| b == b':') => {
            Err(XmlError::Syntax {
                pos: at as u64,
                msg: format!("'{qname}' is not a namespace-well-formed name"),
            })
        }
        r => Ok(r),
    }
}

/// `name` split as `prefix:local` (`None`: unprefixed) when it is a QName of Namespaces in XML 1.0 §4
/// whose parts are NCNames (XML 1.0 §2.3 Name productions without `:`); otherwise why not.
fn checked_qname(name: &str) -> Result<Option<(&str, &str)>, String> {
    let bad = || format!("'{name}' is not a namespace-well-formed name");
    let parts = match split_qname(name) {
        Some((p, l)) => {
            if !is_ncname(p) || !is_ncname(l) {
                return Err(bad());
            }
            Some((p, l))
        }
        None if is_ncname(name) => None,
        None => return Err(bad()),
    };
    Ok(parts)
}

/// Whether `s` is an NCName: an XML 1.0 (fifth edition) §2.3 `Name` without `:`.
fn is_ncname(s: &str) -> bool {
    fn start(c: char) -> bool {
        matches!(c,
            'A'..='Z' | '_' | 'a'..='z'
            | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
            | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}'
            | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}'
            | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
    }
    fn rest(c: char) -> bool {
        start(c)
            || matches!(c,
                '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
    }
    let mut cs = s.chars();
    cs.next().is_some_and(start) && cs.all(rest)
}

/// Namespace URI prefix given by [`Reader::raw_fragment`] to a prefix that was used without any
/// declaration: `urn:duo:undeclared-prefix:<prefix>`, the prefix percent-encoded beyond ASCII letters and
/// digits.
pub const UNDECLARED_PREFIX_NS: &str = "urn:duo:undeclared-prefix:";

/// The prefixes a fragment uses where the fragment itself does not declare them (`""`: an unprefixed
/// element name with no default namespace declared around it), each once, in order of first use; `xml`
/// never. Read with quick-xml, so whitespace around `=` or a `>` inside a value cannot hide a name, and
/// in time linear in the fragment: the prefixes in scope are counted in a map, not searched in a list.
fn unbound_prefixes(raw: &str) -> Result<Vec<&str>, String> {
    use std::collections::{HashMap, HashSet};
    let rebase = |n: &str| reborrow(raw, n).ok_or_else(|| "name outside the fragment".to_owned());
    let mut in_scope: HashMap<&str, usize> = HashMap::new();
    // the prefixes declared by each open element, to take out of scope at its end
    let mut open: Vec<Vec<&str>> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut unbound: Vec<&str> = Vec::new();
    let mut r = quick_xml::Reader::from_str(raw);
    loop {
        let (e, empty) = match r.read_event().map_err(|e| e.to_string())? {
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::End(_) => {
                for p in open.pop().unwrap_or_default() {
                    if let Some(n) = in_scope.get_mut(p) {
                        *n -= 1;
                    }
                }
                continue;
            }
            Event::Eof => return Ok(unbound),
            _ => continue,
        };
        let mut declared = Vec::new();
        let mut used = Vec::new();
        for a in e.attributes().with_checks(false) {
            let a = a.map_err(|e| e.to_string())?;
            let key = rebase(a.key.into_inner())?;
            // The reader only checks the names of the elements it consumes; a fragment passed on
            // whole must be namespace-well-formed throughout, or the next hop refuses it.
            let parts = checked_qname(key)?;
            if key == "xmlns" {
                declared.push("");
            } else if let Some(("xmlns", p)) = parts {
                if p == "xmlns" {
                    return Err("the prefix xmlns may not be declared".into());
                }
                declared.push(p);
            } else if let Some((p, _)) = parts {
                used.push(p);
            }
        }
        let name = rebase(e.name().into_inner())?;
        match checked_qname(name)? {
            Some(("xmlns", _)) => {
                return Err(format!("the element name '{name}' uses the prefix xmlns"));
            }
            Some((p, _)) => used.push(p),
            None => used.push(""),
        }
        for p in &declared {
            *in_scope.entry(p).or_insert(0) += 1;
        }
        for p in used {
            if p != "xml" && in_scope.get(p).is_none_or(|n| *n == 0) && seen.insert(p) {
                unbound.push(p);
            }
        }
        if empty {
            for p in declared {
                if let Some(n) = in_scope.get_mut(p) {
                    *n -= 1;
                }
            }
        } else {
            open.push(declared);
        }
    }
}

/// `part`, a slice quick-xml handed out with the lifetime of its event, re-borrowed from `whole`, the
/// in-memory input it points into, so it can outlive the event; `None` when it does not point into it.
fn reborrow<'w>(whole: &'w str, part: &str) -> Option<&'w str> {
    let off = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    whole
        .get(off..off.checked_add(part.len())?)
        .filter(|r| r.as_ptr() == part.as_ptr())
}

/// Appends `v` escaped for a double-quoted attribute value; tab, newline and carriage return as
/// character references, so the next parser's attribute-value normalisation does not turn them into
/// spaces.
fn push_attr_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
}

fn resolve_ref(g: &quick_xml::events::BytesRef<'_>) -> Result<char, XmlError> {
    if g.is_char_ref() {
        return match g.resolve_char_ref() {
            Ok(Some(c)) => Ok(c),
            _ => Err(XmlError::Entity(g.to_string())),
        };
    }
    match &**g {
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "amp" => Ok('&'),
        "apos" => Ok('\''),
        "quot" => Ok('"'),
        other => Err(XmlError::Entity(other.to_owned())),
    }
}
