//! XSD validation with libxml2, through a thin FFI (the `libxml` crate needs libclang at build
//! time; the system `libxml2` is enough here).
//!
//! * [`validate_body`] checks a SOAP 1.1 envelope whose Body holds exactly one element, and that
//!   element strictly against `wsdl/xsd/paForNode.xsd`. It compiles a tiny wrapper schema for
//!   the envelope namespace: `Envelope` = optional `Header` (anything, lax) + `Body`, and `Body`
//!   = one `xs:any` from the paForNode namespace with `processContents="strict"`, importing
//!   paForNode.xsd. The whole document is then validated with `xmlSchemaValidateDoc`, which
//!   needs no walking of libxml2's node structs from Rust. An element in another namespace (or
//!   none) fails ("This element is not expected"), an undeclared one in the paForNode namespace
//!   too ("No matching global element declaration available").
//! * [`validate_flow`] checks a whole FlussoRiversamento document against
//!   `xsd-common/FlussoRiversamento_1_0_4.xsd`.
//!
//! Schemas come from `MPAY_XSD_DIR` or `shared/pagopa/xsd` next to the repository. They are
//! compiled once per thread (libxml2 schema objects are not `Send`). Documents are parsed with
//! `XML_PARSE_NONET`, and the external-entity loader is libxml2's no-network one, so schema
//! imports cannot reach the network either. Error messages are collected with the structured
//! error callbacks and returned joined by newlines.
// The workspace denies unsafe code; this module is the one place that talks to C. The unsafe
// surface is: the extern declarations, one callback reading libxml2's error struct, and calls
// whose pointers are checked for null and freed by the owning guards below.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::path::PathBuf;
use std::ptr;
use std::sync::Once;

/// Opaque libxml2 types.
#[repr(C)]
struct XmlDoc {
    _opaque: [u8; 0],
}
#[repr(C)]
struct XmlSchema {
    _opaque: [u8; 0],
}
#[repr(C)]
struct XmlSchemaParserCtxt {
    _opaque: [u8; 0],
}
#[repr(C)]
struct XmlSchemaValidCtxt {
    _opaque: [u8; 0],
}

/// The leading fields of libxml2's `struct _xmlError` (xmlerror.h, stable since 2.6). Only read
/// through a pointer libxml2 hands us, so declaring the prefix is enough; `level` and `file` are
/// there for the layout.
#[repr(C)]
#[allow(dead_code)]
struct XmlError {
    domain: c_int,
    code: c_int,
    message: *const c_char,
    level: c_int,
    file: *const c_char,
    line: c_int,
}

type StructuredErrorFn = unsafe extern "C" fn(user: *mut c_void, error: *const XmlError);
type EntityLoader =
    unsafe extern "C" fn(url: *const c_char, id: *const c_char, ctxt: *mut c_void) -> *mut c_void;

/// `XML_PARSE_NONET`: forbid network access while parsing.
const XML_PARSE_NONET: c_int = 1 << 11;

#[link(name = "xml2")]
unsafe extern "C" {
    fn xmlInitParser();
    fn xmlSetExternalEntityLoader(loader: Option<EntityLoader>);
    fn xmlNoNetExternalEntityLoader(
        url: *const c_char,
        id: *const c_char,
        ctxt: *mut c_void,
    ) -> *mut c_void;
    fn xmlSetStructuredErrorFunc(user: *mut c_void, handler: Option<StructuredErrorFn>);
    fn xmlReadMemory(
        buffer: *const c_char,
        size: c_int,
        url: *const c_char,
        encoding: *const c_char,
        options: c_int,
    ) -> *mut XmlDoc;
    fn xmlFreeDoc(doc: *mut XmlDoc);
    fn xmlSchemaNewParserCtxt(url: *const c_char) -> *mut XmlSchemaParserCtxt;
    fn xmlSchemaNewMemParserCtxt(buffer: *const c_char, size: c_int) -> *mut XmlSchemaParserCtxt;
    fn xmlSchemaSetParserStructuredErrors(
        ctxt: *mut XmlSchemaParserCtxt,
        handler: Option<StructuredErrorFn>,
        user: *mut c_void,
    );
    fn xmlSchemaParse(ctxt: *mut XmlSchemaParserCtxt) -> *mut XmlSchema;
    fn xmlSchemaFreeParserCtxt(ctxt: *mut XmlSchemaParserCtxt);
    fn xmlSchemaFree(schema: *mut XmlSchema);
    fn xmlSchemaNewValidCtxt(schema: *mut XmlSchema) -> *mut XmlSchemaValidCtxt;
    fn xmlSchemaSetValidStructuredErrors(
        ctxt: *mut XmlSchemaValidCtxt,
        handler: Option<StructuredErrorFn>,
        user: *mut c_void,
    );
    fn xmlSchemaValidateDoc(ctxt: *mut XmlSchemaValidCtxt, doc: *mut XmlDoc) -> c_int;
    fn xmlSchemaFreeValidCtxt(ctxt: *mut XmlSchemaValidCtxt);
}

/// Collects one libxml2 error into the `Vec<String>` registered as `user`.
unsafe extern "C" fn collect(user: *mut c_void, error: *const XmlError) {
    // SAFETY: `user` is always a `*mut Vec<String>` that outlives the libxml2 call during which
    // the callback is registered (see `Errors`); `error` is valid for the callback's duration.
    let (errors, error) = unsafe { (&mut *user.cast::<Vec<String>>(), error.as_ref()) };
    let Some(error) = error else { return };
    let message = if error.message.is_null() {
        format!("libxml2 error {} (domain {})", error.code, error.domain)
    } else {
        // SAFETY: a non-null `message` is a NUL-terminated C string owned by libxml2.
        unsafe { CStr::from_ptr(error.message) }
            .to_string_lossy()
            .trim_end()
            .to_owned()
    };
    errors.push(if error.line > 0 {
        format!("line {}: {message}", error.line)
    } else {
        message
    });
}

/// Error sink handed to libxml2 as `user`; it stays in place (is not moved) while registered.
struct Errors(Vec<String>);

impl Errors {
    fn new() -> Errors {
        Errors(Vec::new())
    }

    fn user(&mut self) -> *mut c_void {
        ptr::from_mut::<Vec<String>>(&mut self.0).cast()
    }

    fn joined(&self, fallback: &str) -> String {
        if self.0.is_empty() {
            fallback.to_owned()
        } else {
            self.0.join("\n")
        }
    }
}

fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // SAFETY: plain initialisation calls with no pointers but a libxml2 function of the right
        // type; done once, before any parsing.
        unsafe {
            xmlInitParser();
            xmlSetExternalEntityLoader(Some(xmlNoNetExternalEntityLoader));
        }
    });
}

/// The folder holding `wsdl/` and `xsd-common/`.
pub fn xsd_dir() -> PathBuf {
    match std::env::var_os("MPAY_XSD_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/pagopa/xsd"
        )),
    }
}

/// A compiled schema, freed on drop.
struct Schema(*mut XmlSchema);

impl Drop for Schema {
    fn drop(&mut self) {
        // SAFETY: `self.0` came from `xmlSchemaParse`, is non-null and freed only here.
        unsafe { xmlSchemaFree(self.0) }
    }
}

/// Compiles a schema from a parser context (consumed).
fn compile(ctxt: *mut XmlSchemaParserCtxt, what: &str) -> Result<Schema, String> {
    if ctxt.is_null() {
        return Err(format!("{what}: cannot create a schema parser"));
    }
    let mut errors = Errors::new();
    // SAFETY: `ctxt` is a live parser context; `errors` outlives the parse; the context is freed
    // once, right after.
    let schema = unsafe {
        xmlSchemaSetParserStructuredErrors(ctxt, Some(collect), errors.user());
        let schema = xmlSchemaParse(ctxt);
        xmlSchemaFreeParserCtxt(ctxt);
        schema
    };
    if schema.is_null() {
        return Err(format!(
            "{what}: schema does not compile: {}",
            errors.joined("(no message)")
        ));
    }
    Ok(Schema(schema))
}

fn compile_file(relative: &str) -> Result<Schema, String> {
    init();
    let path = xsd_dir().join(relative);
    let path = path
        .canonicalize()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let c_path = std::ffi::CString::new(path.to_string_lossy().as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: `c_path` is a NUL-terminated path that lives through the call.
    let ctxt = unsafe { xmlSchemaNewParserCtxt(c_path.as_ptr()) };
    compile(ctxt, &path.display().to_string())
}

fn escape_attr(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('"', "&quot;")
}

/// The envelope wrapper described in the module documentation.
fn compile_body_schema() -> Result<Schema, String> {
    init();
    let path = xsd_dir().join("wsdl/xsd/paForNode.xsd");
    let path = path
        .canonicalize()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let wrapper = format!(
        r###"<?xml version="1.0" encoding="UTF-8"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"
           targetNamespace="http://schemas.xmlsoap.org/soap/envelope/"
           elementFormDefault="qualified">
  <xs:import namespace="http://pagopa-api.pagopa.gov.it/pa/paForNode.xsd"
             schemaLocation="{location}"/>
  <xs:element name="Envelope">
    <xs:complexType>
      <xs:sequence>
        <xs:element name="Header" minOccurs="0">
          <xs:complexType>
            <xs:sequence>
              <xs:any namespace="##any" processContents="lax" minOccurs="0" maxOccurs="unbounded"/>
            </xs:sequence>
            <xs:anyAttribute namespace="##other" processContents="lax"/>
          </xs:complexType>
        </xs:element>
        <xs:element name="Body">
          <xs:complexType>
            <xs:sequence>
              <xs:any namespace="http://pagopa-api.pagopa.gov.it/pa/paForNode.xsd"
                      processContents="strict" minOccurs="1" maxOccurs="1"/>
            </xs:sequence>
            <xs:anyAttribute namespace="##other" processContents="lax"/>
          </xs:complexType>
        </xs:element>
      </xs:sequence>
      <xs:anyAttribute namespace="##other" processContents="lax"/>
    </xs:complexType>
  </xs:element>
</xs:schema>
"###,
        location = escape_attr(&path.to_string_lossy())
    );
    let size = c_int::try_from(wrapper.len()).map_err(|e| e.to_string())?;
    // SAFETY: `wrapper` outlives the parser context, which `compile` frees before returning.
    let ctxt = unsafe { xmlSchemaNewMemParserCtxt(wrapper.as_ptr().cast(), size) };
    compile(ctxt, "SOAP envelope wrapper for paForNode.xsd")
}

/// A parsed document, freed on drop.
struct Doc(*mut XmlDoc);

impl Drop for Doc {
    fn drop(&mut self) {
        // SAFETY: `self.0` came from `xmlReadMemory`, is non-null and freed only here.
        unsafe { xmlFreeDoc(self.0) }
    }
}

fn validate_with(schema: &Result<Schema, String>, xml: &str) -> Result<(), String> {
    let schema = schema.as_ref().map_err(Clone::clone)?;
    let size = c_int::try_from(xml.len()).map_err(|_| "document too large".to_owned())?;
    let mut errors = Errors::new();
    // SAFETY: `xml` lives through the call and `size` is its length; the structured error
    // handler points at `errors`, which outlives the call, and is removed right after.
    let doc = unsafe {
        xmlSetStructuredErrorFunc(errors.user(), Some(collect));
        let doc = xmlReadMemory(
            xml.as_ptr().cast(),
            size,
            ptr::null(),
            ptr::null(),
            XML_PARSE_NONET,
        );
        xmlSetStructuredErrorFunc(ptr::null_mut(), None);
        doc
    };
    if doc.is_null() {
        return Err(format!(
            "not well-formed XML: {}",
            errors.joined("(no message)")
        ));
    }
    let doc = Doc(doc);
    // SAFETY: `schema.0` and `doc.0` are live; the validation context is created, used and
    // freed here; `errors` outlives it.
    let rc = unsafe {
        let ctxt = xmlSchemaNewValidCtxt(schema.0);
        if ctxt.is_null() {
            return Err("cannot create a validation context".to_owned());
        }
        xmlSchemaSetValidStructuredErrors(ctxt, Some(collect), errors.user());
        let rc = xmlSchemaValidateDoc(ctxt, doc.0);
        xmlSchemaFreeValidCtxt(ctxt);
        rc
    };
    match rc {
        0 => Ok(()),
        rc => Err(errors.joined(&format!("invalid (libxml2 code {rc})"))),
    }
}

thread_local! {
    static BODY_SCHEMA: Result<Schema, String> = compile_body_schema();
    static FLOW_SCHEMA: Result<Schema, String> =
        compile_file("xsd-common/FlussoRiversamento_1_0_4.xsd");
}

/// Validates a SOAP 1.1 envelope: exactly one element in the Body, valid against paForNode.xsd.
/// On failure returns libxml2's messages, one per line.
pub fn validate_body(envelope: &str) -> Result<(), String> {
    BODY_SCHEMA.with(|schema| validate_with(schema, envelope))
}

/// Validates a FlussoRiversamento document against `FlussoRiversamento_1_0_4.xsd`.
pub fn validate_flow(xml: &str) -> Result<(), String> {
    FLOW_SCHEMA.with(|schema| validate_with(schema, xml))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(name: &str) -> String {
        let path = xsd_dir().join("../examples").join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn flows_validate() {
        validate_flow(&example("11_FlussoRiversamento_decoded_from_10.xml")).expect("11");
        validate_flow(&example("12_FlussoRiversamento_sanp_example.xml")).expect("12");
    }

    #[test]
    fn broken_flow_is_rejected() {
        let xml = example("12_FlussoRiversamento_sanp_example.xml").replace(
            "<importoTotalePagamenti>1234.56",
            "<importoTotalePagamenti>1234.5",
        );
        let e = validate_flow(&xml).expect_err("one decimal");
        assert!(e.contains("importoTotalePagamenti"), "{e}");
        let e = validate_flow("<FlussoRiversamento").expect_err("not XML");
        assert!(e.starts_with("not well-formed XML"), "{e}");
    }

    #[test]
    fn wrong_body_namespace_is_rejected() {
        // Example 01 binds its body element to nodeForPsp.xsd.
        let xml = example("01_paVerifyPaymentNoticeReq.xml");
        let e = validate_body(&xml).expect_err("nodeForPsp namespace");
        assert!(
            e.contains("nodeForPsp.xsd}paVerifyPaymentNoticeReq': This element is not expected"),
            "{e}"
        );
        let fixed = xml.replace(
            "http://pagopa-api.pagopa.gov.it/node/nodeForPsp.xsd",
            "http://pagopa-api.pagopa.gov.it/pa/paForNode.xsd",
        );
        validate_body(&fixed).expect("fixed example 01");
        validate_body(&example("03_paGetPaymentReq.xml")).expect("example 03");
        // Right namespace, element the schema does not declare.
        let unknown = fixed.replace("paVerifyPaymentNoticeReq", "paVerifyPaymentNoticeRequest");
        let e = validate_body(&unknown).expect_err("undeclared element");
        assert!(e.contains("No matching global element declaration"), "{e}");
    }

    #[test]
    fn envelope_rules() {
        let ns = "http://pagopa-api.pagopa.gov.it/pa/paForNode.xsd";
        let ok = format!(
            "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body>\
             <p:paSendRTRes xmlns:p=\"{ns}\"><outcome>OK</outcome></p:paSendRTRes></s:Body>\
             </s:Envelope>"
        );
        validate_body(&ok).expect("minimal");
        let two = ok.replace(
            "</s:Body>",
            &format!(
                "<p:paSendRTRes xmlns:p=\"{ns}\"><outcome>OK</outcome></p:paSendRTRes></s:Body>"
            ),
        );
        assert!(validate_body(&two).is_err());
        let soap12 = ok.replace(
            "http://schemas.xmlsoap.org/soap/envelope/",
            "http://www.w3.org/2003/05/soap-envelope",
        );
        assert!(validate_body(&soap12).is_err());
        let doctype = format!("<!DOCTYPE x SYSTEM \"http://example.invalid/x.dtd\">{ok}");
        // NONET: the external DTD is not fetched (it is not needed to parse, so the document is
        // still read and validated).
        validate_body(&doctype).expect("no network access needed");
    }
}
