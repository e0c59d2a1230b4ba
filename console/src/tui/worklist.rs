//! The worklist screen's state and keys: one entity's anomalies, a filter line, and the fix
//! forms (link, refund due, accept, attach to a flow, recovery asked, dismiss, undo). Pure,
//! like `app.rs`: keys give `Request`s, answers come back through `App::apply`.

use mpay_common::ids::{EntityFiscalCode, Iupd, Nav};
use mpay_common::money::Cents;
use mpay_common::worklist::{Fix, ItemState, Resolution, WorkItem, WorklistQuery};
use ratatui::crossterm::event::{KeyCode, KeyEvent};

use super::app::Request;

/// A fix being filled in for one item.
#[derive(Clone, Debug, PartialEq)]
pub struct FixForm {
    pub kind: FixKind,
    pub entity: EntityFiscalCode,
    pub item: WorkItem,
    /// (label, value); the last one is always the reason.
    pub fields: Vec<(&'static str, String)>,
    pub focus: usize,
    pub confirming: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FixKind {
    Link,
    RefundDue,
    AcceptDifference,
    AttachToFlow,
    RecoveryRequested,
    Dismiss,
    Undo,
}

impl FixKind {
    pub fn title(self) -> &'static str {
        match self {
            FixKind::Link => "Link to an instalment",
            FixKind::RefundDue => "Mark a refund due",
            FixKind::AcceptDifference => "Accept the difference",
            FixKind::AttachToFlow => "Attach the credit to a flow",
            FixKind::RecoveryRequested => "Record a receipt recovery request",
            FixKind::Dismiss => "Dismiss with a note",
            FixKind::Undo => "Undo the fix in force",
        }
    }

    fn from_key(c: char) -> Option<FixKind> {
        Some(match c {
            'l' => FixKind::Link,
            'f' => FixKind::RefundDue,
            'a' => FixKind::AcceptDifference,
            't' => FixKind::AttachToFlow,
            'v' => FixKind::RecoveryRequested,
            'x' => FixKind::Dismiss,
            'u' => FixKind::Undo,
            _ => return None,
        })
    }
}

impl FixForm {
    fn value(&self, label: &str) -> &str {
        self.fields
            .iter()
            .find(|(l, _)| *l == label)
            .map_or("", |(_, v)| v.trim())
    }

    /// What is wrong with field `i`, if anything.
    pub fn problem(&self, i: usize) -> Option<String> {
        let (label, value) = self.fields.get(i)?;
        let value = value.trim();
        match *label {
            _ if value.is_empty() => Some("required".into()),
            "iupd" => value.parse::<Iupd>().err().map(|e| e.to_string()),
            "notice" => value.parse::<Nav>().err().map(|e| e.to_string()),
            _ => None,
        }
    }

    pub fn valid(&self) -> bool {
        (0..self.fields.len()).all(|i| self.problem(i).is_none())
    }

    /// The fix as the daemon takes it (None while a field is wrong).
    pub fn fix(&self) -> Option<Fix> {
        if !self.valid() {
            return None;
        }
        Some(match self.kind {
            FixKind::Link => Fix::Link {
                iupd: self.value("iupd").parse().ok()?,
                nav: self.value("notice").parse().ok()?,
            },
            FixKind::RefundDue => Fix::RefundDue,
            FixKind::AcceptDifference => Fix::AcceptDifference,
            FixKind::AttachToFlow => Fix::AttachToFlow {
                flow_id: self.value("flow").to_string(),
            },
            FixKind::RecoveryRequested => Fix::RecoveryRequested,
            FixKind::Dismiss => Fix::Dismiss,
            FixKind::Undo => Fix::Revert {
                id: self.item.resolution.as_ref()?.id,
            },
        })
    }

    pub fn reason(&self) -> &str {
        self.value("reason")
    }
}

/// The worklist screen.
#[derive(Clone, Debug, Default)]
pub struct WorklistScreen {
    /// The entities served (fiscal code, name), as the daemon lists them.
    pub entities: Vec<(EntityFiscalCode, String)>,
    pub entity: usize,
    pub items: Vec<WorkItem>,
    pub selected: usize,
    /// `class=… min=… age=… state=open|resolved|all`, as typed.
    pub filter: String,
    pub form: Option<FixForm>,
    /// The worklist shown has been asked for (`g` asks again).
    pub loaded: bool,
}

impl WorklistScreen {
    pub fn entity(&self) -> Option<&EntityFiscalCode> {
        self.entities.get(self.entity).map(|(cf, _)| cf)
    }

    /// The filter line as a query; words it does not know are taken as a class.
    pub fn query(&self) -> WorklistQuery {
        let mut q = WorklistQuery::default();
        for word in self.filter.split_whitespace() {
            match word.split_once('=') {
                Some(("min", v)) => q.min_amount = Cents::parse_api(v).ok().map(Cents::get),
                Some(("age", v)) => q.older_than_days = v.parse().ok(),
                Some(("state", "resolved")) => q.state = ItemState::Resolved,
                Some(("state", "all")) => q.state = ItemState::All,
                Some(("class", v)) => q.class = Some(v.into()),
                _ => q.class = Some(word.into()),
            }
        }
        q
    }

    /// The request for the worklist as filtered now.
    pub fn request(&mut self) -> Vec<Request> {
        let Some(cf) = self.entity().cloned() else {
            return Vec::new();
        };
        self.loaded = true;
        vec![Request::Worklist(cf, self.query())]
    }

    pub fn set_entities(&mut self, entities: Vec<(EntityFiscalCode, String)>) {
        let had = self.entity().cloned();
        self.entities = entities;
        self.entity = had
            .and_then(|cf| self.entities.iter().position(|(c, _)| *c == cf))
            .unwrap_or(0);
    }

    /// The next entity served (the worklist, flows and treasury screens share it).
    pub fn next_entity(&mut self) {
        if !self.entities.is_empty() {
            self.entity = (self.entity + 1) % self.entities.len();
            self.selected = 0;
            self.loaded = false;
        }
    }

    pub fn set_items(&mut self, items: Vec<WorkItem>) {
        self.items = items;
        self.selected = self.selected.min(self.items.len().saturating_sub(1));
    }

    /// A fix was made: the item shows it (or leaves the list of open items).
    pub fn resolved(&mut self, r: Resolution) {
        self.form = None;
        let reverted = matches!(r.fix, Fix::Revert { .. });
        let state = self.query().state;
        for item in self.items.iter_mut().filter(|i| i.key == r.key) {
            item.resolution = (!reverted).then(|| r.clone());
        }
        self.items.retain(|i| {
            i.key != r.key
                || match state {
                    ItemState::Open => i.resolution.is_none(),
                    ItemState::Resolved => i.resolution.is_some(),
                    ItemState::All => true,
                }
        });
        self.selected = self.selected.min(self.items.len().saturating_sub(1));
    }

    /// Screen keys (the filter line and forms aside).
    pub fn key(&mut self, key: KeyEvent, operator: bool) -> Vec<Request> {
        match key.code {
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') if self.selected + 1 < self.items.len() => {
                self.selected += 1;
            }
            KeyCode::Char('g') => return self.request(),
            KeyCode::Char('e') if !self.entities.is_empty() => {
                self.next_entity();
                return self.request();
            }
            KeyCode::Char(c) if operator => {
                if let Some(kind) = FixKind::from_key(c) {
                    self.open_form(kind);
                }
            }
            _ => {}
        }
        Vec::new()
    }

    fn open_form(&mut self, kind: FixKind) {
        let (Some(entity), Some(item)) = (self.entity().cloned(), self.items.get(self.selected))
        else {
            return;
        };
        // Undo needs a fix in force; the others need none.
        if (kind == FixKind::Undo) != item.resolution.is_some() {
            return;
        }
        let mut fields = match kind {
            FixKind::Link => vec![("iupd", String::new()), ("notice", String::new())],
            FixKind::AttachToFlow => vec![("flow", String::new())],
            _ => Vec::new(),
        };
        fields.push(("reason", String::new()));
        self.form = Some(FixForm {
            kind,
            entity,
            item: item.clone(),
            fields,
            focus: 0,
            confirming: false,
        });
    }

    /// Keys while a fix form is open.
    pub fn form_key(&mut self, key: KeyEvent) -> Vec<Request> {
        let Some(form) = &mut self.form else {
            return Vec::new();
        };
        if form.confirming {
            if matches!(key.code, KeyCode::Char('y' | 'Y'))
                && let Some(fix) = form.fix()
            {
                return vec![Request::Resolve(
                    form.entity.clone(),
                    form.item.key.clone(),
                    fix,
                    form.reason().to_string(),
                )];
            }
            form.confirming = false;
            return Vec::new();
        }
        let n = form.fields.len();
        match key.code {
            KeyCode::Esc => self.form = None,
            KeyCode::Tab | KeyCode::Down => form.focus = (form.focus + 1) % n,
            KeyCode::BackTab | KeyCode::Up => form.focus = (form.focus + n - 1) % n,
            KeyCode::Backspace => {
                form.fields[form.focus].1.pop();
            }
            KeyCode::Enter => {
                if form.valid() {
                    form.confirming = true;
                } else if let Some(i) = (0..n).find(|i| form.problem(*i).is_some()) {
                    form.focus = i;
                }
            }
            KeyCode::Char(c) if form.fields[form.focus].1.chars().count() < 140 => {
                form.fields[form.focus].1.push(c);
            }
            _ => {}
        }
        Vec::new()
    }
}
