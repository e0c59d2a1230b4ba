//! The pagoPA station service: what mpay answers when the node calls (DESIGN.md §4).
//!
//! `Station::handle` takes a request body as it arrived and returns the response body. Checks run
//! in the order pagoPA prescribes: syntax, then the caller's configuration (broker, station,
//! entity), then duplicates, then the business state, and system errors last. Business errors are
//! `outcome=KO` responses, never SOAP faults. Verify and getPayment only read; a receipt is stored
//! durably, with its ledger effect, before OK goes back.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use jiff::Timestamp;
use jiff::civil::Date;
use mpay_common::ids::{DebtorCode, EntityFiscalCode, Iupd, Nav};
use mpay_common::ledger::{
    Actor, Change, Event, InstalmentState, NotPayable, PaidTransfer, Payable, PaymentFlag, Position,
};
use mpay_common::model::{
    Debtor, Instalment, Metadata, OptionKind, PaymentOption, PositionData, Transfer, TransferTarget,
};
use mpay_common::money::Cents;

use crate::App;
use crate::config::{EntityConfig, ServiceConfig};
use crate::journal::Exchange;
use crate::pagopa::soap::{
    self, DemandOk, Fault, FaultCode, Header, MapEntry, Operation, PaymentData, PaymentOptionInfo,
    QrCode, Receipt, Request, Subject, TransferData, TransferType, VerifyOk,
};
use crate::store::{Disposition, ReceiptRecord, Recorded};

pub struct Station {
    app: Arc<App>,
    guesses: Mutex<Guesses>,
    demands: Arc<Mutex<Demands>>,
}

/// Lookups of unknown notices per peer in the current minute. Notice numbers are sequential, so
/// a peer that walks them reads debtors' names and amounts: past
/// `[station] max_unknown_lookups_per_minute`, its lookups get `PAA_SYSTEM_ERROR` until the
/// minute is over, and the first refusal is logged.
#[derive(Default)]
struct Guesses {
    minute: i64,
    by_peer: HashMap<IpAddr, u32>,
}

/// Positions created by `paDemandPaymentNotice` today, per entity and service: past the
/// service's `max_per_day`, a new request is refused rather than stored.
#[derive(Default)]
struct Demands {
    day: Option<Date>,
    created: HashMap<(String, String), u32>,
}

impl Demands {
    /// Counts a new position of `service` for `entity`; false once today's are used up.
    fn allow(&mut self, today: Date, entity: &str, service: &ServiceConfig) -> bool {
        if self.day != Some(today) {
            self.day = Some(today);
            self.created.clear();
        }
        let count = self
            .created
            .entry((entity.to_string(), service.id.clone()))
            .or_default();
        if *count >= service.max_per_day {
            if *count == service.max_per_day {
                tracing::warn!(
                    entity,
                    service = %service.id,
                    "{} positions created today by paDemandPaymentNotice: further requests are \
                     refused until tomorrow (services.max_per_day)",
                    service.max_per_day
                );
                *count += 1;
            }
            return false;
        }
        *count += 1;
        true
    }
}

/// What one exchange produced: the response and what the journal and metrics record of it.
pub struct Handled {
    pub response: String,
    pub exchange: Exchange,
}

fn fault(code: FaultCode, id: &str, description: impl Into<String>) -> Fault {
    Fault {
        code,
        id: id.to_string(),
        description: Some(description.into()),
    }
}

/// A position found for a notice, and the instalment within it.
struct Found {
    position: Position,
    nav: Nav,
    /// What the payable rule says is asked for, per transfer.
    payable: Payable,
}

impl Found {
    fn instalment(&self) -> Option<&InstalmentState> {
        self.position.instalment(&self.nav)
    }
}

impl Station {
    pub fn new(app: Arc<App>) -> Station {
        Station {
            app,
            guesses: Mutex::default(),
            demands: Arc::default(),
        }
    }

    /// Whether `peer` is past its unknown lookups this minute; with `failed`, counts one more.
    fn guessing(&self, peer: Option<SocketAddr>, failed: bool) -> bool {
        let limit = self.app.config.station.max_unknown_lookups_per_minute;
        let Some(ip) = peer.map(|p| p.ip()).filter(|_| limit > 0) else {
            return false;
        };
        let minute = self.app.clock.now().as_second().div_euclid(60);
        let mut g = self.guesses.lock().unwrap_or_else(|p| p.into_inner());
        if g.minute != minute {
            g.minute = minute;
            g.by_peer.clear();
        }
        let count = g.by_peer.entry(ip).or_default();
        if failed {
            *count = count.saturating_add(1);
            if *count == limit {
                tracing::warn!(
                    peer = %ip,
                    "{limit} lookups of unknown notices from {ip} this minute: its lookups are \
                     refused until the minute is over"
                );
            }
        }
        *count >= limit
    }

    /// Serves one request. Never fails: every problem becomes a KO response.
    pub async fn handle(
        &self,
        body: &[u8],
        soap_action: Option<&str>,
        remote: Option<SocketAddr>,
    ) -> Handled {
        let started = Instant::now();
        let broker = self.app.config.broker.id.as_str();
        // The request as text, once: the journal keeps it, and so does a receipt.
        let text = String::from_utf8_lossy(body).into_owned();
        let mut exchange = Exchange::inbound(remote);
        let response = match soap::parse_request(body, soap_action) {
            Err(e) => {
                let operation = e.operation.unwrap_or(Operation::VerifyPaymentNotice);
                exchange.operation = operation.name().to_string();
                exchange.entity = e.id_pa.clone();
                let f = fault(e.code, e.id_pa.as_deref().unwrap_or(broker), e.detail);
                exchange.fault(&f);
                soap::fault_response(operation, &f)
            }
            Ok(request) => {
                let operation = request.operation();
                exchange.operation = operation.name().to_string();
                exchange.entity = Some(request.header().id_pa.clone());
                exchange.station = Some(request.header().id_station.clone());
                let lookup = matches!(request, Request::Verify { .. } | Request::GetPayment { .. });
                if lookup && self.guessing(remote, false) {
                    let f = fault(
                        FaultCode::SystemError,
                        &request.header().id_pa,
                        "too many lookups of unknown notices from this address in the last \
                         minute: retry later",
                    );
                    exchange.fault(&f);
                    soap::fault_response(operation, &f)
                } else {
                    let answer = self.dispatch(request, &text, &mut exchange).await;
                    let unknown = FaultCode::PagamentoSconosciuto.code();
                    if lookup && exchange.fault_code.as_deref() == Some(unknown) {
                        self.guessing(remote, true);
                    }
                    answer
                }
            }
        };
        exchange.latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        exchange.request = text;
        exchange.response_bytes = response.len();
        Handled { response, exchange }
    }

    async fn dispatch(&self, request: Request, text: &str, exchange: &mut Exchange) -> String {
        match request {
            Request::Verify { header, qr } => {
                exchange.nav = Some(qr.notice_number.clone());
                let result = self.verify(&header, &qr).await.map(|(ok, _)| ok);
                exchange.result(&result);
                soap::verify_response(&result)
            }
            Request::GetPayment {
                v2,
                header,
                qr,
                transfer_type,
                ..
            } => {
                exchange.nav = Some(qr.notice_number.clone());
                let result = self.get_payment(v2, &header, &qr, transfer_type).await;
                if let Ok(data) = &result {
                    exchange.iuv = Some(data.creditor_reference_id.clone());
                }
                exchange.result(&result);
                soap::get_payment_response(v2, &result)
            }
            Request::SendRt {
                v2,
                header,
                receipt,
            } => {
                exchange.nav = Some(receipt.notice_number.clone());
                exchange.iuv = Some(receipt.creditor_reference_id.clone());
                let raw = text.to_string();
                let result = self.send_rt(v2, &header, receipt, raw).await;
                exchange.result(&result);
                soap::send_rt_response(v2, &result)
            }
            Request::Demand {
                header,
                service_id,
                service_subject_id,
                service_data,
            } => {
                let result = self
                    .demand(&header, &service_id, &service_subject_id, &service_data)
                    .await;
                if let Ok(ok) = &result {
                    exchange.nav = Some(ok.qr.notice_number.clone());
                }
                exchange.result(&result);
                soap::demand_response(&result)
            }
        }
    }

    /// Broker, station and entity checks, in that order (PROTOCOL.md §4.1).
    fn caller(&self, header: &Header, v2_request: Option<bool>) -> Result<&EntityConfig, Fault> {
        let config = &self.app.config;
        let id = header.id_pa.as_str();
        if header.id_broker_pa != config.broker.id.as_str() {
            return Err(fault(
                FaultCode::IdIntermediarioErrato,
                id,
                format!(
                    "idBrokerPA {} is not this intermediary",
                    header.id_broker_pa
                ),
            ));
        }
        let Some(station) = config.station(&header.id_station) else {
            return Err(fault(
                FaultCode::StazioneIntErrata,
                id,
                format!(
                    "idStation {} is not a station of this intermediary",
                    header.id_station
                ),
            ));
        };
        let entity = header
            .id_pa
            .parse::<EntityFiscalCode>()
            .ok()
            .and_then(|cf| config.entity(&cf))
            .filter(|e| e.stations.iter().any(|s| s == &station.id))
            .ok_or_else(|| {
                fault(
                    FaultCode::IdDominioErrato,
                    id,
                    format!(
                        "idPA {} is not served by station {}",
                        header.id_pa, station.id
                    ),
                )
            })?;
        if let Some(v2) = v2_request
            && (station.primitive_version == 2) != v2
        {
            return Err(fault(
                FaultCode::Semantica,
                id,
                format!(
                    "station {} speaks primitives version {}",
                    station.id, station.primitive_version
                ),
            ));
        }
        Ok(entity)
    }

    /// Runs blocking store work off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        id: &str,
        work: impl FnOnce(&crate::store::Store) -> Result<T, crate::store::StoreError> + Send + 'static,
    ) -> Result<T, Fault> {
        let store = Arc::clone(&self.app.store);
        match tokio::task::spawn_blocking(move || work(&store)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                tracing::error!("store: {e}");
                Err(fault(
                    FaultCode::SystemError,
                    id,
                    "the intermediary's store is unavailable",
                ))
            }
            Err(e) => {
                tracing::error!("store task: {e}");
                Err(fault(FaultCode::SystemError, id, "internal error"))
            }
        }
    }

    /// A read of the store, on this worker: a lookup takes microseconds (the engine's cache, the
    /// position cache), less than handing it to the blocking pool and back, which cost the
    /// station a tenth of its time in thread switches. Writes, which wait for an fsync, go
    /// through `blocking`.
    fn read<T>(
        &self,
        id: &str,
        work: impl FnOnce(&crate::store::Store) -> Result<T, crate::store::StoreError>,
    ) -> Result<T, Fault> {
        work(&self.app.store).map_err(|e| {
            tracing::error!("store: {e}");
            fault(
                FaultCode::SystemError,
                id,
                "the intermediary's store is unavailable",
            )
        })
    }

    /// Finds the payable instalment of a notice, or the fault that says why it is not payable.
    async fn payable(&self, entity: &EntityConfig, qr: &QrCode) -> Result<Found, Fault> {
        let id = entity.fiscal_code.as_str();
        if qr.fiscal_code != id {
            return Err(fault(
                FaultCode::IdDominioErrato,
                id,
                format!("the notice belongs to {}, not to idPA {id}", qr.fiscal_code),
            ));
        }
        let unknown = || {
            fault(
                FaultCode::PagamentoSconosciuto,
                id,
                format!("notice {} is unknown", qr.notice_number),
            )
        };
        // A NAV with a wrong check digit is simply not ours (PROTOCOL.md §6).
        let nav: Nav = qr.notice_number.parse().map_err(|_| unknown())?;
        let cf = entity.fiscal_code.clone();
        let lookup = nav.clone();
        let found = self
            .read(id, move |store| store.by_nav(&cf, &lookup))?
            .ok_or_else(unknown)?;
        let today = self.app.clock.today();
        let text = |what: &str| format!("notice {} is {what}", qr.notice_number);
        let payable = match found.1.payable(&nav, today) {
            None => return Err(unknown()),
            Some(Ok(p)) => p,
            Some(Err(why)) => {
                return Err(match why {
                    // Not yet valid: as if it did not exist (PROTOCOL.md §7).
                    NotPayable::NotYetValid => unknown(),
                    NotPayable::Paid => {
                        fault(FaultCode::PagamentoDuplicato, id, text("already paid"))
                    }
                    NotPayable::OtherOption => fault(
                        FaultCode::PagamentoDuplicato,
                        id,
                        text("part of a position being paid through another option"),
                    ),
                    NotPayable::Cancelled => {
                        fault(FaultCode::PagamentoAnnullato, id, text("cancelled"))
                    }
                    NotPayable::Replaced => fault(
                        FaultCode::PagamentoAnnullato,
                        id,
                        text("no longer payable: replaced by a plan"),
                    ),
                    NotPayable::ReducedToZero => fault(
                        FaultCode::PagamentoAnnullato,
                        id,
                        text("no longer payable: reduced to zero"),
                    ),
                    NotPayable::Expired => fault(FaultCode::PagamentoScaduto, id, text("expired")),
                });
            }
        };
        Ok(Found {
            position: found.1,
            nav,
            payable,
        })
    }

    fn verify_ok(&self, entity: &EntityConfig, found: &Found, inst: &InstalmentState) -> VerifyOk {
        let config = &self.app.config;
        let all_ccp = inst.terms.transfers.iter().all(|t| match &t.target {
            TransferTarget::Postal(_) => true,
            TransferTarget::Bank(_) => config
                .entity(&t.beneficiary)
                .is_some_and(|e| !e.postal_accounts.is_empty()),
            TransferTarget::RevenueStamp(_) => false,
        });
        VerifyOk {
            payment: PaymentOptionInfo {
                amount: found.payable.amount,
                due_date: Some(inst.terms.due),
                detail_description: Some(inst.terms.description.clone()),
                all_ccp,
            },
            description: found.position.description.clone(),
            fiscal_code_pa: entity.fiscal_code.to_string(),
            company_name: entity.name.clone(),
            office_name: entity.office.clone(),
        }
    }

    async fn verify(&self, header: &Header, qr: &QrCode) -> Result<(VerifyOk, Found), Fault> {
        let entity = self.caller(header, None)?;
        let found = self.payable(entity, qr).await?;
        let inst = found
            .instalment()
            .ok_or_else(|| fault(FaultCode::SystemError, entity.fiscal_code.as_str(), "lost"))?;
        let ok = self.verify_ok(entity, &found, inst);
        Ok((ok, found))
    }

    async fn get_payment(
        &self,
        v2: bool,
        header: &Header,
        qr: &QrCode,
        transfer_type: Option<TransferType>,
    ) -> Result<PaymentData, Fault> {
        let entity = self.caller(header, Some(v2))?;
        let id = entity.fiscal_code.as_str();
        let found = self.payable(entity, qr).await?;
        let inst = found
            .instalment()
            .ok_or_else(|| fault(FaultCode::SystemError, id, "lost"))?;
        let config = &self.app.config;
        let due = found.payable.amount;
        let mut transfers = Vec::with_capacity(inst.terms.transfers.len());
        // Only the transfers with something open: a transfer already settled is not asked for
        // again (pagoPA refuses a transfer of zero).
        for &(index, amount) in &found.payable.transfers {
            let Some(t) = inst.terms.transfers.get(index) else {
                return Err(fault(FaultCode::SystemError, id, "transfer lost"));
            };
            let beneficiary = config.entity(&t.beneficiary);
            let postal = beneficiary.and_then(|e| e.postal_accounts.first());
            let mut metadata: Vec<MapEntry> = t.metadata.iter().map(map_entry).collect();
            let target = match &t.target {
                TransferTarget::RevenueStamp(stamp) => {
                    if !v2 {
                        return Err(fault(
                            FaultCode::Semantica,
                            id,
                            "a revenue stamp needs primitives version 2",
                        ));
                    }
                    soap::TransferTarget::RevenueStamp {
                        document_hash: stamp.document_hash.clone(),
                        stamp_type: stamp.stamp_type.clone(),
                        province: stamp.province.clone(),
                    }
                }
                TransferTarget::Postal(iban) => soap::TransferTarget::Iban(iban.to_string()),
                TransferTarget::Bank(iban) => {
                    match (transfer_type, postal) {
                        // Paid with a postal slip: the first transfer goes to the postal account
                        // printed on it.
                        (Some(TransferType::Postal), Some(p)) if t.id == 1 => {
                            soap::TransferTarget::Iban(p.to_string())
                        }
                        // Paid through Poste: name a postal account the money can go to.
                        (Some(TransferType::Pagopa), Some(p)) => {
                            if metadata.len() < soap::MAX_MAP_ENTRIES {
                                metadata.push(MapEntry {
                                    key: "IBANAPPOGGIO".into(),
                                    value: p.to_string(),
                                });
                            }
                            soap::TransferTarget::Iban(iban.to_string())
                        }
                        _ => soap::TransferTarget::Iban(iban.to_string()),
                    }
                }
            };
            transfers.push(TransferData {
                id: t.id,
                amount,
                fiscal_code_pa: t.beneficiary.to_string(),
                company_name: beneficiary.map(|e| e.name.clone()),
                target,
                remittance: t.remittance.clone(),
                category: t.category.clone(),
                metadata,
            });
        }
        let mut metadata: Vec<MapEntry> = inst.terms.metadata.iter().map(map_entry).collect();
        // The position's own keys travel with the payment and come back in the receipt.
        if metadata.len() < soap::MAX_MAP_ENTRIES {
            metadata.push(MapEntry {
                key: "iupd".into(),
                value: found.position.iupd.to_string(),
            });
        }
        Ok(PaymentData {
            creditor_reference_id: inst.terms.iuv.to_string(),
            amount: due,
            due_date: inst.terms.due,
            description: inst.terms.description.clone(),
            company_name: entity.name.clone(),
            office_name: entity.office.clone(),
            debtor: subject(&found.position.debtor),
            transfers,
            metadata,
        })
    }

    async fn send_rt(
        &self,
        v2: bool,
        header: &Header,
        receipt: Receipt,
        raw: String,
    ) -> Result<(), Fault> {
        // Receipts are never refused for their version: money has moved.
        let entity = self.caller(header, None)?;
        let id = entity.fiscal_code.to_string();
        let primary = receipt.fiscal_code == id;
        let nav = receipt.notice_number.parse::<Nav>().ok();
        // Only the primary entity's copy of an OK receipt pays its position; the store finds
        // the notice. A KO receipt moved no money: it is kept, and pays nothing.
        let ok = receipt.outcome == "OK";
        let payment = match (&nav, primary && ok) {
            (Some(nav), true) => {
                let paid_at = receipt
                    .payment_date_time
                    .as_deref()
                    .and_then(rome_instant)
                    .unwrap_or_else(|| self.app.clock.now());
                let transfers: Vec<PaidTransfer> = receipt
                    .transfers
                    .iter()
                    .map(|t| PaidTransfer {
                        id: t.id,
                        amount: t.amount,
                        beneficiary: t.fiscal_code_pa.clone(),
                        account: t.iban.clone(),
                    })
                    .collect();
                let flags = self.unknown_accounts(&transfers);
                Some(
                    Event::new(
                        self.app.clock.now(),
                        Actor::Node,
                        Change::PaidViaPagoPa {
                            nav: nav.clone(),
                            receipt_id: receipt.receipt_id.clone(),
                            amount: receipt.payment_amount,
                            psp: receipt.id_psp.clone(),
                            paid_at,
                            transfers,
                            flags,
                        },
                    )
                    .with_reason(format!("receipt {}", receipt.receipt_id)),
                )
            }
            _ => None,
        };
        let record = ReceiptRecord {
            entity: entity.fiscal_code.clone(),
            receipt_id: receipt.receipt_id.clone(),
            notice_entity: receipt.fiscal_code.clone(),
            nav: receipt.notice_number.clone(),
            iuv: receipt.creditor_reference_id.clone(),
            amount: receipt.payment_amount,
            psp: receipt.id_psp.clone(),
            station: header.id_station.clone(),
            v2,
            stand_in: receipt.stand_in,
            received_at: self.app.clock.now(),
            position: None,
            disposition: if !ok {
                Disposition::Ko
            } else if primary {
                Disposition::Orphan
            } else {
                Disposition::SecondaryBeneficiary
            },
            commit: 0,
            raw,
        };
        let outcome = self
            .blocking(&id, move |store| store.record_receipt(record, payment))
            .await?;
        match outcome {
            Recorded::New(r) => {
                self.app
                    .live
                    .receipt_stored(r.disposition == Disposition::DoublePayment);
                match r.disposition {
                    Disposition::Applied | Disposition::SecondaryBeneficiary | Disposition::Ko => {}
                    other => tracing::warn!(
                        receipt = ?r.receipt_id,
                        nav = ?r.nav,
                        "receipt stored as {other:?}: reconciliation will flag it"
                    ),
                }
                Ok(())
            }
            Recorded::Replay(r) => {
                tracing::info!(receipt = ?r.receipt_id, "receipt replayed: already stored");
                Ok(())
            }
        }
    }

    /// Transfers of a receipt crediting an account that is neither the beneficiary's bank nor
    /// postal account as configured (a postal slip may name the postal one).
    fn unknown_accounts(&self, transfers: &[PaidTransfer]) -> Vec<PaymentFlag> {
        let config = &self.app.config;
        transfers
            .iter()
            .filter_map(|t| {
                let account = t.account.as_deref()?;
                let known = t
                    .beneficiary
                    .parse::<EntityFiscalCode>()
                    .ok()
                    .and_then(|cf| config.entity(&cf))
                    .is_none_or(|e| {
                        e.bank_accounts
                            .iter()
                            .chain(&e.postal_accounts)
                            .any(|iban| iban.to_string() == account)
                    });
                (!known).then_some(PaymentFlag::AccountDiffers { id: t.id })
            })
            .collect()
    }

    async fn demand(
        &self,
        header: &Header,
        service_id: &str,
        subject_id: &str,
        data: &[u8],
    ) -> Result<DemandOk, Fault> {
        let entity = self.caller(header, None)?.clone();
        let id = entity.fiscal_code.to_string();
        let Some(service) = entity
            .services
            .iter()
            .find(|s| s.id == service_id && s.subject_id == subject_id)
            .cloned()
        else {
            return Err(fault(
                FaultCode::Semantica,
                &id,
                format!("service {service_id}/{subject_id} is not offered by {id}"),
            ));
        };
        // The same request data always names the same position: a retried demand gets the same
        // notice back; only a new position counts against the service's daily cap.
        let cf = entity.fiscal_code.clone();
        let settings = entity.clone();
        let clock = self.app.clock.clone();
        let data = data.to_vec();
        let demands = Arc::clone(&self.demands);
        let entity_id = id.clone();
        let (_, position) = self
            .blocking(&id, move |store| {
                // The same request again gets the same notice while it is payable; once it
                // is paid (or otherwise closed), the next round's position.
                let mut round = 0;
                let iupd = loop {
                    let iupd = demand_iupd(&service, &data, round);
                    match store.by_iupd(&cf, &iupd)? {
                        None => break iupd,
                        Some(found) => {
                            let today = clock.today();
                            let open = found.1.notices().any(|(_, i)| {
                                found.1.payable(i.nav(), today).is_some_and(|p| p.is_ok())
                            });
                            if open || round >= MAX_DEMAND_ROUNDS {
                                return Ok(Ok(found));
                            }
                            round += 1;
                        }
                    }
                };
                let today = clock.today();
                let allowed = demands
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .allow(today, &entity_id, &service);
                if !allowed {
                    return Ok(Err(format!(
                        "service {}/{} has created its {} notices of today: ask again tomorrow",
                        service.id, service.subject_id, service.max_per_day
                    )));
                }
                let seq = store.reserve_sequence(&cf, 1)?;
                let built =
                    demand_position(&settings, &service, iupd.clone(), seq.start, clock.today());
                let data = match built {
                    Ok(d) => d,
                    Err(e) => return Ok(Err(e)),
                };
                let event = Event::new(clock.now(), Actor::Node, Change::Loaded(data))
                    .with_reason("paDemandPaymentNotice");
                match store.load(&cf, event) {
                    Ok(pid) => Ok(store
                        .position(pid)?
                        .map(|p| (pid, p))
                        .ok_or_else(|| "position vanished".to_string())),
                    Err(crate::store::WriteError::Store(e)) => Err(e),
                    // The same demand, arriving twice at once: the other one created it.
                    Err(e @ crate::store::WriteError::Exists(_)) => {
                        Ok(store.by_iupd(&cf, &iupd)?.ok_or(e.to_string()))
                    }
                    Err(e) => Ok(Err(e.to_string())),
                }
            })
            .await?
            .map_err(|e| fault(FaultCode::Semantica, &id, e))?;
        let inst = position
            .instalments()
            .next()
            .ok_or_else(|| fault(FaultCode::SystemError, &id, "empty position"))?;
        let nav = inst.terms.nav.clone();
        let payable = position
            .payable(&nav, self.app.clock.today())
            .and_then(Result::ok)
            .ok_or_else(|| {
                fault(
                    FaultCode::Semantica,
                    &id,
                    format!("the position for this request ({nav}) cannot be paid again"),
                )
            })?;
        let found = Found {
            position: position.clone(),
            nav: nav.clone(),
            payable,
        };
        let verify = self.verify_ok(&entity, &found, inst);
        Ok(DemandOk {
            qr: QrCode {
                fiscal_code: id.clone(),
                notice_number: nav.to_string(),
            },
            verify,
        })
    }
}

fn map_entry(m: &Metadata) -> MapEntry {
    MapEntry {
        key: m.key.clone(),
        value: m.value.clone(),
    }
}

fn subject(d: &Debtor) -> Subject {
    Subject {
        kind: d.code.entity_type(),
        id: d.code.to_string(),
        full_name: d.name.clone(),
        street: d.street.clone(),
        civic_number: None,
        postal_code: d.postal_code.clone(),
        city: d.city.clone(),
        province: d.province.clone(),
        country: d.country.clone(),
        email: d.email.clone(),
    }
}

/// pagoPA's date-times carry no zone; they are Italian civil time.
fn rome_instant(text: &str) -> Option<Timestamp> {
    if let Ok(ts) = text.parse::<Timestamp>() {
        return Some(ts);
    }
    let civil: jiff::civil::DateTime = text.parse().ok()?;
    civil
        .to_zoned_datetime(crate::clock::rome())
        .ok()
        .map(|z| z.timestamp())
}

/// How many times one request can be paid for before the station stops creating positions for
/// it and answers with the last one.
const MAX_DEMAND_ROUNDS: u32 = 9_999;

/// The iupd of the `round`th position created for the same request: round 0 is the hash alone,
/// later rounds (the same service asked again after its notice was paid) add `-<round>`.
fn demand_iupd(service: &ServiceConfig, data: &[u8], round: u32) -> Iupd {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update(service.id.as_bytes());
    hash.update(service.subject_id.as_bytes());
    hash.update(data);
    let digest = hash.finalize();
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    // 6 + 24 (+ 1 + up to 4) characters from [A-Za-z0-9-]: always a valid iupd.
    let text = match round {
        0 => format!("SPONT-{hex}"),
        n => format!("SPONT-{hex}-{n}"),
    };
    text.parse().unwrap_or_else(|_| unreachable_iupd())
}

fn unreachable_iupd() -> Iupd {
    // Only reached if the iupd alphabet changed; keep the demand working with a fixed prefix.
    "SPONT"
        .parse()
        .unwrap_or_else(|e| panic!("iupd rules changed: {e}"))
}

fn demand_position(
    entity: &EntityConfig,
    service: &ServiceConfig,
    iupd: Iupd,
    seq: u64,
    today: Date,
) -> Result<PositionData, String> {
    let nav = entity.iuv.notice(seq).map_err(|e| e.to_string())?;
    let amount = Cents::parse_api(&service.amount).map_err(|e| e.to_string())?;
    let target = crate::service::positions::default_target(entity)
        .ok_or_else(|| "the entity has no account".to_string())?;
    let due = today.saturating_add(jiff::Span::new().days(i64::from(service.due_days)));
    Ok(PositionData {
        iupd,
        kind: "SPONTANEO".into(),
        debtor: Debtor {
            code: DebtorCode::Anonymous,
            name: "ANONIMO".into(),
            street: None,
            postal_code: None,
            city: None,
            province: None,
            country: None,
            email: None,
        },
        description: service.description.clone(),
        validity: None,
        // Asked for, not owed: an unpaid notice lapses at its due date instead of staying open
        // debt for ever.
        expiry: Some(due),
        options: vec![PaymentOption {
            kind: OptionKind::Single,
            instalments: vec![Instalment {
                iuv: nav.iuv(),
                nav,
                amount,
                due,
                description: service.description.clone(),
                transfers: vec![Transfer {
                    id: 1,
                    beneficiary: entity.fiscal_code.clone(),
                    target,
                    amount,
                    remittance: service.description.clone(),
                    category: service.category.clone(),
                    metadata: Vec::new(),
                }],
                metadata: Vec::new(),
            }],
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_store_that_cannot_write_answers_system_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let any = "127.0.0.1:0".parse().expect("addr");
        let config = crate::demo::config(dir.path(), any, any);
        let daemon = crate::daemon::Daemon::open(config).expect("open");
        let app = Arc::clone(&daemon.app);
        app.store.close().expect("close");
        let station = Station::new(Arc::clone(&app));
        let caller = crate::simulator::requests::Caller {
            id_pa: "00123456782".into(),
            broker: "01111111116".into(),
            station: "01111111116_01".into(),
        };
        let spec = crate::simulator::requests::ReceiptSpec {
            receipt_id: "r1".into(),
            nav: "301000000000000043".into(),
            notice_entity: "00123456782".into(),
            iuv: "01000000000000043".into(),
            amount: "10.00".into(),
            transfers: vec![crate::simulator::requests::ReceiptTransfer {
                id: "1".into(),
                amount: "10.00".into(),
                fiscal_code_pa: "00123456782".into(),
                iban: Some("IT92R0306902117100000046111".into()),
                remittance: "r".into(),
                category: "c".into(),
            }],
            psp: "P".into(),
            stand_in: false,
        };
        let body = crate::simulator::requests::send_rt(&caller, true, &spec);
        // The node retries: still not acknowledged, since nothing reached the disk.
        for _ in 0..2 {
            let handled = station
                .handle(body.as_bytes(), Some("paSendRTV2"), None)
                .await;
            let answer =
                crate::simulator::requests::read_answer(&handled.response).expect("answer");
            assert_eq!(answer.fault_code.as_deref(), Some("PAA_SYSTEM_ERROR"));
            assert_eq!(handled.exchange.outcome(), "KO");
        }
        assert!(
            app.store
                .receipt(&"00123456782".parse().expect("cf"), "r1")
                .expect("read")
                .is_none(),
            "a refused receipt must not be stored"
        );
    }

    #[test]
    fn receipt_times_are_rome_civil_time() {
        let t = rome_instant("2026-07-01T10:00:00").expect("parse");
        assert_eq!(t.to_string(), "2026-07-01T08:00:00Z");
        let t = rome_instant("2026-01-10T10:00:00.123").expect("parse");
        assert_eq!(t.to_string(), "2026-01-10T09:00:00.123Z");
        assert!(rome_instant("yesterday").is_none());
    }
}
