//! The node's side of the conversation: the requests pagoPA's node sends a station, and a
//! tolerant reader for the station's answers. Used by the simulator and by the tests.

use quick_xml::escape::escape;

/// Who the node says is calling: the same three ids head every request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub id_pa: String,
    pub broker: String,
    pub station: String,
}

fn envelope(element: &str, inner: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         xmlns:paf=\"http://pagopa-api.pagopa.gov.it/pa/paForNode.xsd\">\
         <soapenv:Header/><soapenv:Body><paf:{element}>{inner}</paf:{element}>\
         </soapenv:Body></soapenv:Envelope>"
    )
}

fn head(c: &Caller) -> String {
    format!(
        "<idPA>{}</idPA><idBrokerPA>{}</idBrokerPA><idStation>{}</idStation>",
        escape(&c.id_pa),
        escape(&c.broker),
        escape(&c.station)
    )
}

fn qr(entity: &str, nav: &str) -> String {
    format!(
        "<qrCode><fiscalCode>{}</fiscalCode><noticeNumber>{}</noticeNumber></qrCode>",
        escape(entity),
        escape(nav)
    )
}

pub fn verify(c: &Caller, entity: &str, nav: &str) -> String {
    envelope(
        "paVerifyPaymentNoticeReq",
        &format!("{}{}", head(c), qr(entity, nav)),
    )
}

pub fn get_payment(c: &Caller, v2: bool, entity: &str, nav: &str, amount: Option<&str>) -> String {
    let element = if v2 {
        "paGetPaymentV2Request"
    } else {
        "paGetPaymentReq"
    };
    let amount = amount
        .map(|a| format!("<amount>{}</amount>", escape(a)))
        .unwrap_or_default();
    envelope(element, &format!("{}{}{amount}", head(c), qr(entity, nav)))
}

/// One transfer of a receipt, as the station described it in its getPayment answer.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceiptTransfer {
    pub id: String,
    pub amount: String,
    pub fiscal_code_pa: String,
    pub iban: Option<String>,
    pub remittance: String,
    pub category: String,
}

/// What the node puts in a receipt.
#[derive(Clone, Debug)]
pub struct ReceiptSpec {
    pub receipt_id: String,
    pub nav: String,
    pub notice_entity: String,
    pub iuv: String,
    pub amount: String,
    pub transfers: Vec<ReceiptTransfer>,
    pub psp: String,
    pub stand_in: bool,
}

impl ReceiptSpec {
    /// A receipt `id` paying `amount` for notice `nav` (IUV `iuv`) of `entity`, in one transfer
    /// to the entity's account `iban`, through a test PSP.
    pub fn single(entity: &str, nav: &str, iuv: &str, amount: &str, id: &str, iban: &str) -> Self {
        ReceiptSpec {
            receipt_id: id.into(),
            nav: nav.into(),
            notice_entity: entity.into(),
            iuv: iuv.into(),
            amount: amount.into(),
            transfers: vec![ReceiptTransfer {
                id: "1".into(),
                amount: amount.into(),
                fiscal_code_pa: entity.into(),
                iban: Some(iban.into()),
                remittance: "Pagamento".into(),
                category: "9/0101108TS/".into(),
            }],
            psp: "BCITITMM".into(),
            stand_in: false,
        }
    }
}

pub fn send_rt(c: &Caller, v2: bool, r: &ReceiptSpec) -> String {
    let element = if v2 {
        "paSendRTV2Request"
    } else {
        "paSendRTReq"
    };
    let mut transfers = String::new();
    for t in &r.transfers {
        transfers.push_str(&format!(
            "<transfer><idTransfer>{}</idTransfer><transferAmount>{}</transferAmount>\
             <fiscalCodePA>{}</fiscalCodePA>",
            escape(&t.id),
            escape(&t.amount),
            escape(&t.fiscal_code_pa)
        ));
        match &t.iban {
            Some(iban) => transfers.push_str(&format!("<IBAN>{}</IBAN>", escape(iban))),
            // A revenue stamp: the PSP attaches the stamp it sold (base64 of its XML).
            None if v2 => transfers.push_str(
                "<MBDAttachment>PG1hcmNhRGFCb2xsbz48L21hcmNhRGFCb2xsbz4=</MBDAttachment>",
            ),
            None => transfers.push_str("<IBAN>IT60X0542811101000000123456</IBAN>"),
        }
        let category = if t.category.is_empty() {
            "9/0101108TS/"
        } else {
            &t.category
        };
        transfers.push_str(&format!(
            "<remittanceInformation>{}</remittanceInformation>\
             <transferCategory>{}</transferCategory></transfer>",
            escape(&t.remittance),
            escape(category)
        ));
    }
    let stand_in = if r.stand_in {
        "<standIn>true</standIn>"
    } else {
        ""
    };
    let receipt = format!(
        "<receipt><receiptId>{}</receiptId><noticeNumber>{}</noticeNumber>\
         <fiscalCode>{}</fiscalCode><outcome>OK</outcome>\
         <creditorReferenceId>{}</creditorReferenceId><paymentAmount>{}</paymentAmount>\
         <description>Pagamento avviso</description><companyName>Ente</companyName>\
         <debtor><uniqueIdentifier><entityUniqueIdentifierType>F</entityUniqueIdentifierType>\
         <entityUniqueIdentifierValue>ANONIMO</entityUniqueIdentifierValue></uniqueIdentifier>\
         <fullName>Pagatore</fullName></debtor>\
         <transferList>{transfers}</transferList>\
         <idPSP>{}</idPSP><PSPCompanyName>PSP simulato</PSPCompanyName>\
         <idChannel>{}_01</idChannel><channelDescription>app</channelDescription>\
         <paymentMethod>creditCard</paymentMethod><fee>1.00</fee>\
         <paymentDateTime>{}</paymentDateTime>{stand_in}</receipt>",
        escape(&r.receipt_id),
        escape(&r.nav),
        escape(&r.notice_entity),
        escape(&r.iuv),
        escape(&r.amount),
        escape(&r.psp),
        escape(&r.psp),
        jiff::Timestamp::now()
            .in_tz("Europe/Rome")
            .map(|z| z.datetime())
            .unwrap_or_default()
            .strftime("%Y-%m-%dT%H:%M:%S"),
    );
    envelope(element, &format!("{}{receipt}", head(c)))
}

pub fn demand(c: &Caller, service_id: &str, subject_id: &str, data_base64: &str) -> String {
    envelope(
        "paDemandPaymentNoticeRequest",
        &format!(
            "{}<idServizio>{}</idServizio><idSoggettoServizio>{}</idSoggettoServizio>\
             <datiSpecificiServizioRequest>{}</datiSpecificiServizioRequest>",
            head(c),
            escape(service_id),
            escape(subject_id),
            escape(data_base64)
        ),
    )
}

/// The parts of a station's answer the node acts on, read by local name (prefixes vary).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Answer {
    pub outcome: String,
    pub fault_code: Option<String>,
    pub fault_description: Option<String>,
    pub amount: Option<String>,
    pub iuv: Option<String>,
    pub notice_number: Option<String>,
    pub transfers: Vec<ReceiptTransfer>,
}

/// Reads an answer tolerantly; `None` if it is not XML with an `outcome`.
pub fn read_answer(xml: &str) -> Option<Answer> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut answer = Answer::default();
    let mut transfer: Option<ReceiptTransfer> = None;
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) => {
                let name = e.local_name().as_ref().to_string();
                if name == "transfer" {
                    transfer = Some(ReceiptTransfer {
                        id: String::new(),
                        amount: String::new(),
                        fiscal_code_pa: String::new(),
                        iban: None,
                        remittance: String::new(),
                        category: String::new(),
                    });
                }
                path.push(name);
                text.clear();
            }
            Event::Text(t) => text.push_str(&t.xml10_content()),
            Event::GeneralRef(r) => {
                let name = r.as_ref().to_string();
                text.push(match name.as_str() {
                    "lt" => '<',
                    "gt" => '>',
                    "amp" => '&',
                    "apos" => '\'',
                    "quot" => '"',
                    _ => '?',
                });
            }
            Event::End(_) => {
                let name = path.pop()?;
                let value = std::mem::take(&mut text);
                if name == "transfer" {
                    answer.transfers.extend(transfer.take());
                    continue;
                }
                if let Some(t) = transfer.as_mut() {
                    match name.as_str() {
                        "idTransfer" => t.id = value,
                        "transferAmount" => t.amount = value,
                        "fiscalCodePA" => t.fiscal_code_pa = value,
                        "IBAN" => t.iban = Some(value),
                        "remittanceInformation" => t.remittance = value,
                        "transferCategory" => t.category = value,
                        _ => {}
                    }
                    continue;
                }
                match name.as_str() {
                    "outcome" => answer.outcome = value,
                    "faultCode" => answer.fault_code = Some(value),
                    "description" if path.iter().any(|p| p == "fault") => {
                        answer.fault_description = Some(value)
                    }
                    "paymentAmount" | "amount" => answer.amount = Some(value),
                    "creditorReferenceId" => answer.iuv = Some(value),
                    "noticeNumber" => answer.notice_number = Some(value),
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    (!answer.outcome.is_empty()).then_some(answer)
}
