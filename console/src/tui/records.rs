//! The flows and treasury screens' state and keys: one entity's reporting flows (a flow opens
//! on its rows, each with its class) and its treasury movements, for the entity the worklist
//! screen has chosen (`e` moves on, on any of the three). Pure, like `app.rs`.

use mpay_common::ids::EntityFiscalCode;
use mpay_common::reconcile::{FlowView, MovementView};
use ratatui::crossterm::event::{KeyCode, KeyEvent};

use super::app::Request;

#[derive(Clone, Debug, Default)]
pub struct RecordsScreen {
    pub flows: Vec<FlowView>,
    pub flow_selected: usize,
    /// The open flow's revisions, oldest first; the screen shows the newest.
    pub open: Option<Vec<FlowView>>,
    pub row_selected: usize,
    pub movements: Vec<MovementView>,
    pub movement_selected: usize,
}

/// Moves `selected` up or down within `len` items; whether the key was a move.
fn step(selected: &mut usize, len: usize, key: &KeyEvent) -> bool {
    match key.code {
        KeyCode::Up | KeyCode::Char('k') => *selected = selected.saturating_sub(1),
        KeyCode::Down | KeyCode::Char('j') if *selected + 1 < len => *selected += 1,
        KeyCode::PageUp => *selected = selected.saturating_sub(20),
        KeyCode::PageDown => *selected = (*selected + 20).min(len.saturating_sub(1)),
        KeyCode::Down | KeyCode::Char('j') => {}
        _ => return false,
    }
    true
}

impl RecordsScreen {
    pub fn set_flows(&mut self, flows: Vec<FlowView>) {
        self.flows = flows;
        self.flow_selected = self.flow_selected.min(self.flows.len().saturating_sub(1));
    }

    pub fn set_open(&mut self, revisions: Vec<FlowView>) {
        self.open = Some(revisions);
        self.row_selected = 0;
    }

    pub fn set_movements(&mut self, movements: Vec<MovementView>) {
        self.movements = movements;
        self.movement_selected = self
            .movement_selected
            .min(self.movements.len().saturating_sub(1));
    }

    /// The newest revision of the open flow.
    pub fn open_flow(&self) -> Option<&FlowView> {
        self.open.as_ref().and_then(|r| r.last())
    }

    /// Keys of the flows screen.
    pub fn flows_key(&mut self, key: KeyEvent, entity: Option<&EntityFiscalCode>) -> Vec<Request> {
        if let Some(flow) = self.open_flow() {
            let len = flow.rows.len();
            step(&mut self.row_selected, len, &key);
            return Vec::new();
        }
        if step(&mut self.flow_selected, self.flows.len(), &key) {
            return Vec::new();
        }
        match (key.code, entity, self.flows.get(self.flow_selected)) {
            (KeyCode::Enter, Some(cf), Some(f)) => {
                vec![Request::Flow(cf.clone(), f.flow_id.clone())]
            }
            _ => Vec::new(),
        }
    }

    /// Keys of the treasury screen.
    pub fn movements_key(&mut self, key: KeyEvent) {
        step(&mut self.movement_selected, self.movements.len(), &key);
    }
}
