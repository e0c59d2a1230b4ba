//! mpay calling pagoPA's node (`nodeForPa`, PROTOCOL.md §9) for the reporting flows:
//! `nodoChiediElencoFlussiRendicontazione` lists an entity's flows (the node keeps the latest
//! revision of each, for about 30 days), `nodoChiediFlussoRendicontazione` gives one, base64.
//! Every call has a timeout and is retried with backoff and jitter; a `PPT_*` fault or an HTTP
//! error is reported to the caller, never a crash. New flows go through `service::flows`, like
//! those brought by hand. `[node] interface = "fdr"` takes them from the FdR REST service
//! instead (`fdr.rs`), through the same client and retries.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use mpay_common::ids::EntityFiscalCode;
use mpay_common::ledger::Actor;

use crate::App;
use crate::config::NodeConfig;
use crate::pagopa::soap::{Elem, read_tree};
use crate::service::flows::{self, Received};

const NODE_NS: &str = "http://ws.pagamenti.telematici.gov/";
const ATTEMPTS: u32 = 3;

/// Why a call to the node failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("the node answered fault {code}: {description}")]
    Fault { code: String, description: String },
    #[error("calling the node: {0}")]
    Transport(String),
    #[error("the node's answer cannot be read: {0}")]
    Answer(String),
}

/// A client for the node, built from `[node]`.
pub struct Node {
    pub(crate) client: reqwest::Client,
    pub(crate) config: NodeConfig,
    broker: String,
    station: String,
}

impl Node {
    pub fn new(app: &App) -> Result<Option<Node>, NodeError> {
        let Some(config) = app.config.node.clone() else {
            return Ok(None);
        };
        let station = config
            .station
            .clone()
            .or_else(|| app.config.stations.first().map(|s| s.id.clone()))
            .unwrap_or_default();
        // The workspace's rustls provider (ring), the platform's roots.
        use rustls_platform_verifier::BuilderVerifierExt;
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_platform_verifier())
        .map_err(|e| NodeError::Transport(format!("TLS set-up: {e}")))?
        .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(Duration::from_secs(config.timeout_secs))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| NodeError::Transport(e.to_string()))?;
        Ok(Some(Node {
            client,
            broker: app.config.broker.id.to_string(),
            station,
            config,
        }))
    }

    fn envelope(&self, operation: &str, entity: &EntityFiscalCode, extra: &str) -> String {
        format!(
            "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
             xmlns:ws=\"{NODE_NS}\"><soapenv:Header/><soapenv:Body><ws:{operation}>\
             <identificativoIntermediarioPA>{}</identificativoIntermediarioPA>\
             <identificativoStazioneIntermediarioPA>{}</identificativoStazioneIntermediarioPA>\
             <password>{}</password><identificativoDominio>{entity}</identificativoDominio>\
             {extra}</ws:{operation}></soapenv:Body></soapenv:Envelope>",
            escape(&self.broker),
            escape(&self.station),
            escape(&self.config.password),
        )
    }

    /// Sends the request `build` makes, retried on transport errors and 5xx with backoff and
    /// jitter: the status and text of the first answer that is not a server error.
    pub(crate) async fn send(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<(reqwest::StatusCode, String), NodeError> {
        let mut last = NodeError::Transport("not called".into());
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                let jitter = fastrand::u64(0..250);
                tokio::time::sleep(Duration::from_millis(500 * (1 << attempt) + jitter)).await;
            }
            let mut request = build();
            if let Some(key) = &self.config.subscription_key {
                request = request.header("Ocp-Apim-Subscription-Key", key);
            }
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) => {
                    last = NodeError::Transport(e.to_string());
                    continue;
                }
            };
            let status = response.status();
            match response.text().await {
                Ok(text) if status.is_server_error() => {
                    last = NodeError::Transport(format!("HTTP {status}: {}", clip(&text)));
                }
                Ok(text) => return Ok((status, text)),
                Err(e) => last = NodeError::Transport(e.to_string()),
            }
        }
        Err(last)
    }

    /// One SOAP call; gives the answer's document once it is known to hold no fault.
    async fn call(&self, operation: &str, body: String) -> Result<Elem, NodeError> {
        let (status, text) = self
            .send(|| {
                self.client
                    .post(&self.config.url)
                    .header("Content-Type", "text/xml; charset=utf-8")
                    .header("SOAPAction", operation)
                    .body(body.clone())
            })
            .await?;
        if !status.is_success() {
            return Err(NodeError::Transport(format!(
                "HTTP {status}: {}",
                clip(&text)
            )));
        }
        let root = read_tree(&text).map_err(NodeError::Answer)?;
        let answer = find(&root, &format!("{operation}Risposta"))
            .ok_or_else(|| NodeError::Answer(format!("no {operation}Risposta")))?;
        if let Some(fault) = find(answer, "fault") {
            return Err(NodeError::Fault {
                code: leaf(fault, "faultCode").unwrap_or_default(),
                description: leaf(fault, "description")
                    .or_else(|| leaf(fault, "faultString"))
                    .unwrap_or_default(),
            });
        }
        Ok(root)
    }

    /// The entity's flows the node holds: (id, dataOraFlusso), each in its latest revision.
    pub async fn list(
        &self,
        entity: &EntityFiscalCode,
    ) -> Result<Vec<(String, String)>, NodeError> {
        let op = "nodoChiediElencoFlussiRendicontazione";
        let answer = self.call(op, self.envelope(op, entity, "")).await?;
        let Some(list) = find(&answer, "elencoFlussiRendicontazione") else {
            return Ok(Vec::new());
        };
        Ok(list
            .children
            .iter()
            .filter(|c| c.local == "idRendicontazione")
            .filter_map(|c| Some((leaf(c, "identificativoFlusso")?, leaf(c, "dataOraFlusso")?)))
            .collect())
    }

    /// One flow's document.
    pub async fn flow(&self, entity: &EntityFiscalCode, id: &str) -> Result<Vec<u8>, NodeError> {
        let op = "nodoChiediFlussoRendicontazione";
        let extra = format!(
            "<identificativoFlusso>{}</identificativoFlusso>",
            escape(id)
        );
        let answer = self.call(op, self.envelope(op, entity, &extra)).await?;
        let b64 = leaf(&answer, "xmlRendicontazione")
            .ok_or_else(|| NodeError::Answer("no xmlRendicontazione".into()))?;
        let compact: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
        base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|e| NodeError::Answer(format!("xmlRendicontazione is not base64: {e}")))
    }
}

/// What one fetch did for one entity.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Fetched {
    pub listed: usize,
    pub new: usize,
    pub errors: Vec<String>,
}

/// Fetches the entity's flows the store does not hold (new ids and new revisions). A flow that
/// fails is recorded in `errors` and does not stop the others.
pub async fn fetch(app: &Arc<App>, node: &Node, entity: &EntityFiscalCode) -> Fetched {
    let mut out = Fetched::default();
    let listed = match node.list(entity).await {
        Ok(l) => l,
        Err(e) => {
            out.errors.push(format!("{entity}: list: {e}"));
            return out;
        }
    };
    out.listed = listed.len();
    for (id, time) in listed {
        let held = app
            .store
            .flow_revisions(entity, &id)
            .map(|revisions| revisions.iter().any(|r| r.time == time))
            .unwrap_or(false);
        if held {
            continue;
        }
        let raw = match node.flow(entity, &id).await {
            Ok(raw) => raw,
            Err(e) => {
                out.errors.push(format!("{entity}: flow {id}: {e}"));
                continue;
            }
        };
        let (work, cf) = (Arc::clone(app), entity.clone());
        let listed = (id.clone(), time.clone());
        let received = tokio::task::spawn_blocking(move || {
            let Some(config) = work.config.entity(&cf) else {
                return Err(format!("entity {cf} is not configured"));
            };
            let listed = Some((listed.0.as_str(), listed.1.as_str()));
            flows::receive(&work, config, &Actor::Node, &raw, listed).map_err(|e| e.message)
        })
        .await;
        match received {
            Ok(Ok(Received::New(_))) => out.new += 1,
            Ok(Ok(Received::Held(_))) => {}
            Ok(Err(e)) => out.errors.push(format!("{entity}: flow {id}: {e}")),
            Err(e) => out.errors.push(format!("{entity}: flow {id}: {e}")),
        }
    }
    out
}

/// Fetches every entity's new flows, logging what happened; nothing if `[node]` is not set.
pub async fn fetch_all(app: &Arc<App>) -> Vec<Fetched> {
    let node = match Node::new(app) {
        Ok(Some(n)) => n,
        Ok(None) => return Vec::new(),
        Err(e) => {
            tracing::error!("node client: {e}");
            return Vec::new();
        }
    };
    let mut all = Vec::new();
    for e in &app.config.entities {
        let fetched = match node.config.interface {
            crate::config::NodeInterface::Soap => fetch(app, &node, &e.fiscal_code).await,
            crate::config::NodeInterface::Fdr => {
                crate::fdr::fetch(app, &node, &e.fiscal_code).await
            }
        };
        for err in &fetched.errors {
            tracing::warn!("reporting flows: {err}");
        }
        tracing::info!(
            entity = %e.fiscal_code,
            listed = fetched.listed,
            new = fetched.new,
            "reporting flows fetched"
        );
        all.push(fetched);
    }
    all
}

fn find<'a>(e: &'a Elem, local: &str) -> Option<&'a Elem> {
    if e.local == local {
        return Some(e);
    }
    e.children.iter().find_map(|c| find(c, local))
}

fn leaf(e: &Elem, local: &str) -> Option<String> {
    find(e, local).map(|l| l.text.trim().to_owned())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub(crate) fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}
