//! Positions for the store's tests: three authorities, and canteen positions with realistic
//! debtors, built from `mpay_common` alone.

use jiff::civil::Date;
use jiff::{Timestamp, ToSpan};
use mpay_common::ids::{AuxDigit, DebtorCode, EntityFiscalCode, Iban, Iupd, IuvSettings, Nav};
use mpay_common::model::{
    Debtor, Instalment, Metadata, OptionKind, PaymentOption, PositionData, Transfer, TransferTarget,
};
use mpay_common::money::Cents;

/// An authority as the store's tests need it.
pub struct Entity {
    pub fiscal_code: EntityFiscalCode,
    pub iuv: IuvSettings,
    pub bank_account: Iban,
}

fn entity(cf: &str, segregation_code: u8, iban: &str) -> Entity {
    Entity {
        fiscal_code: cf.parse().expect("fiscal code"),
        iuv: IuvSettings {
            aux: AuxDigit::Three,
            segregation_code: Some(segregation_code),
            application_code: None,
        },
        bank_account: iban.parse().expect("iban"),
    }
}

/// Two municipalities and their province.
pub fn entities() -> [Entity; 3] {
    [
        entity("00123456782", 1, "IT92R0306902117100000046111"),
        entity("00987654324", 2, "IT64E0200802626000101010101"),
        entity("80001234568", 3, "IT06F0103002800000061234567"),
    ]
}

/// Today in Rome, where the authorities' days begin and end.
pub fn today() -> Date {
    mpay_common::calendar::rome_date(Timestamp::now())
}

/// Canteen positions of one authority, one notice each, seeded for repeatable runs.
pub struct Builder<'a> {
    entity: &'a Entity,
    today: Date,
    rng: fastrand::Rng,
}

impl<'a> Builder<'a> {
    pub fn new(entity: &'a Entity, seed: u64) -> Builder<'a> {
        Builder {
            entity,
            today: today(),
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// A company debtor (VAT number), so the debtor index has something to find.
    fn debtor(&mut self, n: u64) -> Debtor {
        let code = loop {
            let stem = format!("0{:09}", self.rng.u64(100_000_000..999_999_999));
            if let Some(code) = (0..10).find_map(|d| format!("{stem}{d}").parse().ok()) {
                break code;
            }
        };
        Debtor {
            code: DebtorCode::Legal(code),
            name: format!("Ditta {n}"),
            street: Some("Via Roma, 1".into()),
            postal_code: Some("60100".into()),
            city: Some("Castelverde".into()),
            province: Some("AN".into()),
            country: Some("IT".into()),
            email: None,
        }
    }

    /// Position number `n`, with its notice number from `navs`; `None` when `navs` runs out.
    pub fn position(
        &mut self,
        n: u64,
        navs: &mut impl Iterator<Item = Nav>,
    ) -> Option<PositionData> {
        let nav = navs.next()?;
        let year = self.today.year();
        let amount = Cents(i64::from(self.rng.u32(2_500..12_000)));
        let due = self.today.saturating_add(self.rng.i64(-120..90).days());
        let transfer = Transfer {
            id: 1,
            beneficiary: self.entity.fiscal_code.clone(),
            target: TransferTarget::Bank(self.entity.bank_account.clone()),
            amount,
            remittance: "Refezione scolastica".into(),
            category: "0201102SE".into(),
            metadata: vec![Metadata {
                key: "capitolo".into(),
                value: "1010".into(),
            }],
        };
        let instalment = Instalment {
            iuv: nav.iuv(),
            nav,
            amount,
            due,
            description: format!("Refezione scolastica n. {n}"),
            transfers: vec![transfer],
            metadata: Vec::new(),
        };
        Some(PositionData {
            iupd: format!("MENSA-{year}-{n:07}").parse::<Iupd>().ok()?,
            kind: "MENSA".into(),
            debtor: self.debtor(n),
            description: format!("Refezione scolastica {year}"),
            validity: None,
            expiry: None,
            options: vec![PaymentOption {
                kind: OptionKind::Single,
                instalments: vec![instalment],
            }],
        })
    }
}
