//! A minimal XML writer: qualified names with the canonical prefixes the codecs choose, escaped text
//! and attribute values, and empty-element shortening. It never produces a DTD or an entity reference
//! other than the predefined ones.

use quick_xml::escape::{escape, partial_escape};

/// Builds an XML document in a `String`.
///
/// `start(name)` opens a tag whose attributes follow with `attr`; the tag is closed by the first
/// content, child or `end()`. Names are written as given (`rim:Slot`), so the caller declares the
/// prefixes it uses with `attr("xmlns:rim", ns::RIM)`.
#[derive(Debug, Default)]
pub struct Writer {
    out: String,
    stack: Vec<String>,
    open: bool,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Writer {
        Writer::default()
    }

    /// An empty writer with `cap` bytes reserved.
    pub fn with_capacity(cap: usize) -> Writer {
        Writer {
            out: String::with_capacity(cap),
            ..Writer::default()
        }
    }

    /// Writes the XML declaration (UTF-8).
    pub fn decl(&mut self) -> &mut Self {
        self.out
            .push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
        self
    }

    fn close_open(&mut self) {
        if self.open {
            self.out.push('>');
            self.open = false;
        }
    }

    /// Opens element `name`.
    pub fn start(&mut self, name: &str) -> &mut Self {
        self.close_open();
        self.out.push('<');
        self.out.push_str(name);
        self.stack.push(name.to_owned());
        self.open = true;
        self
    }

    /// Adds an attribute to the element just opened. Ignored (debug-asserted) when no tag is open.
    pub fn attr(&mut self, name: &str, value: &str) -> &mut Self {
        debug_assert!(self.open, "attribute {name} written outside a start tag");
        if self.open {
            self.out.push(' ');
            self.out.push_str(name);
            self.out.push_str("=\"");
            self.out.push_str(&escape(value));
            self.out.push('"');
        }
        self
    }

    /// Adds the attribute when `value` is `Some`.
    pub fn attr_opt(&mut self, name: &str, value: Option<&str>) -> &mut Self {
        if let Some(v) = value {
            self.attr(name, v);
        }
        self
    }

    /// Writes escaped character data.
    pub fn text(&mut self, t: &str) -> &mut Self {
        self.close_open();
        self.out.push_str(&partial_escape(t));
        self
    }

    /// Writes pre-serialised XML (a raw header block passed on) as is.
    pub fn raw(&mut self, xml: &str) -> &mut Self {
        self.close_open();
        self.out.push_str(xml);
        self
    }

    /// Closes the innermost open element (`<x/>` when it has no content).
    pub fn end(&mut self) -> &mut Self {
        let name = self.stack.pop();
        if self.open {
            self.out.push_str("/>");
            self.open = false;
        } else if let Some(n) = name {
            self.out.push_str("</");
            self.out.push_str(&n);
            self.out.push('>');
        }
        self
    }

    /// `<name>text</name>`.
    pub fn leaf(&mut self, name: &str, text: &str) -> &mut Self {
        self.start(name).text(text).end()
    }

    /// Closes every open element and returns the document.
    pub fn finish(mut self) -> String {
        while !self.stack.is_empty() {
            self.end();
        }
        self.out
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.out.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }
}
