//! Finding positions: one entity's positions by status, debtor, kind and due dates, a page at a
//! time. A search by debtor reads the debtor index; any other reads positions in id order, at
//! most `SCAN_BUDGET` per call, so that a narrow filter cannot make one call scan the whole
//! store: its page may then be short, and `next` says where to go on.

use mpay_common::ids::EntityFiscalCode;
use mpay_common::ledger::Position;
use mpay_common::requests::PositionQuery;

use super::ServiceError;
use crate::App;
use crate::store::PositionId;

/// Positions examined per call at most.
const SCAN_BUDGET: usize = 20_000;
const SCAN_CHUNK: usize = 512;
/// Results per page unless the query says otherwise, and at most.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

/// A page of results; `next` is the `after` of the following page (None: there is no more).
#[derive(Debug)]
pub struct Page {
    pub positions: Vec<(PositionId, Position)>,
    pub next: Option<PositionId>,
}

/// The positions of `entity` that match `query`.
pub fn positions(
    app: &App,
    entity: &EntityFiscalCode,
    query: &PositionQuery,
) -> Result<Page, ServiceError> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ServiceError::field(
            "limit",
            format!("an integer from 1 to {MAX_LIMIT}"),
        ));
    }
    let today = app.clock.today();
    let wanted = |p: &Position| {
        &p.entity == entity
            && query.kind.as_ref().is_none_or(|k| &p.kind == k)
            && query.debtor.as_ref().is_none_or(|d| &p.debtor.code == d)
            && query.status.is_none_or(|s| p.status(today) == s)
            // Due dates: some instalment falls due within the range.
            && (query.due_from.is_none() && query.due_to.is_none()
                || p.instalments().any(|i| {
                    query.due_from.is_none_or(|f| i.terms.due >= f)
                        && query.due_to.is_none_or(|t| i.terms.due <= t)
                }))
    };
    let mut from = query.after.map_or(0, |a| a.saturating_add(1));
    let mut out = Vec::new();
    let mut scanned = 0;
    loop {
        let chunk = match &query.debtor {
            Some(debtor) => app.store.by_debtor_from(debtor, from, SCAN_CHUNK)?,
            None => app.store.positions(from, SCAN_CHUNK)?,
        };
        let exhausted = chunk.len() < SCAN_CHUNK;
        for (id, p) in chunk {
            scanned += 1;
            from = id.saturating_add(1);
            if wanted(&p) {
                out.push((id, p));
                if out.len() == limit {
                    return Ok(Page {
                        positions: out,
                        next: Some(id),
                    });
                }
            }
        }
        if exhausted {
            return Ok(Page {
                positions: out,
                next: None,
            });
        }
        if scanned >= SCAN_BUDGET {
            return Ok(Page {
                positions: out,
                next: Some(from.saturating_sub(1)),
            });
        }
    }
}
