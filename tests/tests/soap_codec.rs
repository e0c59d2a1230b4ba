//! Every response shape mpayd's SOAP codec emits is valid against pagoPA's paForNode.xsd
//! (through libxml2), and the validator itself is shown able to fail.

use jiff::civil::date;
use mpay_common::money::Cents;
use mpay_tests::xsd::validate_body;
use mpayd::pagopa::soap::{
    self, DemandOk, Fault, FaultCode, MapEntry, Operation, PaymentData, PaymentOptionInfo, QrCode,
    Subject, TransferData, TransferTarget, VerifyOk,
};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/pagopa/examples/");

fn example(name: &str) -> String {
    let path = format!("{EXAMPLES}{name}");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Asserts `xml` is valid and returns it.
#[track_caller]
fn valid(xml: String) -> String {
    if let Err(e) = validate_body(&xml) {
        panic!("invalid against paForNode.xsd:\n{e}\n---\n{xml}");
    }
    xml
}

#[track_caller]
fn ok(xml: String) -> String {
    let xml = valid(xml);
    assert!(xml.contains("<outcome>OK</outcome>"), "not OK:\n{xml}");
    assert!(!xml.contains("<fault>"), "OK with a fault:\n{xml}");
    xml
}

#[track_caller]
fn ko(xml: String, code: FaultCode) -> String {
    let xml = valid(xml);
    assert!(
        xml.contains("<outcome>KO</outcome><fault>"),
        "not KO:\n{xml}"
    );
    assert!(
        xml.contains(&format!("<faultCode>{}</faultCode>", code.code())),
        "not {code}:\n{xml}"
    );
    xml
}

/// Texts that need escaping, accented letters, and more than any XSD limit allows.
const NASTY: &str = "Tassa <rifiuti> & \"acqua\" dell'anno — città di Forlì, Cantù, Égalité ";

fn long(n: usize) -> String {
    NASTY.chars().cycle().take(n).collect()
}

fn subject_full() -> Subject {
    Subject {
        kind: 'F',
        id: "RSSMRA80A01H501U".into(),
        full_name: long(300),
        street: Some(long(300)),
        civic_number: Some("12/B <bis> & ter, scala C".into()),
        postal_code: Some("47121 FC - Forlì e dintorni".into()),
        city: Some(long(100)),
        province: Some(long(100)),
        country: Some("it".into()),
        email: Some("mario.rossi+pagopa@comune.forli-cesena.it".into()),
    }
}

fn subject_min() -> Subject {
    Subject {
        kind: 'G',
        id: "ANONIMO".into(),
        full_name: "ACME S.p.A.".into(),
        street: None,
        civic_number: None,
        postal_code: None,
        city: None,
        province: None,
        country: Some("Italia".into()),
        email: Some("o'brien@example.com".into()),
    }
}

fn meta(pairs: &[(&str, &str)]) -> Vec<MapEntry> {
    pairs
        .iter()
        .map(|(k, v)| MapEntry {
            key: (*k).into(),
            value: (*v).into(),
        })
        .collect()
}

fn iban_transfer(id: u8, cents: i64, iban: &str) -> TransferData {
    TransferData {
        id,
        amount: Cents(cents),
        fiscal_code_pa: "77777777777".into(),
        company_name: None,
        target: TransferTarget::Iban(iban.into()),
        remittance: format!("/RFB/47164923022221054/{}/TXT/quota {id}", Cents(cents)),
        category: "9/0101100IM/".into(),
        metadata: Vec::new(),
    }
}

fn stamp_transfer(id: u8) -> TransferData {
    TransferData {
        id,
        amount: Cents(1600),
        fiscal_code_pa: "77777777777".into(),
        company_name: Some(long(200)),
        target: TransferTarget::RevenueStamp {
            // base64 of a SHA-256 digest: 44 characters.
            document_hash: "wHpFSLCGZjIvNSXxqtGbxg7275t446DRTk5ZrsdUQ6E=".into(),
            stamp_type: "01".into(),
            province: "RM".into(),
        },
        remittance: "Marca da bollo digitale".into(),
        category: "9/0301116TS/9/24B0060000000017".into(),
        metadata: Vec::new(),
    }
}

/// Postal transfer 1 with the bank IBAN as IBANAPPOGGIO, plus a second EC's transfer.
fn payment_postal() -> PaymentData {
    let mut t1 = iban_transfer(1, 10_050, "IT23A0760101600000012345678");
    t1.metadata = meta(&[
        ("IBANAPPOGGIO", "IT60X0542811101000000123456"),
        ("capitolo", "1234/art.5 <entrate> & \"tributi\""),
    ]);
    t1.company_name = Some("Comune di Forlì".into());
    let mut t2 = iban_transfer(2, 1_999, "IT60X0542811101000000654321");
    t2.fiscal_code_pa = "77777777778".into();
    t2.remittance = long(500);
    t2.category = long(500);
    PaymentData {
        creditor_reference_id: "47164923022221054".into(),
        amount: Cents(12_049),
        due_date: date(2025, 12, 31),
        description: long(1000),
        company_name: long(1000),
        office_name: Some(long(1000)),
        debtor: subject_full(),
        transfers: vec![t1, t2],
        metadata: meta(&[("posizione", "p-42"), (&long(200), &long(200))]),
    }
}

fn payment_min() -> PaymentData {
    PaymentData {
        creditor_reference_id: "47164923022221054".into(),
        amount: Cents(1),
        due_date: date(2025, 1, 1),
        description: "x".into(),
        company_name: "y".into(),
        office_name: None,
        debtor: subject_min(),
        transfers: vec![iban_transfer(1, 1, "IT60X0542811101000000123456")],
        metadata: Vec::new(),
    }
}

fn payment_five() -> PaymentData {
    let transfers: Vec<TransferData> = (1..=5)
        .map(|id| iban_transfer(id, 100, "IT60X0542811101000000123456"))
        .collect();
    PaymentData {
        amount: Cents(500),
        transfers,
        metadata: (0..15)
            .map(|i| MapEntry {
                key: format!("k{i}"),
                value: format!("v{i}"),
            })
            .collect(),
        ..payment_min()
    }
}

fn verify_full() -> VerifyOk {
    VerifyOk {
        payment: PaymentOptionInfo {
            amount: Cents::MAX_AMOUNT,
            due_date: Some(date(2025, 2, 28)),
            detail_description: Some(long(500)),
            all_ccp: true,
        },
        description: long(500),
        fiscal_code_pa: "77777777777".into(),
        company_name: long(500),
        office_name: Some(NASTY.into()),
    }
}

fn verify_min() -> VerifyOk {
    VerifyOk {
        payment: PaymentOptionInfo {
            amount: Cents(1),
            due_date: None,
            detail_description: None,
            all_ccp: false,
        },
        description: "d".into(),
        fiscal_code_pa: "77777777777".into(),
        company_name: "c".into(),
        office_name: None,
    }
}

const ALL_CODES: [FaultCode; 13] = [
    FaultCode::SintassiExtraXsd,
    FaultCode::SintassiXsd,
    FaultCode::IdDominioErrato,
    FaultCode::IdIntermediarioErrato,
    FaultCode::StazioneIntErrata,
    FaultCode::PagamentoSconosciuto,
    FaultCode::PagamentoDuplicato,
    FaultCode::PagamentoScaduto,
    FaultCode::PagamentoAnnullato,
    FaultCode::PagamentoInCorso,
    FaultCode::Semantica,
    FaultCode::ReceiptDuplicata,
    FaultCode::SystemError,
];

fn fault(code: FaultCode) -> Fault {
    Fault::new(code, "77777777777").with_description(format!("{} {}", long(2000), '\u{7}'))
}

#[test]
fn verify_responses() {
    let xml = ok(soap::verify_response(&Ok(verify_full())));
    assert!(xml.contains(
        "<amount>999999999.99</amount><options>EQ</options><dueDate>2025-02-28</dueDate>"
    ));
    assert!(xml.contains("<allCCP>true</allCCP>"));
    let xml = ok(soap::verify_response(&Ok(verify_min())));
    assert!(xml.contains("<amount>0.01</amount><options>EQ</options><allCCP>false</allCCP>"));
    assert!(!xml.contains("officeName"));
    for code in ALL_CODES {
        ko(soap::verify_response(&Err(fault(code))), code);
    }
    // A zero amount cannot be written: system error, still valid.
    let mut zero = verify_min();
    zero.payment.amount = Cents::ZERO;
    ko(soap::verify_response(&Ok(zero)), FaultCode::SystemError);
}

#[test]
fn get_payment_v1_responses() {
    let xml = ok(soap::get_payment_response(false, &Ok(payment_postal())));
    assert!(xml.contains("<pafn:paGetPaymentRes "));
    assert!(xml.contains(
        "<mapEntry><key>IBANAPPOGGIO</key><value>IT60X0542811101000000123456</value></mapEntry>"
    ));
    assert!(xml.contains("<IBAN>IT23A0760101600000012345678</IBAN>"));
    assert!(
        !xml.contains("<companyName>Comune di Forlì</companyName>"),
        "V1 transfers have no companyName"
    );
    ok(soap::get_payment_response(false, &Ok(payment_min())));
    ok(soap::get_payment_response(false, &Ok(payment_five())));
    for code in ALL_CODES {
        ko(soap::get_payment_response(false, &Err(fault(code))), code);
    }
}

#[test]
fn get_payment_v2_responses() {
    let mut with_stamp = payment_postal();
    with_stamp.transfers.push(stamp_transfer(3));
    with_stamp.amount = Cents(12_049 + 1600);
    let xml = ok(soap::get_payment_response(true, &Ok(with_stamp.clone())));
    assert!(xml.contains("<pafn:paGetPaymentV2Response "));
    assert!(xml.contains("<companyName>Comune di Forlì</companyName><IBAN>"));
    assert!(xml.contains(
        "<richiestaMarcaDaBollo><hashDocumento>wHpFSLCGZjIvNSXxqtGbxg7275t446DRTk5ZrsdUQ6E=\
         </hashDocumento><tipoBollo>01</tipoBollo><provinciaResidenza>RM</provinciaResidenza>\
         </richiestaMarcaDaBollo>"
    ));
    ok(soap::get_payment_response(true, &Ok(payment_min())));
    ok(soap::get_payment_response(true, &Ok(payment_five())));
    for code in ALL_CODES {
        ko(soap::get_payment_response(true, &Err(fault(code))), code);
    }
    // V1 cannot carry the stamp: a valid system-error KO, not an invalid OK.
    let xml = ko(
        soap::get_payment_response(false, &Ok(with_stamp)),
        FaultCode::SystemError,
    );
    assert!(xml.contains("<pafn:paGetPaymentRes "));
    assert!(xml.contains("revenue stamp"), "{xml}");
    // Other unwritable data: too many transfers, bad fiscal code, IBAN too long.
    let mut six = payment_five();
    six.transfers
        .push(iban_transfer(5, 100, "IT60X0542811101000000123456"));
    six.amount = Cents(600);
    ko(
        soap::get_payment_response(true, &Ok(six)),
        FaultCode::SystemError,
    );
    let mut bad_cf = payment_min();
    bad_cf.transfers[0].fiscal_code_pa = "7777777777".into();
    ko(
        soap::get_payment_response(true, &Ok(bad_cf)),
        FaultCode::SystemError,
    );
    let mut bad_iban = payment_min();
    bad_iban.transfers[0].target = TransferTarget::Iban("X".repeat(36));
    ko(
        soap::get_payment_response(false, &Ok(bad_iban)),
        FaultCode::SystemError,
    );
}

#[test]
fn send_rt_responses() {
    for v2 in [false, true] {
        let xml = ok(soap::send_rt_response(v2, &Ok(())));
        let element = if v2 {
            "paSendRTV2Response"
        } else {
            "paSendRTRes"
        };
        assert!(xml.contains(&format!("<pafn:{element} ")), "{xml}");
        for code in ALL_CODES {
            ko(soap::send_rt_response(v2, &Err(fault(code))), code);
        }
    }
}

#[test]
fn demand_responses() {
    let qr = QrCode {
        fiscal_code: "77777777777".into(),
        notice_number: "347164923022221054".into(),
    };
    let xml = ok(soap::demand_response(&Ok(DemandOk {
        qr: qr.clone(),
        verify: verify_full(),
    })));
    assert!(xml.contains(
        "<outcome>OK</outcome><qrCode><fiscalCode>77777777777</fiscalCode><noticeNumber>\
         347164923022221054</noticeNumber></qrCode><paymentList>"
    ));
    ok(soap::demand_response(&Ok(DemandOk {
        qr,
        verify: verify_min(),
    })));
    for code in ALL_CODES {
        ko(soap::demand_response(&Err(fault(code))), code);
    }
    let bad = DemandOk {
        qr: QrCode {
            fiscal_code: "77777777777".into(),
            notice_number: "12".into(),
        },
        verify: verify_min(),
    };
    ko(soap::demand_response(&Ok(bad)), FaultCode::SystemError);
}

#[test]
fn fault_responses_for_every_operation() {
    for op in Operation::ALL {
        for code in ALL_CODES {
            let xml = ko(soap::fault_response(op, &fault(code)), code);
            assert!(xml.contains(&format!("<pafn:{} ", op.response_element())));
        }
        // No description, empty id: still valid.
        ko(
            soap::fault_response(op, &Fault::new(FaultCode::SystemError, "")),
            FaultCode::SystemError,
        );
    }
}

#[test]
fn parse_errors_answer_validly() {
    // Example 05 without its receipt id: a receipt the station cannot key.
    let xml = example("05_paSendRTReq.xml").replace(
        "<receiptId>c110729d258c4ab1b765fe902aae41d6</receiptId>",
        "",
    );
    let e = soap::parse_request(xml.as_bytes(), Some("paSendRT")).expect_err("no receiptId");
    let op = e.operation.expect("operation known");
    ko(
        soap::fault_response(op, &e.fault("15376371009")),
        FaultCode::SintassiXsd,
    );
    let e = soap::parse_request(b"<not-soap/>", None).expect_err("not soap");
    ko(
        soap::fault_response(
            e.operation.unwrap_or(Operation::VerifyPaymentNotice),
            &e.fault("15376371009"),
        ),
        FaultCode::SintassiExtraXsd,
    );
}

#[test]
fn example_responses() {
    valid(example("02_paVerifyPaymentNoticeRes.xml"));
    valid(example("06_paSendRTRes.xml"));
    // Example 04 predates the mandatory transferCategory (examples/SOURCE.md): invalid as
    // published, valid once each transfer has one.
    let xml = example("04_paGetPaymentRes.xml");
    let e = validate_body(&xml).expect_err("example 04 lacks transferCategory");
    assert!(e.contains("transferCategory"), "{e}");
    assert_eq!(e.lines().count(), 2, "one error per transfer: {e}");
    let fixed = xml.replace(
        "</remittanceInformation>",
        "</remittanceInformation><transferCategory>0101100IM</transferCategory>",
    );
    valid(fixed);
}

#[test]
fn the_validator_can_fail() {
    let good = soap::send_rt_response(false, &Ok(()));
    valid(good.clone());
    let e = validate_body(&good.replace("<outcome>OK</outcome>", "")).expect_err("no outcome");
    assert!(
        e.contains("Missing child element") && e.contains("outcome"),
        "{e}"
    );

    let verify = soap::verify_response(&Ok(verify_min()));
    let e = validate_body(&verify.replace("<amount>0.01</amount>", "<amount>1.5</amount>"))
        .expect_err("amount 1.5");
    assert!(e.contains("amount") && e.contains("1.5"), "{e}");

    // Children must be unqualified; the body element must be in the paForNode namespace.
    let e = validate_body(
        &good
            .replace("<outcome>", "<pafn:outcome>")
            .replace("</outcome>", "</pafn:outcome>"),
    )
    .expect_err("qualified child");
    assert!(e.contains("outcome"), "{e}");
    let e = validate_body(&good.replace(
        "http://pagopa-api.pagopa.gov.it/pa/paForNode.xsd",
        "http://pagopa-api.pagopa.gov.it/node/nodeForPsp.xsd",
    ))
    .expect_err("wrong namespace");
    assert!(e.contains("not expected"), "{e}");
    // Out of order, over-long, and a KO without its faultString.
    let get = soap::get_payment_response(false, &Ok(payment_min()));
    assert!(
        validate_body(&get.replace("<dueDate>2025-01-01</dueDate>", "").replace(
            "<description>x</description>",
            "<description>x</description><dueDate>2025-01-01</dueDate>"
        ))
        .is_err()
    );
    assert!(
        validate_body(&get.replace(
            "<description>x</description>",
            &format!("<description>{}</description>", "x".repeat(141))
        ))
        .is_err()
    );
    let ko = soap::fault_response(Operation::SendRt, &Fault::new(FaultCode::Semantica, "x"));
    assert!(validate_body(&ko.replace("<faultString>Errore semantico</faultString>", "")).is_err());
    assert!(validate_body("<soapenv:Envelope").is_err());
}
