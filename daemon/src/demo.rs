//! `mpayd demo`: a built-in configuration (one broker, two stations, three authorities) and a
//! generated, realistic data set, so the daemon has something to serve and show on first run.
//!
//! The data are deterministic for a given seed: the same positions, debtors and variations.

use std::net::SocketAddr;
use std::path::Path;

use jiff::civil::Date;
use jiff::{Timestamp, ToSpan};
use mpay_common::ids::{AuxDigit, DebtorCode, Iupd, IuvSettings, PersonalFiscalCode, VatNumber};
use mpay_common::ledger::{Actor, Change, Event, OfflineChannel};
use mpay_common::model::{
    Debtor, Instalment, Metadata, OptionKind, PaymentOption, PositionData, RevenueStamp, Transfer,
    TransferTarget,
};
use mpay_common::money::Cents;

use crate::config::{
    AdminConfig, ApiConfig, ApiKeyConfig, BrokerConfig, Config, ConsoleConfig, EntityConfig,
    JournalConfig, LogConfig, OperatorConfig, ServiceConfig, StationConfig, StationListenerConfig,
    StoreConfig,
};
use crate::store::{PositionId, Store, StoreError};

pub const BROKER: &str = "01111111116";
pub const STATION_V2: &str = "01111111116_01";
pub const STATION_V1: &str = "01111111116_02";

/// The demo entities' API keys (entity, key name, key). Fixed and public: demo data only.
pub const API_KEYS: [(&str, &str, &str); 3] = [
    ("00123456782", "tributi", "demo-castelverde-key"),
    ("00987654324", "tributi", "demo-montalto-key"),
    ("80001234568", "tributi", "demo-valleverde-key"),
];

/// The station's password and the subscription key the demo's simulated node expects.
pub const NODE_PASSWORD: &str = "demo-node-pw1";
pub const NODE_KEY: &str = "demo-node-subscription-key";

/// The demo's citizen-portal key (key name, key): the cross-entity citizen statement.
pub const PORTAL_KEY: (&str, &str) = ("portale", "demo-portal-key");

fn demo_keys(cf: &str) -> Vec<ApiKeyConfig> {
    API_KEYS
        .iter()
        .filter(|(entity, _, _)| *entity == cf)
        .map(|(_, name, key)| ApiKeyConfig {
            name: (*name).into(),
            sha256: crate::config::hex(&crate::config::key_digest(key)),
        })
        .collect()
}

fn parse<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    // Only for the constants below, which the tests parse.
    s.parse()
        .unwrap_or_else(|e| panic!("demo constant {s:?} is invalid: {e:?}"))
}

/// The citizen whose statement the README shows: the first position of every demo entity is
/// theirs.
pub const DEMO_CITIZEN: &str = "VRDLGU75C12H501D";

/// The demo's configuration, with its data in `data_dir`.
pub fn config(data_dir: &Path, admin: SocketAddr, station: SocketAddr) -> Config {
    let entity =
        |cf: &str, name: &str, station: &str, seg: u8, bank: &str, postal: &str| EntityConfig {
            fiscal_code: parse(cf),
            name: name.into(),
            office: Some("Servizio Tributi".into()),
            stations: vec![station.into()],
            iuv: IuvSettings {
                aux: AuxDigit::Three,
                segregation_code: Some(seg),
                application_code: None,
            },
            bank_accounts: vec![parse(bank)],
            postal_accounts: vec![parse(postal)],
            services: vec![ServiceConfig {
                id: "00001".into(),
                subject_id: format!("{seg:05}"),
                description: "Diritti di segreteria certificato anagrafico".into(),
                amount: "5.16".into(),
                category: "9/0601108DS/".into(),
                due_days: 30,
                max_per_day: 1000,
            }],
            api_keys: demo_keys(cf),
            treasury_csv: Some(crate::config::TreasuryCsv::usual()),
        };
    Config {
        data_dir: data_dir.to_path_buf(),
        log: LogConfig::default(),
        store: StoreConfig::default(),
        admin: AdminConfig { listen: admin },
        station: StationListenerConfig {
            listen: station,
            path: "/pagopa/paForNode".into(),
            max_body_bytes: 256 << 10,
            allow: Vec::new(),
            tls: None,
            max_connections: 1024,
            header_timeout_secs: 10,
            drain_secs: 5,
            unprotected: false,
            node_certificate_sha256: Vec::new(),
            // The simulator plays unknown notices at load, from this host.
            max_unknown_lookups_per_minute: 0,
        },
        api: ApiConfig::default(),
        journal: JournalConfig::default(),
        reconciliation: Default::default(),
        node: None,
        broker: BrokerConfig {
            id: parse(BROKER),
            name: "Intermediario Tecnologico Demo".into(),
        },
        stations: vec![
            StationConfig {
                id: STATION_V2.into(),
                primitive_version: 2,
            },
            StationConfig {
                id: STATION_V1.into(),
                primitive_version: 1,
            },
        ],
        entities: vec![
            entity(
                "00123456782",
                "Comune di Castelverde",
                STATION_V2,
                1,
                "IT92R0306902117100000046111",
                "IT88Q0760102600000012345678",
            ),
            entity(
                "00987654324",
                "Comune di Montalto Marche",
                STATION_V2,
                2,
                "IT64E0200802626000101010101",
                "IT03J0760103200000098765432",
            ),
            entity(
                "80001234568",
                "Provincia di Valleverde",
                STATION_V1,
                3,
                "IT06F0103002800000061234567",
                "IT52O0760113400000055512345",
            ),
        ],
        portal_keys: vec![ApiKeyConfig {
            name: PORTAL_KEY.0.into(),
            sha256: crate::config::hex(&crate::config::key_digest(PORTAL_KEY.1)),
        }],
        console: ConsoleConfig::default(),
        // Whoever runs the demo is its administrator at the console.
        operators: vec![OperatorConfig {
            name: "demo".into(),
            uid: Some(own_uid()),
            user: None,
            certificate_sha256: None,
            role: mpay_common::console::Role::Admin,
        }],
    }
}

/// The uid this process runs as.
pub fn own_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map_or(0, |m| m.uid())
}

const SURNAMES: [&str; 24] = [
    "Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Ricci", "Marino",
    "Greco", "Bruno", "Gallo", "Conti", "De Luca", "Mancini", "Costa", "Giordano", "Rizzo",
    "Lombardi", "Moretti", "Barbieri", "Fontana", "Santoro", "Mariani",
];
const MALE: [&str; 12] = [
    "Marco",
    "Giuseppe",
    "Luca",
    "Andrea",
    "Francesco",
    "Alessandro",
    "Matteo",
    "Lorenzo",
    "Davide",
    "Simone",
    "Paolo",
    "Stefano",
];
const FEMALE: [&str; 12] = [
    "Giulia",
    "Francesca",
    "Chiara",
    "Sara",
    "Martina",
    "Elena",
    "Valentina",
    "Laura",
    "Anna",
    "Alessia",
    "Federica",
    "Silvia",
];
const COMPANIES: [&str; 8] = [
    "Edilizia Castelli S.r.l.",
    "Bar Centrale di Greco & C. S.n.c.",
    "Trasporti Adriatica S.p.A.",
    "Farmacia San Marco S.r.l.",
    "Officina Meccanica Bruno S.r.l.",
    "Agriturismo Le Querce S.a.s.",
    "Panificio Moretti S.r.l.",
    "Studio Associato Fontana",
];
const STREETS: [&str; 8] = [
    "Via Roma",
    "Via Garibaldi",
    "Corso Mazzini",
    "Via Verdi",
    "Piazza della Repubblica",
    "Via Dante Alighieri",
    "Viale dei Pini",
    "Via XX Settembre",
];
/// Cadastral codes of real municipalities, for fiscal codes.
const BIRTHPLACES: [&str; 6] = ["A271", "H501", "F205", "D969", "L219", "F839"];

/// Consonants first, then vowels, padded with X: the fiscal code's name groups.
fn letters(word: &str, first_name: bool) -> String {
    let up: Vec<char> = word
        .to_uppercase()
        .chars()
        .filter(char::is_ascii_alphabetic)
        .collect();
    let cons: Vec<char> = up
        .iter()
        .copied()
        .filter(|c| !"AEIOU".contains(*c))
        .collect();
    let vowels = up.iter().copied().filter(|c| "AEIOU".contains(*c));
    let picked: Vec<char> = if first_name && cons.len() > 3 {
        vec![cons[0], cons[2], cons[3]]
    } else {
        cons.iter().copied().chain(vowels).collect()
    };
    picked.into_iter().chain("XXX".chars()).take(3).collect()
}

/// A valid personal fiscal code for the person: the check character is the one the parser
/// accepts (tried, not recomputed here).
fn personal_code(surname: &str, name: &str, female: bool, rng: &mut fastrand::Rng) -> String {
    const MONTHS: &[u8] = b"ABCDEHLMPRST";
    let year = rng.u32(40..=99);
    let month = MONTHS[rng.usize(..12)] as char;
    let day = rng.u32(1..=28) + if female { 40 } else { 0 };
    let place = BIRTHPLACES[rng.usize(..BIRTHPLACES.len())];
    let stem = format!(
        "{}{}{year:02}{month}{day:02}{place}",
        letters(surname, false),
        letters(name, true)
    );
    ('A'..='Z')
        .map(|c| format!("{stem}{c}"))
        .find(|code| code.parse::<PersonalFiscalCode>().is_ok())
        .unwrap_or(stem)
}

fn vat_number(rng: &mut fastrand::Rng) -> VatNumber {
    loop {
        let stem = format!("0{:09}", rng.u64(100_000_000..999_999_999));
        if let Some(v) = (0..10).find_map(|d| format!("{stem}{d}").parse::<VatNumber>().ok()) {
            return v;
        }
    }
}

/// A realistic debtor: mostly citizens with a valid fiscal code, some companies.
pub fn debtor(rng: &mut fastrand::Rng) -> Debtor {
    let street = format!(
        "{}, {}",
        STREETS[rng.usize(..STREETS.len())],
        rng.u32(1..200)
    );
    if rng.u8(..100) < 12 {
        return Debtor {
            code: DebtorCode::Legal(vat_number(rng)),
            name: COMPANIES[rng.usize(..COMPANIES.len())].into(),
            street: Some(street),
            postal_code: Some("60100".into()),
            city: Some("Castelverde".into()),
            province: Some("AN".into()),
            country: Some("IT".into()),
            email: Some("amministrazione@example.it".into()),
        };
    }
    let female = rng.bool();
    let surname = SURNAMES[rng.usize(..SURNAMES.len())];
    let name = if female {
        FEMALE[rng.usize(..FEMALE.len())]
    } else {
        MALE[rng.usize(..MALE.len())]
    };
    let code = personal_code(surname, name, female, rng);
    Debtor {
        code: code.parse().unwrap_or(DebtorCode::Anonymous),
        name: format!("{name} {surname}"),
        street: Some(street),
        postal_code: Some("60100".into()),
        city: Some("Castelverde".into()),
        province: Some("AN".into()),
        country: Some("IT".into()),
        email: rng.bool().then(|| {
            format!("{}.{}@example.it", name, surname)
                .to_lowercase()
                .replace(' ', "")
        }),
    }
}

/// One kind of debt an authority typically collects.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Tari,
    Canteen,
    Fine,
    Cosap,
    Certificate,
}

impl Kind {
    pub fn pick(rng: &mut fastrand::Rng) -> Kind {
        match rng.u8(..100) {
            0..35 => Kind::Tari,
            35..60 => Kind::Canteen,
            60..80 => Kind::Fine,
            80..92 => Kind::Cosap,
            _ => Kind::Certificate,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Tari => "TARI",
            Kind::Canteen => "MENSA",
            Kind::Fine => "SANZIONE_CDS",
            Kind::Cosap => "CANONE_UNICO",
            Kind::Certificate => "DIRITTI_SEGRETERIA",
        }
    }
}

/// Builds realistic positions for one entity (the demo's, the tests' and the benchmarks').
pub struct Builder<'a> {
    entity: &'a EntityConfig,
    /// The entity that receives the TEFA share of TARI (the province).
    province: &'a EntityConfig,
    today: Date,
    rng: fastrand::Rng,
}

impl<'a> Builder<'a> {
    /// `province` receives the TEFA share of TARI notices.
    pub fn new(entity: &'a EntityConfig, province: &'a EntityConfig, seed: u64) -> Builder<'a> {
        Builder {
            entity,
            province,
            today: today(),
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    fn transfer(
        &self,
        id: u8,
        beneficiary: &EntityConfig,
        amount: Cents,
        remittance: &str,
        category: &str,
        postal: bool,
    ) -> Transfer {
        let account = if postal {
            TransferTarget::Postal(beneficiary.postal_accounts[0].clone())
        } else {
            TransferTarget::Bank(beneficiary.bank_accounts[0].clone())
        };
        Transfer {
            id,
            beneficiary: beneficiary.fiscal_code.clone(),
            target: account,
            amount,
            remittance: remittance.into(),
            category: category.into(),
            metadata: vec![Metadata {
                key: "capitolo".into(),
                value: format!("{}", 1000 + u32::from(id) * 10),
            }],
        }
    }

    fn instalment(
        &self,
        nav: mpay_common::ids::Nav,
        amount: Cents,
        due: Date,
        description: String,
        transfers: Vec<Transfer>,
    ) -> Instalment {
        Instalment {
            iuv: nav.iuv(),
            nav,
            amount,
            due,
            description,
            transfers,
            metadata: Vec::new(),
        }
    }

    /// A TARI notice: 95% to the municipality, the 5% TEFA share to the province.
    fn tari(
        &self,
        amount: Cents,
        nav: mpay_common::ids::Nav,
        due: Date,
        text: String,
    ) -> Instalment {
        let main = Cents(amount.0 - amount.0 * 5 / 100);
        let share = Cents(amount.0 - main.0);
        let transfers = vec![
            self.transfer(1, self.entity, main, &text, "0101101IM", false),
            self.transfer(2, self.province, share, "TEFA", "0101102IM", false),
        ];
        self.instalment(nav, amount, due, text, transfers)
    }

    /// How many notice numbers a position of this kind uses.
    pub fn notices(kind: Kind) -> u64 {
        match kind {
            Kind::Tari => 4,
            _ => 1,
        }
    }

    /// Position number `n` of the given kind, taking its notice numbers from `navs`; `None` when
    /// `navs` runs out.
    pub fn position(
        &mut self,
        n: u64,
        kind: Kind,
        navs: &mut impl Iterator<Item = mpay_common::ids::Nav>,
    ) -> Option<PositionData> {
        let year = self.today.year();
        let debtor = debtor(&mut self.rng);
        let mut nav = || navs.next();
        let (description, options, expiry) = match kind {
            Kind::Tari => {
                let total = Cents(i64::from(self.rng.u32(9_000..60_000)));
                let today = self.today;
                let due = |days: i64| today.saturating_add(days.days());
                let single_due = due(self.rng.i64(-60..120));
                let single_nav = nav()?;
                let single = self.tari(
                    total,
                    single_nav,
                    single_due,
                    format!("TARI {year} unica soluzione"),
                );
                let third = Cents(total.0 / 3);
                let last = Cents(total.0 - 2 * third.0);
                let base = self.rng.i64(-90..60);
                let mut plan = Vec::with_capacity(3);
                for (i, (amount, offset)) in [(third, 0), (third, 90), (last, 180)]
                    .into_iter()
                    .enumerate()
                {
                    let text = format!("TARI {year} rata {} di 3", i + 1);
                    plan.push(self.tari(amount, nav()?, due(base + offset), text));
                }
                (
                    format!("Tassa rifiuti {year}"),
                    vec![
                        PaymentOption {
                            kind: OptionKind::Single,
                            instalments: vec![single],
                        },
                        PaymentOption {
                            kind: OptionKind::Plan,
                            instalments: plan,
                        },
                    ],
                    None,
                )
            }
            Kind::Canteen | Kind::Fine | Kind::Cosap | Kind::Certificate => {
                let (amount, text, category, postal) = match kind {
                    Kind::Canteen => (
                        self.rng.u32(2_500..12_000),
                        "Refezione scolastica",
                        "0201102SE",
                        false,
                    ),
                    Kind::Fine => (
                        self.rng.u32(4_200..17_300),
                        "Verbale codice della strada",
                        "0301108SA",
                        self.rng.bool(),
                    ),
                    Kind::Cosap => (
                        self.rng.u32(5_000..80_000),
                        "Canone unico patrimoniale",
                        "0101108TS",
                        true,
                    ),
                    _ => (
                        self.rng.u32(1_000..5_000),
                        "Diritti di segreteria",
                        "0601108DS",
                        false,
                    ),
                };
                let amount = Cents(i64::from(amount));
                let due = self.today.saturating_add(self.rng.i64(-120..90).days());
                let mut transfers =
                    vec![self.transfer(1, self.entity, amount, text, category, postal)];
                let mut total = amount;
                if matches!(kind, Kind::Certificate) {
                    // A certificate carries a 16 EUR revenue stamp besides the fee.
                    let stamp = Cents(1_600);
                    total = Cents(amount.0 + stamp.0);
                    transfers.push(Transfer {
                        id: 2,
                        beneficiary: self.entity.fiscal_code.clone(),
                        target: TransferTarget::RevenueStamp(RevenueStamp {
                            stamp_type: "01".into(),
                            document_hash: "wHpFSqCGZgNHavVyDAXO7wNF6RF7C1Ca8wQsnDo48Wo=".into(),
                            province: "AN".into(),
                        }),
                        amount: stamp,
                        remittance: "Marca da bollo".into(),
                        category: "9/0101108TS/".into(),
                        metadata: Vec::new(),
                    });
                }
                let expiry = matches!(kind, Kind::Fine).then(|| due.saturating_add(60.days()));
                let inst = self.instalment(nav()?, total, due, format!("{text} n. {n}"), transfers);
                (
                    format!("{text} {year}"),
                    vec![PaymentOption {
                        kind: OptionKind::Single,
                        instalments: vec![inst],
                    }],
                    expiry,
                )
            }
        };
        Some(PositionData {
            iupd: format!("{}-{year}-{n:07}", kind.label())
                .parse::<Iupd>()
                .ok()?,
            kind: kind.label().into(),
            debtor,
            description,
            validity: None,
            expiry,
            options,
        })
    }
}

/// Today in Rome, where the authorities' days begin and end.
pub fn today() -> Date {
    crate::clock::Clock::system().today()
}

/// What `generate` did, printed at start.
#[derive(Debug, Default)]
pub struct DemoSummary {
    pub positions: u64,
    pub reduced: u64,
    pub paid_offline: u64,
    pub cancelled: u64,
    pub restored: u64,
}

/// Generates `count` positions spread over the demo entities, with a realistic share of
/// variations. Does nothing if the store already has positions.
/// Generates `count` positions (none if the store has some), telling `progress` how many are
/// in after each batch.
pub fn generate(
    store: &Store,
    config: &Config,
    count: u64,
    seed: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<DemoSummary, StoreError> {
    let mut summary = DemoSummary::default();
    if store.stats().positions > 0 {
        return Ok(summary);
    }
    let today = today();
    let actor = Actor::System;
    let at = Timestamp::now();
    let province = &config.entities[config.entities.len() - 1];
    let per_entity = count.div_ceil(config.entities.len() as u64);
    let mut variations: Vec<(PositionId, Vec<mpay_common::ids::Nav>)> = Vec::new();
    for (e, entity) in config.entities.iter().enumerate() {
        let mut builder = Builder::new(entity, province, seed.wrapping_add(e as u64));
        let mut done = 0;
        while done < per_entity && summary.positions < count {
            let batch = (per_entity - done)
                .min(1_000)
                .min(count - summary.positions);
            let kinds: Vec<Kind> = (0..batch).map(|_| Kind::pick(&mut builder.rng)).collect();
            let needed: u64 = kinds.iter().map(|k| Builder::notices(*k)).sum();
            let range = store.reserve_sequence(&entity.fiscal_code, needed)?;
            let mut navs = range.filter_map(|seq| entity.iuv.notice(seq).ok());
            let mut events = Vec::with_capacity(kinds.len());
            for (i, kind) in kinds.into_iter().enumerate() {
                let n = done + i as u64 + 1;
                if let Some(mut data) = builder.position(n, kind, &mut navs) {
                    // The first position of every entity is the README's citizen's, so that
                    // the statement example finds debts with more than one authority.
                    if n == 1 {
                        data.debtor.code = DEMO_CITIZEN.parse().unwrap_or(DebtorCode::Anonymous);
                        data.debtor.name = "Luigi Verdi".into();
                    }
                    events.push(
                        Event::new(at, actor.clone(), Change::Loaded(data))
                            .with_reason("demo data"),
                    );
                }
            }
            let navs_of: Vec<Vec<mpay_common::ids::Nav>> = events
                .iter()
                .map(|ev| match &ev.change {
                    Change::Loaded(d) => d.instalments().map(|i| i.nav.clone()).collect(),
                    _ => Vec::new(),
                })
                .collect();
            for (result, navs) in store
                .load_many(&entity.fiscal_code, events)?
                .into_iter()
                .zip(navs_of)
            {
                match result {
                    Ok(id) => {
                        summary.positions += 1;
                        variations.push((id, navs));
                    }
                    Err(e) => tracing::warn!("demo position not loaded: {e}"),
                }
            }
            done += batch;
            progress(summary.positions);
        }
    }
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
    for (id, navs) in variations {
        let roll = rng.u8(..100);
        let first = navs[0].clone();
        let change = match roll {
            0..5 => {
                // Sgravio: a tenth off the first notice, each beneficiary keeping its share.
                let Some(position) = store.position(id)? else {
                    continue;
                };
                let Some(inst) = position.instalment(&first) else {
                    continue;
                };
                let cut = Cents(inst.terms.amount.0 / 10);
                let Some(amounts) =
                    mpay_common::ledger::split::reduction(&inst.amounts(), &inst.stamps(), cut)
                else {
                    continue;
                };
                summary.reduced += 1;
                Change::Reduced {
                    nav: first,
                    old_amount: inst.terms.amount,
                    new_amount: Cents(inst.terms.amount.0 - cut.0),
                    transfer_amounts: amounts,
                    act: format!("Determina n. {}/{}", rng.u32(1..400), today.year()),
                }
            }
            5..13 => {
                let Some(position) = store.position(id)? else {
                    continue;
                };
                let Some(inst) = position.instalment(&first) else {
                    continue;
                };
                summary.paid_offline += 1;
                Change::PaidOffline {
                    nav: first,
                    channel: [
                        OfflineChannel::Counter,
                        OfflineChannel::F24,
                        OfflineChannel::PostalSlip,
                    ][rng.usize(..3)],
                    date: today.saturating_sub(rng.i64(1..60).days()),
                    amount: inst.terms.amount,
                    reference: format!("QUIET-{:06}", rng.u32(..1_000_000)),
                    transfer_amounts: None,
                }
            }
            13..16 => {
                summary.cancelled += 1;
                Change::Cancelled
            }
            16..17 => {
                let ev = Event::new(at, actor.clone(), Change::Cancelled)
                    .with_reason("demo: annullata per errore");
                if store.append(id, ev).is_ok() {
                    summary.restored += 1;
                }
                Change::Restored
            }
            _ => continue,
        };
        let ev = Event::new(at, actor.clone(), change).with_reason("demo data");
        if let Err(e) = store.append(id, ev) {
            tracing::warn!("demo variation on position {id} not applied: {e}");
        }
    }
    Ok(summary)
}
