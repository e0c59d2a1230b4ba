//! The node's side of the reporting flows, simulated for the demo: the flows the demo's PSPs
//! publish are served over nodeForPa SOAP (`nodoChiediElencoFlussiRendicontazione`,
//! `nodoChiediFlussoRendicontazione`, base64) and over the FdR REST service (the paged list, a
//! revision, its paged payments), checking the station's password and the subscription key as
//! the node does. The daemon fetches them with its own client (`node.rs`, `fdr.rs`), so the demo
//! plays the whole path.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use jiff::civil::Date;

use super::settlement::{Row, flow_document};
use crate::pagopa::soap::{Elem, read_tree};

/// One published revision of a flow.
#[derive(Clone, Debug)]
pub struct Published {
    pub entity: String,
    pub id: String,
    /// `dataOraFlusso`; a later one is a revision.
    pub time: String,
    pub revision: u64,
    /// When the FdR service published it (RFC 3339).
    pub published: String,
    pub psp: String,
    pub settled: Date,
    pub rows: Vec<Row>,
    /// A declared total other than the rows' (a PSP's mistake).
    pub declared: Option<i64>,
}

impl Published {
    fn xml(&self) -> String {
        flow_document(
            &self.id,
            &self.time,
            self.settled,
            &self.psp,
            &self.entity,
            &self.rows,
            self.declared,
        )
    }
}

/// What the simulated node serves; the demo's settlement publishes into it.
#[derive(Default)]
pub struct Catalogue {
    flows: Mutex<Vec<Published>>,
}

impl Catalogue {
    /// Publishes a flow, or a revision of one (it replaces the earlier in the node's lists).
    pub fn publish(&self, p: Published) {
        let mut flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
        flows.retain(|f| !(f.entity == p.entity && f.id == p.id));
        flows.push(p);
    }

    fn of(&self, entity: &str) -> Vec<Published> {
        let flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
        flows
            .iter()
            .filter(|f| f.entity == entity)
            .cloned()
            .collect()
    }
}

struct Node {
    catalogue: Arc<Catalogue>,
    password: String,
    key: String,
}

/// Serves the catalogue on `listener` (bound beforehand, so that the daemon's configuration can
/// name it); call within the runtime.
pub fn serve(
    listener: std::net::TcpListener,
    catalogue: Arc<Catalogue>,
    password: String,
    key: String,
) -> std::io::Result<()> {
    let node = Arc::new(Node {
        catalogue,
        password,
        key,
    });
    let app = Router::new()
        .route("/nodo", post(soap))
        .route("/fdr/organizations/{ec}/fdrs", get(fdr_list))
        .route(
            "/fdr/organizations/{ec}/fdrs/{fdr}/revisions/{rev}/psps/{psp}",
            get(fdr_flow),
        )
        .route(
            "/fdr/organizations/{ec}/fdrs/{fdr}/revisions/{rev}/psps/{psp}/payments",
            get(fdr_payments),
        )
        .with_state(node);
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("the simulated node stopped: {e}");
        }
    });
    Ok(())
}

fn find<'a>(e: &'a Elem, local: &str) -> Option<&'a Elem> {
    if e.local == local {
        return Some(e);
    }
    e.children.iter().find_map(|c| find(c, local))
}

fn leaf(e: &Elem, local: &str) -> String {
    find(e, local)
        .map(|l| l.text.trim().to_owned())
        .unwrap_or_default()
}

fn keyed(node: &Node, headers: &HeaderMap) -> bool {
    headers
        .get("ocp-apim-subscription-key")
        .and_then(|v| v.to_str().ok())
        == Some(node.key.as_str())
}

async fn soap(State(node): State<Arc<Node>>, headers: HeaderMap, body: String) -> Response {
    let Ok(root) = read_tree(&body) else {
        return (StatusCode::BAD_REQUEST, "not SOAP").into_response();
    };
    let operation = [
        "nodoChiediElencoFlussiRendicontazione",
        "nodoChiediFlussoRendicontazione",
    ]
    .into_iter()
    .find(|op| find(&root, op).is_some())
    .unwrap_or("unknown");
    let fault = |code: &str, text: &str| {
        format!(
            "<fault><faultCode>{code}</faultCode><faultString>{text}</faultString>\
             <id>NodoDeiPagamentiSPC</id></fault>"
        )
    };
    let entity = leaf(&root, "identificativoDominio");
    let inner = if !keyed(&node, &headers) || leaf(&root, "password") != node.password {
        fault("PPT_AUTENTICAZIONE", "wrong password or subscription key")
    } else if operation == "nodoChiediElencoFlussiRendicontazione" {
        let flows = node.catalogue.of(&entity);
        let ids: String = flows
            .iter()
            .map(|f| {
                format!(
                    "<idRendicontazione><identificativoFlusso>{}</identificativoFlusso>\
                     <dataOraFlusso>{}</dataOraFlusso></idRendicontazione>",
                    f.id, f.time
                )
            })
            .collect();
        format!(
            "<elencoFlussiRendicontazione><totRestituiti>{}</totRestituiti>{ids}\
             </elencoFlussiRendicontazione>",
            flows.len()
        )
    } else if operation == "nodoChiediFlussoRendicontazione" {
        let id = leaf(&root, "identificativoFlusso");
        match node.catalogue.of(&entity).into_iter().find(|f| f.id == id) {
            Some(f) => format!(
                "<xmlRendicontazione>{}</xmlRendicontazione>",
                base64::engine::general_purpose::STANDARD.encode(f.xml())
            ),
            None => fault("PPT_ID_FLUSSO_SCONOSCIUTO", "unknown flow"),
        }
    } else {
        fault("PPT_SINTASSI_EXTRAXSD", "unknown operation")
    };
    let answer = format!(
        "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         xmlns:ppt=\"http://ws.pagamenti.telematici.gov/\"><soapenv:Body>\
         <ppt:{operation}Risposta>{inner}</ppt:{operation}Risposta></soapenv:Body>\
         </soapenv:Envelope>"
    );
    ([("content-type", "text/xml")], answer).into_response()
}

fn fdr_error(status: StatusCode, code: &str) -> Response {
    let body = serde_json::json!({
        "errorId": "simulated",
        "httpStatusCode": status.as_u16(),
        "appErrorCode": code,
        "errors": [],
    });
    (status, axum::Json(body)).into_response()
}

/// One page of `items`, in the FdR service's envelope.
fn page(
    items: Vec<serde_json::Value>,
    query: &std::collections::HashMap<String, String>,
) -> Response {
    let size: usize = query
        .get("size")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000)
        .clamp(1, 1000);
    let number: usize = query
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let pages = items.len().div_ceil(size).max(1);
    let data: Vec<_> = items
        .into_iter()
        .skip((number - 1) * size)
        .take(size)
        .collect();
    axum::Json(serde_json::json!({
        "metadata": { "pageSize": size, "pageNumber": number, "totPage": pages },
        "count": data.len(),
        "data": data,
    }))
    .into_response()
}

fn euros(cents: i64) -> serde_json::Value {
    // Numbers as the service writes them; the client reads their text, never a float.
    serde_json::Value::Number(
        format!("{}.{:02}", cents / 100, cents % 100)
            .parse()
            .unwrap_or_else(|_| serde_json::Number::from(0)),
    )
}

async fn fdr_list(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Path(ec): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    if !keyed(&node, &headers) {
        return fdr_error(StatusCode::UNAUTHORIZED, "FDR-0401");
    }
    let items = node
        .catalogue
        .of(&ec)
        .into_iter()
        .map(|f| {
            serde_json::json!({
                "fdr": f.id, "pspId": f.psp, "revision": f.revision,
                "published": f.published, "flowDate": f.time,
            })
        })
        .collect();
    page(items, &query)
}

/// The published revision a path names.
fn revision(node: &Node, ec: &str, fdr: &str, rev: &str) -> Option<Published> {
    node.catalogue
        .of(ec)
        .into_iter()
        .find(|f| f.id == fdr && f.revision.to_string() == rev)
}

async fn fdr_flow(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Path((ec, fdr, rev, _psp)): Path<(String, String, String, String)>,
) -> Response {
    if !keyed(&node, &headers) {
        return fdr_error(StatusCode::UNAUTHORIZED, "FDR-0401");
    }
    let Some(f) = revision(&node, &ec, &fdr, &rev) else {
        return fdr_error(StatusCode::NOT_FOUND, "FDR-0702");
    };
    let sum: i64 = f.rows.iter().map(|r| r.cents).sum();
    axum::Json(serde_json::json!({
        "status": "PUBLISHED", "revision": f.revision, "published": f.published,
        "fdr": f.id, "fdrDate": f.time, "regulation": format!("SCT-{}", f.id),
        "regulationDate": f.settled.to_string(), "bicCodePouringBank": f.psp,
        "sender": { "type": "BIC_CODE", "id": f.psp, "pspId": f.psp, "pspName": "Banca Demo" },
        "receiver": { "id": f.entity, "organizationId": f.entity },
        "totPayments": f.rows.len(), "sumPayments": euros(f.declared.unwrap_or(sum)),
    }))
    .into_response()
}

async fn fdr_payments(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    Path((ec, fdr, rev, _psp)): Path<(String, String, String, String)>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    if !keyed(&node, &headers) {
        return fdr_error(StatusCode::UNAUTHORIZED, "FDR-0401");
    }
    let Some(f) = revision(&node, &ec, &fdr, &rev) else {
        return fdr_error(StatusCode::NOT_FOUND, "FDR-0702");
    };
    let status = |code: u8| match code {
        3 => "REVOKED",
        4 => "STAND_IN",
        8 => "STAND_IN_NO_RPT",
        9 => "NO_RPT",
        _ => "EXECUTED",
    };
    let items = f
        .rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            serde_json::json!({
                "index": i + 1, "iuv": r.iuv, "iur": r.iur, "idTransfer": r.transfer,
                "pay": euros(r.cents), "payStatus": status(r.code),
                "payDate": format!("{}T12:00:00Z", r.date),
            })
        })
        .collect();
    page(items, &query)
}
