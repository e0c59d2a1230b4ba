//! The console's state and what keys do to it. Pure: no terminal, no network. A key may ask
//! the daemon for something (`Request`); answers come back as `Reply`s and are applied here.
//! Rendering reads this state (`view.rs`).

use std::collections::VecDeque;

use mpay_common::console::{
    Adjustment, AuditRecord, Exchange, ExchangeDetail, Hello, JobRow, LiveEvent, PositionKey,
    PositionRow, PositionView, Role, RpcError, Search, Status, TrafficFilter,
};
use mpay_common::ids::{EntityFiscalCode, Nav};
use mpay_common::ledger::OfflineChannel;
use mpay_common::model::Debtor;
use mpay_common::money::Cents;
use mpay_common::reconcile::{FlowView, MovementView};
use mpay_common::requests::{InstalmentIn, OfflinePaymentIn, ReductionIn, RescheduleIn};
use mpay_common::statement::Statement;
use mpay_common::worklist::{Fix, Resolution, WorkItem, WorklistQuery};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

pub use super::records::RecordsScreen;
pub use super::worklist::{FixForm, FixKind, WorklistScreen};

/// Exchanges the traffic screen keeps.
const TRAFFIC_KEPT: usize = 2000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Screen {
    Dashboard,
    Traffic,
    Positions,
    Statement,
    Jobs,
    Audit,
    Worklist,
    Flows,
    Treasury,
}

impl Screen {
    pub const ALL: [Screen; 9] = [
        Screen::Dashboard,
        Screen::Traffic,
        Screen::Positions,
        Screen::Statement,
        Screen::Jobs,
        Screen::Audit,
        Screen::Worklist,
        Screen::Flows,
        Screen::Treasury,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Screen::Dashboard => "Dashboard",
            Screen::Traffic => "Traffic",
            Screen::Positions => "Positions",
            Screen::Statement => "Statement",
            Screen::Jobs => "Jobs",
            Screen::Audit => "Audit",
            Screen::Worklist => "Worklist",
            Screen::Flows => "Flows",
            Screen::Treasury => "Treasury",
        }
    }

    /// The title where the tabs are short of room.
    pub fn short(self) -> &'static str {
        match self {
            Screen::Dashboard => "Home",
            Screen::Traffic => "Traffic",
            Screen::Positions => "Pos",
            Screen::Statement => "Stmt",
            Screen::Jobs => "Jobs",
            Screen::Audit => "Audit",
            Screen::Worklist => "Work",
            Screen::Flows => "Flows",
            Screen::Treasury => "Bank",
        }
    }
}

/// What the console asks the daemon.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    Search(Search),
    Position(PositionKey),
    Adjust(PositionKey, Adjustment),
    Statement(String),
    Jobs,
    /// The audit trail, of one operator or all.
    Audit(Option<String>),
    Exchange(u64),
    Traffic(TrafficFilter),
    Entities,
    Worklist(EntityFiscalCode, WorklistQuery),
    /// A fix for a worklist item: entity, item key, the fix, the reason.
    Resolve(EntityFiscalCode, String, Fix, String),
    Flows(EntityFiscalCode),
    Flow(EntityFiscalCode, String),
    Movements(EntityFiscalCode),
}

/// What comes back.
#[derive(Clone, Debug)]
pub enum Reply {
    Connected(Hello),
    Lost(String),
    Status(Box<Status>),
    Events(Vec<LiveEvent>),
    Traffic(Vec<Exchange>),
    Rows(Vec<PositionRow>),
    Position(Box<PositionView>),
    Adjusted(Box<PositionView>),
    Statement(Box<Statement>),
    Jobs(Vec<JobRow>),
    Audit(Vec<AuditRecord>),
    Exchange(Box<ExchangeDetail>),
    Entities(Vec<(EntityFiscalCode, String)>),
    Worklist(Vec<WorkItem>),
    Resolved(Box<Resolution>),
    Flows(Vec<FlowView>),
    Flow(Vec<FlowView>),
    Movements(Vec<MovementView>),
    /// A call refused: what it was, and the daemon's reason.
    Refused(String, RpcError),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Connection {
    Connecting,
    Connected(Hello),
    /// Lost, reconnecting by itself.
    Lost(String),
}

/// A manual adjustment being filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Form {
    pub kind: FormKind,
    pub key: PositionKey,
    /// The notice it is about (reduction, offline payment), and what it asks now.
    pub nav: Option<(Nav, Cents)>,
    pub fields: Vec<Field>,
    pub focus: usize,
    /// Showing the before and after, waiting for `y`.
    pub confirming: bool,
    /// The debtor as it is (for the correction of the debtor's data).
    pub debtor: Option<Debtor>,
    /// Today, for dates that must be in the future.
    pub today: jiff::civil::Date,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormKind {
    Reduce,
    Cancel,
    Restore,
    PayOffline,
    Debtor,
    Reschedule,
}

impl FormKind {
    pub fn title(self) -> &'static str {
        match self {
            FormKind::Reduce => "Reduce a notice (sgravio)",
            FormKind::Cancel => "Cancel the position",
            FormKind::Restore => "Restore the position",
            FormKind::PayOffline => "Record an offline payment",
            FormKind::Debtor => "Correct the debtor's data",
            FormKind::Reschedule => "Reschedule a notice into instalments",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub label: &'static str,
    pub value: String,
}

impl Field {
    fn new(label: &'static str) -> Field {
        Field {
            label,
            value: String::new(),
        }
    }

    fn with(label: &'static str, value: Option<&str>) -> Field {
        Field {
            label,
            value: value.unwrap_or_default().to_string(),
        }
    }
}

/// `total` in `n` monthly instalments from `first`, the cents left over going to the first
/// ones. The transfers are left to the daemon, which keeps each beneficiary's share of what the
/// plan replaces.
pub fn plan(total: Cents, n: u32, first: jiff::civil::Date) -> Option<Vec<InstalmentIn>> {
    let n64 = i64::from(n);
    if n64 == 0 || total.0 < n64 {
        return None;
    }
    let mut out = Vec::new();
    for k in 0..n64 {
        let amount = total.0 / n64 + i64::from(k < total.0 % n64);
        let due = first.checked_add(jiff::Span::new().months(k)).ok()?;
        out.push(InstalmentIn {
            nav: None,
            iuv: None,
            amount: Cents(amount),
            due,
            description: format!("Rata {} di {n}", k + 1),
            // The daemon gives each beneficiary its share of what the plan replaces.
            transfers: Vec::new(),
            metadata: Vec::new(),
        });
    }
    Some(out)
}

fn is_province(v: &str) -> bool {
    v.len() == 2 && v.chars().all(|c| c.is_ascii_uppercase())
}

/// An optional text: None when left empty.
fn optional(v: String) -> Option<String> {
    (!v.is_empty()).then_some(v)
}

impl Form {
    /// The field's problem, if any: checked as the operator types.
    pub fn problem(&self, i: usize) -> Option<String> {
        let f = self.fields.get(i)?;
        let v = f.value.trim();
        match f.label {
            "new amount" | "amount" => match Cents::parse_api(v) {
                Err(e) if !v.is_empty() => Some(e.to_string()),
                Err(_) => Some("required".into()),
                Ok(c) if f.label == "new amount" => match self.nav.as_ref() {
                    Some((_, now)) if c >= *now => Some(format!("must be less than {now}")),
                    _ => None,
                },
                Ok(c) if c <= Cents::ZERO => Some("must be more than 0.00".into()),
                Ok(_) => None,
            },
            "act" if v.is_empty() => Some("required: the act that grants it".into()),
            "act" if v.chars().count() > 35 => Some("at most 35 characters".into()),
            "reference" if v.is_empty() => Some("required".into()),
            "date" => match v.parse::<jiff::civil::Date>() {
                Ok(_) => None,
                Err(_) => Some("a date, YYYY-MM-DD".into()),
            },
            "reason" if v.is_empty() => Some("required: say why".into()),
            "instalments" => match v.parse::<u32>() {
                Ok(n) if (2..=36).contains(&n) => None,
                _ => Some("from 2 to 36".into()),
            },
            "first due" => match v.parse::<jiff::civil::Date>() {
                Ok(d) if d > self.today => None,
                Ok(_) => Some("a day after today".into()),
                Err(_) => Some("a date, YYYY-MM-DD".into()),
            },
            "name" if v.is_empty() => Some("required".into()),
            "name" if v.chars().count() > 70 => Some("at most 70 characters".into()),
            "province" if !(v.is_empty() || is_province(v)) => {
                Some("two capital letters (RM, MI, …)".into())
            }
            "email" if !(v.is_empty() || v.contains('@') && v.len() <= 256) => {
                Some("an e-mail address".into())
            }
            _ => None,
        }
    }

    pub fn valid(&self) -> bool {
        (0..self.fields.len()).all(|i| self.problem(i).is_none())
    }

    fn value(&self, label: &str) -> String {
        self.fields
            .iter()
            .find(|f| f.label == label)
            .map(|f| f.value.trim().to_string())
            .unwrap_or_default()
    }

    /// The adjustment, once every field is valid.
    pub fn adjustment(&self) -> Option<Adjustment> {
        if !self.valid() {
            return None;
        }
        let reason = self.value("reason");
        Some(match self.kind {
            FormKind::Reduce => Adjustment::Reduce {
                nav: self.nav.as_ref()?.0.clone(),
                reduction: ReductionIn {
                    new_amount: Cents::parse_api(&self.value("new amount")).ok()?,
                    act: self.value("act"),
                    reason,
                    transfer_amounts: None,
                },
            },
            FormKind::Cancel => Adjustment::Cancel { reason },
            FormKind::Restore => Adjustment::Restore { reason },
            FormKind::Debtor => {
                let now = self.debtor.clone()?;
                Adjustment::Debtor {
                    debtor: Debtor {
                        name: self.value("name"),
                        street: optional(self.value("street")),
                        postal_code: optional(self.value("postal code")),
                        city: optional(self.value("city")),
                        province: optional(self.value("province")),
                        email: optional(self.value("email")),
                        ..now
                    },
                    reason,
                }
            }
            FormKind::Reschedule => {
                let (nav, due) = self.nav.clone()?;
                let n: u32 = self.value("instalments").parse().ok()?;
                let first: jiff::civil::Date = self.value("first due").parse().ok()?;
                Adjustment::Reschedule(RescheduleIn {
                    replaced: vec![nav],
                    instalments: plan(due, n, first)?,
                    reason,
                    // The plan spreads what is due: no act needed.
                    act: None,
                })
            }
            FormKind::PayOffline => Adjustment::PayOffline {
                nav: self.nav.as_ref()?.0.clone(),
                payment: OfflinePaymentIn {
                    channel: OfflineChannel::Counter,
                    date: self.value("date").parse().ok()?,
                    amount: Cents::parse_api(&self.value("amount")).ok()?,
                    reference: self.value("reference"),
                    reason: Some(reason),
                    transfer_amounts: None,
                },
            },
        })
    }

    /// The before and after, for the confirmation.
    pub fn summary(&self) -> Vec<String> {
        let notice = self.nav.as_ref();
        match self.kind {
            FormKind::Reduce => vec![format!(
                "notice {}: {} → {}",
                notice.map(|(n, _)| n.to_string()).unwrap_or_default(),
                notice.map(|(_, a)| a.to_string()).unwrap_or_default(),
                self.value("new amount")
            )],
            FormKind::Cancel => {
                vec!["the position and all its notices: payable → cancelled".into()]
            }
            FormKind::Restore => vec!["the position: cancelled → payable again".into()],
            FormKind::Reschedule => {
                let mut lines = vec![format!(
                    "notice {}: {} → replaced by this plan",
                    notice.map(|(n, _)| n.to_string()).unwrap_or_default(),
                    notice.map(|(_, a)| a.to_string()).unwrap_or_default(),
                )];
                if let Some(Adjustment::Reschedule(r)) = self.adjustment() {
                    for (k, i) in r.instalments.iter().enumerate() {
                        lines.push(format!(
                            "  instalment {}: {} due {}",
                            k + 1,
                            i.amount,
                            i.due
                        ));
                    }
                }
                lines
            }
            FormKind::Debtor => {
                let Some(now) = &self.debtor else {
                    return Vec::new();
                };
                let show = |label: &str, before: Option<&str>| {
                    let after = self.value(label);
                    let before = before.unwrap_or("");
                    (before != after).then(|| format!("{label}: {before:?} → {after:?}"))
                };
                [
                    show("name", Some(&now.name)),
                    show("street", now.street.as_deref()),
                    show("postal code", now.postal_code.as_deref()),
                    show("city", now.city.as_deref()),
                    show("province", now.province.as_deref()),
                    show("email", now.email.as_deref()),
                ]
                .into_iter()
                .flatten()
                .collect()
            }
            FormKind::PayOffline => vec![format!(
                "notice {}: {} paid at the counter on {} (ref. {})",
                notice.map(|(n, _)| n.to_string()).unwrap_or_default(),
                self.value("amount"),
                self.value("date"),
                self.value("reference")
            )],
        }
    }
}

/// Where the keyboard goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    /// Screen keys.
    Screen,
    /// Typing into the screen's input line (search, fiscal code, traffic filter).
    Input,
}

pub struct App {
    pub screen: Screen,
    pub connection: Connection,
    pub focus: Focus,
    pub help: bool,
    /// A line for the operator: the last refusal or what was done.
    pub message: Option<String>,
    pub status: Option<Status>,
    pub traffic: VecDeque<Exchange>,
    pub traffic_filter: String,
    pub traffic_selected: usize,
    pub exchange: Option<ExchangeDetail>,
    pub exchange_scroll: u16,
    pub search: String,
    pub rows: Vec<PositionRow>,
    pub row_selected: usize,
    pub position: Option<PositionView>,
    pub position_scroll: u16,
    /// The notice selected in the position's detail (for reductions and payments).
    pub notice_selected: usize,
    pub form: Option<Form>,
    pub statement_input: String,
    pub statement: Option<Statement>,
    pub jobs: Vec<JobRow>,
    pub audit: Vec<AuditRecord>,
    /// The operator the audit screen shows (empty: all).
    pub audit_operator: String,
    pub worklist: WorklistScreen,
    pub records: RecordsScreen,
    pub quit: bool,
    /// Today in Rome, for new forms' dates (set by the loop; fixed in tests).
    pub today: jiff::civil::Date,
}

impl App {
    pub fn new(today: jiff::civil::Date) -> App {
        App {
            screen: Screen::Dashboard,
            connection: Connection::Connecting,
            focus: Focus::Screen,
            help: false,
            message: None,
            status: None,
            traffic: VecDeque::new(),
            traffic_filter: String::new(),
            traffic_selected: 0,
            exchange: None,
            exchange_scroll: 0,
            search: String::new(),
            rows: Vec::new(),
            row_selected: 0,
            position: None,
            position_scroll: 0,
            notice_selected: 0,
            form: None,
            statement_input: String::new(),
            statement: None,
            jobs: Vec::new(),
            audit: Vec::new(),
            audit_operator: String::new(),
            worklist: WorklistScreen::default(),
            records: RecordsScreen::default(),
            quit: false,
            today,
        }
    }

    /// The traffic filter as typed: `entity=… op=… outcome=… nav=…`, or a bare word matched
    /// against all of them.
    pub fn filter(&self) -> TrafficFilter {
        let mut f = TrafficFilter::default();
        for word in self.traffic_filter.split_whitespace() {
            match word.split_once('=') {
                Some(("entity", v)) => f.entity = Some(v.into()),
                Some(("op" | "operation", v)) => f.operation = Some(v.into()),
                Some(("outcome", v)) => f.outcome = Some(v.into()),
                Some(("nav", v)) => f.nav = Some(v.into()),
                _ if word.eq_ignore_ascii_case("ko") || word.eq_ignore_ascii_case("ok") => {
                    f.outcome = Some(word.to_uppercase())
                }
                _ => f.nav = Some(word.into()),
            }
        }
        f
    }

    /// The traffic the screen shows: newest first, filtered.
    pub fn visible_traffic(&self) -> Vec<&Exchange> {
        let f = self.filter();
        self.traffic.iter().filter(|e| f.matches(e)).collect()
    }

    /// Applies an answer; returns what to ask next (the worklist, once the entities are known).
    pub fn apply(&mut self, reply: Reply) -> Vec<Request> {
        match reply {
            Reply::Connected(hello) => {
                self.connection = Connection::Connected(hello);
                self.message = None;
            }
            Reply::Lost(why) => self.connection = Connection::Lost(why),
            Reply::Status(s) => self.status = Some(*s),
            Reply::Events(events) => {
                for e in events {
                    match e {
                        LiveEvent::Exchange(x) => self.traffic.push_front(x),
                        LiveEvent::Ledger(change) => {
                            // The open position changed under us: show the new state.
                            if let Some(v) = &mut self.position
                                && v.id == change.position
                                && v.ledger.len() as u32 == change.seq
                            {
                                v.ledger.push(mpay_common::console::LedgerEntry {
                                    commit: change.commit,
                                    event: change.event.clone(),
                                });
                                let _ = v.position.apply(&change.event);
                            }
                        }
                    }
                }
                self.traffic.truncate(TRAFFIC_KEPT);
            }
            Reply::Traffic(list) => {
                let mut merged: Vec<Exchange> = list.into_iter().collect();
                merged.extend(self.traffic.drain(..));
                merged.sort_by_key(|e| std::cmp::Reverse(e.seq));
                merged.dedup_by_key(|e| e.seq);
                merged.truncate(TRAFFIC_KEPT);
                self.traffic = merged.into();
            }
            Reply::Rows(rows) => {
                self.message = Some(format!("{} position(s) found", rows.len()));
                self.rows = rows;
                self.row_selected = 0;
            }
            Reply::Position(v) => {
                self.position = Some(*v);
                self.position_scroll = 0;
                self.notice_selected = 0;
            }
            Reply::Adjusted(v) => {
                self.message = Some(format!(
                    "done: {}",
                    v.ledger
                        .last()
                        .map(|e| crate::format::change(&e.event.change))
                        .unwrap_or_default()
                ));
                self.position = Some(*v);
                self.form = None;
            }
            Reply::Statement(s) => self.statement = Some(*s),
            Reply::Jobs(j) => self.jobs = j,
            Reply::Audit(a) => self.audit = a,
            Reply::Exchange(d) => {
                self.exchange = Some(*d);
                self.exchange_scroll = 0;
            }
            Reply::Entities(list) => {
                self.worklist.set_entities(list);
                if self.screen != Screen::Worklist || !self.worklist.loaded {
                    return self.entity_request();
                }
            }
            Reply::Flows(flows) => self.records.set_flows(flows),
            Reply::Flow(revisions) => self.records.set_open(revisions),
            Reply::Movements(movements) => self.records.set_movements(movements),
            Reply::Worklist(items) => self.worklist.set_items(items),
            Reply::Resolved(r) => {
                self.message = Some(format!(
                    "done: fix {} ({}) on {}",
                    r.id,
                    r.fix.name(),
                    r.key
                ));
                self.worklist.resolved(*r);
            }
            Reply::Refused(what, e) => {
                let field = e.field.map(|f| format!(" [{f}]")).unwrap_or_default();
                self.message = Some(format!("{what}: {} ({}){field}", e.message, e.code));
                if let Some(form) = &mut self.form {
                    form.confirming = false;
                }
                if let Some(form) = &mut self.worklist.form {
                    form.confirming = false;
                }
            }
        }
        Vec::new()
    }

    /// What the worklist, flows or treasury screen shows, for the chosen entity, asked again.
    fn entity_request(&mut self) -> Vec<Request> {
        let Some(cf) = self.worklist.entity().cloned() else {
            return match self.screen {
                Screen::Worklist | Screen::Flows | Screen::Treasury => vec![Request::Entities],
                _ => Vec::new(),
            };
        };
        match self.screen {
            Screen::Worklist => self.worklist.request(),
            Screen::Flows => {
                self.records.open = None;
                vec![Request::Flows(cf)]
            }
            Screen::Treasury => vec![Request::Movements(cf)],
            _ => Vec::new(),
        }
    }

    /// The operator may fix things (the daemon checks again).
    pub fn is_operator(&self) -> bool {
        matches!(&self.connection, Connection::Connected(h) if h.role >= Role::Operator)
    }

    /// The notices of the open position, in option order: (NAV, what it asks now).
    pub fn notices(&self) -> Vec<(Nav, Cents)> {
        self.position
            .as_ref()
            .map(|v| {
                v.position
                    .instalments()
                    .map(|i| (i.terms.nav.clone(), i.terms.amount))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn key_of_open(&self) -> Option<PositionKey> {
        self.position.as_ref().map(|v| PositionKey::Iupd {
            entity: v.position.entity.clone(),
            iupd: v.position.iupd.clone(),
        })
    }

    fn open_form(&mut self, kind: FormKind) {
        let Some(key) = self.key_of_open() else {
            return;
        };
        let nav = self.notices().get(self.notice_selected).cloned();
        let debtor = self.position.as_ref().map(|v| v.position.debtor.clone());
        let notice = self.position.as_ref().and_then(|v| {
            v.position
                .instalments()
                .nth(self.notice_selected)
                .map(|i| v.position.due(i))
        });
        let still_due = notice.unwrap_or_default();
        let fields = match kind {
            FormKind::Reschedule => vec![
                Field::new("instalments"),
                Field::new("first due"),
                Field::new("reason"),
            ],
            FormKind::Debtor => {
                let Some(d) = debtor.clone() else {
                    return;
                };
                vec![
                    Field::with("name", Some(&d.name)),
                    Field::with("street", d.street.as_deref()),
                    Field::with("postal code", d.postal_code.as_deref()),
                    Field::with("city", d.city.as_deref()),
                    Field::with("province", d.province.as_deref()),
                    Field::with("email", d.email.as_deref()),
                    Field::new("reason"),
                ]
            }
            FormKind::Reduce => vec![
                Field::new("new amount"),
                Field::new("act"),
                Field::new("reason"),
            ],
            FormKind::Cancel | FormKind::Restore => vec![Field::new("reason")],
            FormKind::PayOffline => {
                let mut date = Field::new("date");
                date.value = self.today.to_string();
                vec![
                    Field::new("amount"),
                    date,
                    Field::new("reference"),
                    Field::new("reason"),
                ]
            }
        };
        if matches!(
            kind,
            FormKind::Reduce | FormKind::PayOffline | FormKind::Reschedule
        ) && nav.is_none()
        {
            return;
        }
        // A plan replaces what is still due on the notice.
        let nav = match kind {
            FormKind::Reschedule => nav.map(|(n, _)| (n, still_due)),
            _ => nav,
        };
        self.form = Some(Form {
            kind,
            key,
            nav,
            fields,
            focus: 0,
            confirming: false,
            debtor,
            today: self.today,
        });
    }

    /// Handles a key; returns what to ask the daemon.
    pub fn key(&mut self, key: KeyEvent) -> Vec<Request> {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            self.quit = true;
            return Vec::new();
        }
        if self.help {
            self.help = false;
            return Vec::new();
        }
        if self.form.is_some() {
            return self.form_key(key);
        }
        if self.screen == Screen::Worklist && self.worklist.form.is_some() {
            return self.worklist.form_key(key);
        }
        if self.focus == Focus::Input {
            return self.input_key(key);
        }
        match key.code {
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char('q') | KeyCode::Esc => self.back(),
            KeyCode::Tab => self.switch(1),
            KeyCode::BackTab => self.switch(Screen::ALL.len() - 1),
            KeyCode::Char(c @ '1'..='9') => {
                let i = (c as usize) - ('1' as usize);
                return self.go(Screen::ALL[i]);
            }
            KeyCode::Char('/') => {
                if matches!(
                    self.screen,
                    Screen::Positions
                        | Screen::Statement
                        | Screen::Traffic
                        | Screen::Audit
                        | Screen::Worklist
                ) {
                    if self.screen == Screen::Positions {
                        self.position = None;
                    }
                    self.focus = Focus::Input;
                } else {
                    self.screen = Screen::Positions;
                    self.position = None;
                    self.focus = Focus::Input;
                }
            }
            _ => return self.screen_key(key),
        }
        Vec::new()
    }

    fn audit_request(&self) -> Request {
        let operator = self.audit_operator.trim();
        Request::Audit((!operator.is_empty()).then(|| operator.to_string()))
    }

    fn switch(&mut self, by: usize) {
        let i = Screen::ALL
            .iter()
            .position(|s| *s == self.screen)
            .unwrap_or(0);
        self.screen = Screen::ALL[(i + by) % Screen::ALL.len()];
    }

    fn go(&mut self, screen: Screen) -> Vec<Request> {
        self.screen = screen;
        match screen {
            Screen::Jobs => vec![Request::Jobs],
            Screen::Audit => vec![self.audit_request()],
            Screen::Worklist | Screen::Flows | Screen::Treasury => self.entity_request(),
            _ => Vec::new(),
        }
    }

    fn back(&mut self) {
        if self.exchange.take().is_some() || self.position.take().is_some() {
            return;
        }
        if self.screen == Screen::Flows && self.records.open.take().is_some() {
            return;
        }
        if self.screen == Screen::Dashboard {
            self.quit = true;
        } else {
            self.screen = Screen::Dashboard;
        }
    }

    fn input_key(&mut self, key: KeyEvent) -> Vec<Request> {
        let line = match self.screen {
            Screen::Statement => &mut self.statement_input,
            Screen::Traffic => &mut self.traffic_filter,
            Screen::Audit => &mut self.audit_operator,
            Screen::Worklist => &mut self.worklist.filter,
            _ => &mut self.search,
        };
        match key.code {
            KeyCode::Esc => self.focus = Focus::Screen,
            KeyCode::Backspace => {
                line.pop();
            }
            KeyCode::Char(c) if line.chars().count() < 80 => line.push(c),
            KeyCode::Enter => {
                self.focus = Focus::Screen;
                let text = line.trim().to_string();
                match self.screen {
                    Screen::Statement if !text.is_empty() => {
                        return vec![Request::Statement(text)];
                    }
                    Screen::Traffic => {
                        self.traffic_selected = 0;
                        return vec![Request::Traffic(self.filter())];
                    }
                    Screen::Audit => return vec![self.audit_request()],
                    Screen::Worklist => return self.worklist.request(),
                    Screen::Positions if !text.is_empty() => {
                        return vec![Request::Search(Search {
                            entity: None,
                            text,
                            limit: Some(200),
                        })];
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        Vec::new()
    }

    fn screen_key(&mut self, key: KeyEvent) -> Vec<Request> {
        let up = matches!(key.code, KeyCode::Up | KeyCode::Char('k'));
        let down = matches!(key.code, KeyCode::Down | KeyCode::Char('j'));
        match self.screen {
            Screen::Traffic if self.exchange.is_some() => {
                if up {
                    self.exchange_scroll = self.exchange_scroll.saturating_sub(1);
                } else if down {
                    self.exchange_scroll = self.exchange_scroll.saturating_add(1);
                } else if key.code == KeyCode::PageDown {
                    self.exchange_scroll = self.exchange_scroll.saturating_add(20);
                } else if key.code == KeyCode::PageUp {
                    self.exchange_scroll = self.exchange_scroll.saturating_sub(20);
                }
            }
            Screen::Traffic => {
                let n = self.visible_traffic().len();
                if up {
                    self.traffic_selected = self.traffic_selected.saturating_sub(1);
                } else if down && self.traffic_selected + 1 < n {
                    self.traffic_selected += 1;
                } else if key.code == KeyCode::Enter
                    && let Some(e) = self.visible_traffic().get(self.traffic_selected)
                {
                    return vec![Request::Exchange(e.seq)];
                }
            }
            Screen::Positions if self.position.is_some() => {
                let notices = self.notices().len();
                match key.code {
                    KeyCode::Up | KeyCode::Char('k') => {
                        self.notice_selected = self.notice_selected.saturating_sub(1);
                    }
                    KeyCode::Down | KeyCode::Char('j') if self.notice_selected + 1 < notices => {
                        self.notice_selected += 1;
                    }
                    KeyCode::PageDown => {
                        self.position_scroll = self.position_scroll.saturating_add(10);
                    }
                    KeyCode::PageUp => {
                        self.position_scroll = self.position_scroll.saturating_sub(10);
                    }
                    KeyCode::Char('r') => self.open_form(FormKind::Reduce),
                    KeyCode::Char('c') => self.open_form(FormKind::Cancel),
                    KeyCode::Char('R') => self.open_form(FormKind::Restore),
                    KeyCode::Char('o') => self.open_form(FormKind::PayOffline),
                    KeyCode::Char('d') => self.open_form(FormKind::Debtor),
                    KeyCode::Char('p') => self.open_form(FormKind::Reschedule),
                    _ => {}
                }
            }
            Screen::Positions => {
                if up {
                    self.row_selected = self.row_selected.saturating_sub(1);
                } else if down && self.row_selected + 1 < self.rows.len() {
                    self.row_selected += 1;
                } else if key.code == KeyCode::Enter
                    && let Some(r) = self.rows.get(self.row_selected)
                {
                    return vec![Request::Position(PositionKey::Iupd {
                        entity: r.entity.clone(),
                        iupd: r.iupd.clone(),
                    })];
                }
            }
            Screen::Jobs if key.code == KeyCode::Char('g') => return vec![Request::Jobs],
            Screen::Audit if key.code == KeyCode::Char('g') => return vec![self.audit_request()],
            Screen::Worklist => {
                let operator = self.is_operator();
                return self.worklist.key(key, operator);
            }
            Screen::Flows | Screen::Treasury if key.code == KeyCode::Char('g') => {
                return self.entity_request();
            }
            Screen::Flows | Screen::Treasury if key.code == KeyCode::Char('e') => {
                self.worklist.next_entity();
                return self.entity_request();
            }
            Screen::Flows => {
                let cf = self.worklist.entity().cloned();
                return self.records.flows_key(key, cf.as_ref());
            }
            Screen::Treasury => self.records.movements_key(key),
            _ => {}
        }
        Vec::new()
    }

    fn form_key(&mut self, key: KeyEvent) -> Vec<Request> {
        let Some(form) = &mut self.form else {
            return Vec::new();
        };
        if form.confirming {
            match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => {
                    if let Some(adjustment) = form.adjustment() {
                        let key = form.key.clone();
                        return vec![Request::Adjust(key, adjustment)];
                    }
                }
                _ => form.confirming = false,
            }
            return Vec::new();
        }
        match key.code {
            KeyCode::Esc => self.form = None,
            KeyCode::Tab | KeyCode::Down => form.focus = (form.focus + 1) % form.fields.len(),
            KeyCode::BackTab | KeyCode::Up => {
                form.focus = (form.focus + form.fields.len() - 1) % form.fields.len();
            }
            KeyCode::Backspace => {
                form.fields[form.focus].value.pop();
            }
            KeyCode::Enter => {
                if form.valid() {
                    form.confirming = true;
                } else if let Some(i) = (0..form.fields.len()).find(|i| form.problem(*i).is_some())
                {
                    form.focus = i;
                }
            }
            KeyCode::Char(c) => {
                let field = &mut form.fields[form.focus];
                if field.value.chars().count() < 140 {
                    field.value.push(c);
                }
            }
            _ => {}
        }
        Vec::new()
    }
}
