//! How an amount divides over an instalment's transfers, in whole cents.
//!
//! Every split is by largest remainder: the shares add up to the amount exactly and each is
//! within one cent of its exact proportional share (ties go to the earlier transfer), so the
//! same inputs always give the same cents.

use crate::ids::Nav;
use crate::model::{MAX_TRANSFERS, ModelError, Transfer};
use crate::money::Cents;

use super::Position;

/// `amount` in proportion to `weights`. `None` if the weights add up to zero or `amount` is
/// negative.
pub fn proportional(amount: Cents, weights: &[Cents]) -> Option<Vec<Cents>> {
    if amount < Cents::ZERO || weights.iter().any(|w| *w < Cents::ZERO) {
        return None;
    }
    let total: i128 = weights.iter().map(|w| i128::from(w.0)).sum();
    if total == 0 {
        return None;
    }
    let a = i128::from(amount.0);
    let mut shares: Vec<i128> = Vec::with_capacity(weights.len());
    let mut remainders: Vec<(i128, usize)> = Vec::with_capacity(weights.len());
    for (i, w) in weights.iter().enumerate() {
        let exact = a * i128::from(w.0);
        shares.push(exact / total);
        remainders.push((exact % total, i));
    }
    let mut left = a - shares.iter().sum::<i128>();
    // Largest remainder first; on equal remainders the earlier transfer.
    remainders.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
    for (_, i) in remainders {
        if left == 0 {
            break;
        }
        shares[i] += 1;
        left -= 1;
    }
    shares
        .into_iter()
        .map(|s| i64::try_from(s).ok().map(Cents))
        .collect()
}

/// A cut of `cut` taken from the transfers `current` in proportion to them, revenue stamps
/// (`stamp[i]`) untouched. `None` if the other transfers cannot absorb it.
pub fn reduction(current: &[Cents], stamp: &[bool], cut: Cents) -> Option<Vec<Cents>> {
    let weights = masked(current, stamp);
    let absorbable: i64 = weights.iter().map(|w| w.0).sum();
    if cut.0 > absorbable {
        return None;
    }
    if cut == Cents::ZERO {
        return Some(current.to_vec());
    }
    let taken = proportional(cut, &weights)?;
    Some(
        current
            .iter()
            .zip(taken)
            .map(|(c, t)| Cents(c.0 - t.0))
            .collect(),
    )
}

/// How a payment of `amount` divides over the transfers of a notice: first what is open on each
/// (`open`), in proportion to it, a revenue stamp only whole; then whatever is left, which is
/// owed to nobody and will be refunded, in proportion to the transfers' amounts (`terms`).
pub fn allocate(amount: Cents, open: &[Cents], terms: &[Cents], stamp: &[bool]) -> Vec<Cents> {
    let n = open.len();
    let mut shares = vec![Cents::ZERO; n];
    let total_open: i64 = open.iter().map(|c| c.0).sum();
    let mut left = amount.0;
    if left >= total_open {
        shares.copy_from_slice(open);
        left -= total_open;
    } else {
        // Not enough for everything: stamps wait to be paid whole, the rest share the money.
        let others = masked(open, stamp);
        let others_open: i64 = others.iter().map(|c| c.0).sum();
        if left >= others_open {
            shares.copy_from_slice(&others);
            left -= others_open;
        } else if let Some(split) = proportional(Cents(left), &others) {
            shares = split;
            left = 0;
        }
    }
    if left > 0 {
        let excess = proportional(Cents(left), &masked(terms, stamp))
            .or_else(|| proportional(Cents(left), terms))
            .unwrap_or_else(|| {
                let mut all = vec![Cents::ZERO; n];
                if let Some(first) = all.first_mut() {
                    *first = Cents(left);
                }
                all
            });
        for (s, e) in shares.iter_mut().zip(excess) {
            s.0 += e.0;
        }
    }
    shares
}

/// The transfers of a plan whose request gives none: each beneficiary of the replaced notices
/// keeps its share of what was open on them. The shares are cumulative largest-remainder splits,
/// so over the whole plan each beneficiary gets its share to the cent; revenue stamps go whole
/// into the first instalment.
pub fn plan(
    p: &Position,
    replaced: &[Nav],
    amounts: &[Cents],
) -> Result<Vec<Vec<Transfer>>, ModelError> {
    // One group per beneficiary and account, in the order they first appear (the entity's
    // own first, as every notice starts with it).
    let mut groups: Vec<(Transfer, Cents, bool)> = Vec::new();
    for nav in replaced {
        let Some(inst) = p.instalment(nav) else {
            continue;
        };
        let open = p.account(inst).open();
        let weights = if open.iter().all(|c| *c == Cents::ZERO) {
            // Nothing open: the ledger will refuse the plan with its own reason.
            inst.amounts()
        } else {
            open
        };
        for ((t, w), stamp) in inst.terms.transfers.iter().zip(weights).zip(inst.stamps()) {
            match groups
                .iter_mut()
                .find(|(g, _, _)| g.beneficiary == t.beneficiary && g.target == t.target)
            {
                Some((_, total, _)) => total.0 += w.0,
                None => groups.push((t.clone(), w, stamp)),
            }
        }
    }
    if groups.len() > MAX_TRANSFERS {
        return Err(ModelError::new(
            "instalments",
            format!(
                "the replaced notices pay {} beneficiaries and accounts, a notice at most {}: \
                 give the transfers",
                groups.len(),
                MAX_TRANSFERS
            ),
        ));
    }
    let stamps: i64 = groups.iter().filter(|g| g.2).map(|g| g.1.0).sum();
    if amounts.first().is_none_or(|a| a.0 < stamps) {
        return Err(ModelError::new(
            "instalments[0].amount",
            format!(
                "the first instalment carries the revenue stamps ({}): it cannot be less",
                Cents(stamps)
            ),
        ));
    }
    let weights: Vec<Cents> = groups
        .iter()
        .map(|(_, w, stamp)| if *stamp { Cents::ZERO } else { *w })
        .collect();
    let mut out = Vec::with_capacity(amounts.len());
    let mut cumulative = Cents::ZERO;
    let mut before = vec![Cents::ZERO; groups.len()];
    for (k, amount) in amounts.iter().enumerate() {
        let own = if k == 0 { amount.0 - stamps } else { amount.0 };
        cumulative.0 += own;
        let running = proportional(cumulative, &weights).ok_or_else(|| {
            ModelError::new(
                "instalments",
                "nothing is open on the replaced notices but revenue stamps",
            )
        })?;
        let mut transfers = Vec::new();
        for (g, ((group, w, stamp), (now, was))) in
            groups.iter().zip(running.iter().zip(&before)).enumerate()
        {
            let share = match (*stamp, k) {
                (true, 0) => *w,
                (true, _) => Cents::ZERO,
                (false, _) => Cents(now.0 - was.0),
            };
            // A beneficiary whose share rounds to nothing in this instalment sits it out
            // (pagoPA refuses a transfer of zero); the entity's own transfer always leads.
            if share > Cents::ZERO || g == 0 {
                let mut t = group.clone();
                t.id = u8::try_from(transfers.len() + 1).unwrap_or(u8::MAX);
                t.amount = share;
                transfers.push(t);
            }
        }
        before = running;
        out.push(transfers);
    }
    Ok(out)
}

/// `amounts` with the revenue stamps' set to zero.
fn masked(amounts: &[Cents], stamp: &[bool]) -> Vec<Cents> {
    amounts
        .iter()
        .zip(stamp.iter().copied().chain(std::iter::repeat(false)))
        .map(|(a, s)| if s { Cents::ZERO } else { *a })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(v: &[i64]) -> Vec<Cents> {
        v.iter().copied().map(Cents).collect()
    }

    #[test]
    fn shares_are_within_a_cent_and_add_up() {
        assert_eq!(
            proportional(Cents(8_000), &c(&[9_500, 500])),
            Some(c(&[7_600, 400]))
        );
        assert_eq!(
            proportional(Cents(100), &c(&[1, 1, 1])),
            Some(c(&[34, 33, 33]))
        );
        assert_eq!(proportional(Cents(1), &c(&[0, 0])), None);
        assert_eq!(proportional(Cents(0), &c(&[3, 4])), Some(c(&[0, 0])));
    }

    #[test]
    fn a_reduction_keeps_the_shares_and_the_stamp() {
        // 95.00 + 5.00 TEFA reduced to 80.00.
        assert_eq!(
            reduction(&c(&[9_500, 500]), &[false, false], Cents(2_000)),
            Some(c(&[7_600, 400]))
        );
        // A 2.00 stamp is not touched.
        assert_eq!(
            reduction(&c(&[1_000, 200]), &[false, true], Cents(500)),
            Some(c(&[500, 200]))
        );
        assert_eq!(
            reduction(&c(&[1_000, 200]), &[false, true], Cents(1_100)),
            None
        );
    }

    #[test]
    fn payments_fill_what_is_open_and_spread_the_excess() {
        // 20.00 paid on 95.00 + 5.00: each beneficiary takes its share.
        assert_eq!(
            allocate(
                Cents(2_000),
                &c(&[9_500, 500]),
                &c(&[9_500, 500]),
                &[false, false]
            ),
            c(&[1_900, 100])
        );
        // 120.00 on 60.00: 60.00 over, spread like the transfers.
        assert_eq!(
            allocate(
                Cents(12_000),
                &c(&[5_000, 1_000]),
                &c(&[5_000, 1_000]),
                &[false, false]
            ),
            c(&[10_000, 2_000])
        );
        // A partial payment leaves the stamp for later.
        assert_eq!(
            allocate(
                Cents(500),
                &c(&[1_000, 1_600]),
                &c(&[1_000, 1_600]),
                &[false, true]
            ),
            c(&[500, 0])
        );
        // Nothing open: everything is excess.
        assert_eq!(
            allocate(Cents(300), &c(&[0, 0]), &c(&[200, 100]), &[false, false]),
            c(&[200, 100])
        );
    }
}
