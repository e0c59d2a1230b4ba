//! Key layout of the `data` table. Everything a position commit touches lives in one table so
//! that a commit is one atomic batch; a one-byte prefix separates the tables. All numbers
//! are big-endian so that range scans come out in numeric order, and internal ids grow by one so
//! that bulk loads arrive in key order (sled's memory stays bounded only then; an LSM engine
//! compacts least).

use mpay_common::ids::{DebtorCode, EntityFiscalCode, Iupd, Iuv};

/// Internal id of a position: allocated in sequence, never reused.
pub type PositionId = u64;

pub const META: u8 = 0x00;
pub const POSITION: u8 = 0x01;
pub const LEDGER: u8 = 0x02;
pub const BY_IUPD: u8 = 0x03;
/// IUVs are unique per entity (that is what the "U" means) and a NAV determines its IUV, so one
/// index keyed by IUV answers lookups by either.
pub const BY_IUV: u8 = 0x04;
pub const BY_DEBTOR: u8 = 0x05;
/// Receipts, keyed `(entity it was sent to, receiptId)`: their ledger effect commits with them.
pub const RECEIPT: u8 = 0x06;
/// The changes feed: `(commit, position id)` → the ledger sequence number that commit wrote.
/// Derived (a restore rebuilds it from the ledger's commit numbers); the console follows it.
pub const CHANGE: u8 = 0x07;
/// Debtors by name: `(folded name from one of its words on, 0, position id)` → nothing, for
/// each of the name's first four words, so that a prefix search finds "Rossi" in "Mario Rossi".
pub const BY_NAME: u8 = 0x08;
/// Reporting flows: `(entity, flow id, 0, dataOraFlusso)` → the flow record; revisions of a
/// flow sort together, oldest first.
pub const FLOW: u8 = 0x09;
/// Treasury movements: `(entity, account, 0, the bank's reference)` → the movement record.
pub const MOVEMENT: u8 = 0x0a;

pub const META_FORMAT: &[u8] = b"\x00format";
pub const META_NEXT_POSITION: &[u8] = b"\x00next-position";
pub const META_COMMIT: &[u8] = b"\x00commit";
pub const META_POSITIONS: &[u8] = b"\x00positions";
/// Present once every position is in the name index (stores older than it get it at open).
pub const META_NAME_INDEX: &[u8] = b"\x00index/name";

/// `META "sequence/" entity` → next IUV sequence number for that entity.
pub fn meta_sequence(entity: &EntityFiscalCode) -> Vec<u8> {
    let mut k = b"\x00sequence/".to_vec();
    k.extend_from_slice(&entity.as_bytes_key());
    k
}

pub fn position(id: PositionId) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = POSITION;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

pub fn ledger(id: PositionId, seq: u32) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[0] = LEDGER;
    k[1..9].copy_from_slice(&id.to_be_bytes());
    k[9..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub fn change(commit: u64, id: PositionId) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = CHANGE;
    k[1..9].copy_from_slice(&commit.to_be_bytes());
    k[9..].copy_from_slice(&id.to_be_bytes());
    k
}

/// A name folded for searching: lower case, single spaces, at most 48 bytes.
pub fn fold_name(name: &str) -> String {
    let mut out = String::new();
    for word in name.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().flat_map(char::to_lowercase));
    }
    while out.len() > 48 {
        out.pop();
    }
    out
}

/// The name index's prefix for names that start with `prefix`.
pub fn by_name_prefix(prefix: &str) -> Vec<u8> {
    let mut k = vec![BY_NAME];
    k.extend_from_slice(fold_name(prefix).as_bytes());
    k
}

/// The name index's keys of a position.
pub fn by_name(name: &str, id: PositionId) -> Vec<Vec<u8>> {
    let folded = fold_name(name);
    let mut starts: Vec<usize> = vec![0];
    starts.extend(folded.match_indices(' ').map(|(i, _)| i + 1).take(3));
    starts
        .into_iter()
        .map(|at| {
            let mut k = vec![BY_NAME];
            k.extend_from_slice(&folded.as_bytes()[at..]);
            k.push(0);
            k.extend_from_slice(&id.to_be_bytes());
            k
        })
        .collect()
}

/// Prefix of all ledger entries of one position.
pub fn ledger_prefix(id: PositionId) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = LEDGER;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

fn entity_key(table: u8, entity: &EntityFiscalCode, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(12 + rest.len());
    k.push(table);
    k.extend_from_slice(&entity.as_bytes_key());
    k.extend_from_slice(rest);
    k
}

pub fn by_iupd(entity: &EntityFiscalCode, iupd: &Iupd) -> Vec<u8> {
    entity_key(BY_IUPD, entity, iupd.as_str().as_bytes())
}

pub fn by_iuv(entity: &EntityFiscalCode, iuv: &Iuv) -> Vec<u8> {
    entity_key(BY_IUV, entity, iuv.as_str().as_bytes())
}

/// `BY_DEBTOR code 0x00 position-id`; the separator keeps an 11-digit code from matching the
/// prefix of a longer one. Anonymous debtors are not indexed.
pub fn by_debtor(code: &DebtorCode, id: PositionId) -> Option<Vec<u8>> {
    let mut k = by_debtor_prefix(code)?;
    k.extend_from_slice(&id.to_be_bytes());
    Some(k)
}

pub fn by_debtor_prefix(code: &DebtorCode) -> Option<Vec<u8>> {
    if matches!(code, DebtorCode::Anonymous) {
        return None;
    }
    let code = code.to_string();
    let mut k = Vec::with_capacity(27);
    k.push(BY_DEBTOR);
    k.extend_from_slice(code.as_bytes());
    k.push(0);
    Some(k)
}

pub fn id_value(id: PositionId) -> [u8; 8] {
    id.to_be_bytes()
}

pub fn decode_id(bytes: &[u8]) -> Option<PositionId> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

pub fn decode_u64(bytes: &[u8]) -> Option<u64> {
    decode_id(bytes)
}

pub fn receipt(entity: &EntityFiscalCode, receipt_id: &str) -> Vec<u8> {
    entity_key(RECEIPT, entity, receipt_id.as_bytes())
}

/// A receipt whose receiptId an earlier receipt for another notice already holds.
pub fn receipt_reused(entity: &EntityFiscalCode, receipt_id: &str, nav: &str) -> Vec<u8> {
    let mut id = receipt_id.as_bytes().to_vec();
    // `\0` sorts it right after the first one and cannot occur in a receiptId (stText35).
    id.push(0);
    id.extend_from_slice(nav.as_bytes());
    entity_key(RECEIPT, entity, &id)
}

/// Every flow of an entity.
pub fn flows_of(entity: &EntityFiscalCode) -> Vec<u8> {
    entity_key(FLOW, entity, &[])
}

/// Every revision of one flow.
pub fn flow_prefix(entity: &EntityFiscalCode, flow_id: &str) -> Vec<u8> {
    let mut id = flow_id.as_bytes().to_vec();
    // A flow id never holds `\0`: "F1" and "F10" stay apart.
    id.push(0);
    entity_key(FLOW, entity, &id)
}

/// One revision of a flow.
pub fn flow(entity: &EntityFiscalCode, flow_id: &str, time: &str) -> Vec<u8> {
    let mut k = flow_prefix(entity, flow_id);
    k.extend_from_slice(time.as_bytes());
    k
}

/// Every movement of an entity.
pub fn movements_of(entity: &EntityFiscalCode) -> Vec<u8> {
    entity_key(MOVEMENT, entity, &[])
}

/// One movement.
pub fn movement(entity: &EntityFiscalCode, account: &str, reference: &str) -> Vec<u8> {
    let mut rest = account.as_bytes().to_vec();
    rest.push(0);
    rest.extend_from_slice(reference.as_bytes());
    entity_key(MOVEMENT, entity, &rest)
}
