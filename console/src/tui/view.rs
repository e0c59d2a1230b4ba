//! Drawing: one pure function per screen region, from `App` to a frame. Colours only mark
//! outcomes and the selection, in the terminal's own palette (readable on light and dark
//! backgrounds); with `NO_COLOR` set there are none, and the selection is reverse video.

use mpay_common::console::{Role, RunRecord};
use mpay_common::money::Cents;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Row, Sparkline, Table, Tabs, Wrap};

use super::app::{App, Connection, Focus, Screen};
use crate::format;

/// Colours on or off.
#[derive(Clone, Copy, Debug)]
pub struct Theme {
    pub color: bool,
}

impl Theme {
    pub fn from_env() -> Theme {
        Theme {
            color: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }

    fn fg(self, c: Color) -> Style {
        if self.color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    }

    fn good(self) -> Style {
        self.fg(Color::Green)
    }

    fn bad(self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }

    fn title(self) -> Style {
        Style::default().add_modifier(Modifier::BOLD)
    }

    fn selected(self) -> Style {
        Style::default().add_modifier(Modifier::REVERSED)
    }

    /// Red for an anomaly, green for what is in order.
    fn judged(self, anomaly: bool) -> Style {
        if anomaly { self.bad() } else { self.good() }
    }

    fn dim(self) -> Style {
        if self.color {
            Style::default().add_modifier(Modifier::DIM)
        } else {
            Style::default()
        }
    }
}

pub fn draw(frame: &mut Frame, app: &App, theme: Theme) {
    let [top, body, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    header(frame, top, app, theme);
    match app.screen {
        Screen::Dashboard => dashboard(frame, body, app, theme),
        Screen::Traffic if app.exchange.is_some() => exchange(frame, body, app, theme),
        Screen::Traffic => traffic(frame, body, app, theme),
        Screen::Positions if app.position.is_some() => position(frame, body, app, theme),
        Screen::Positions => positions(frame, body, app, theme),
        Screen::Statement => statement(frame, body, app, theme),
        Screen::Jobs => jobs(frame, body, app, theme),
        Screen::Audit => audit(frame, body, app, theme),
        Screen::Worklist => worklist(frame, body, app, theme),
        Screen::Flows if app.records.open.is_some() => flow(frame, body, app, theme),
        Screen::Flows => flows(frame, body, app, theme),
        Screen::Treasury => treasury(frame, body, app, theme),
    }
    footer(frame, bottom, app, theme);
    if app.form.is_some() {
        form(frame, body, app, theme);
    }
    if app.screen == Screen::Worklist && app.worklist.form.is_some() {
        fix_form(frame, body, app, theme);
    }
    if app.help {
        help(frame, body, app);
    }
}

fn header(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let (text, style) = match &app.connection {
        Connection::Connecting => ("connecting…".to_string(), theme.dim()),
        // On a narrow terminal the tabs need the room the role would take.
        Connection::Connected(h) if area.width < 100 => (format!("● {}", h.operator), theme.good()),
        Connection::Connected(h) => (format!("● {} ({})", h.operator, h.role), theme.good()),
        Connection::Lost(_) => ("○ reconnecting…".to_string(), theme.bad()),
    };
    let [tabs, state] = Layout::horizontal([
        Constraint::Min(10),
        Constraint::Length(text.chars().count() as u16 + 1),
    ])
    .areas(area);
    let narrow = tabs.width < 100;
    let titles: Vec<String> = Screen::ALL
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{} {}", i + 1, if narrow { s.short() } else { s.title() }))
        .collect();
    let selected = Screen::ALL.iter().position(|s| *s == app.screen);
    frame.render_widget(
        Tabs::new(titles)
            .select(selected)
            .highlight_style(theme.selected())
            .divider("|")
            .padding("", ""),
        tabs,
    );
    frame.render_widget(
        Paragraph::new(Span::styled(text, style)).alignment(ratatui::layout::Alignment::Right),
        state,
    );
}

fn footer(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let text = if let Some(m) = &app.message {
        m.clone()
    } else if let Connection::Lost(why) = &app.connection {
        why.clone()
    } else {
        keys_line(app).to_string()
    };
    let style = if app
        .message
        .as_deref()
        .is_some_and(|m| !m.starts_with("done"))
    {
        theme.bad()
    } else {
        theme.dim()
    };
    frame.render_widget(Paragraph::new(Span::styled(text, style)), area);
}

fn keys_line(app: &App) -> &'static str {
    if app.form.is_some() || (app.screen == Screen::Worklist && app.worklist.form.is_some()) {
        return "Tab next field · Enter review · y apply · Esc cancel";
    }
    if app.focus == Focus::Input {
        return "type, then Enter · Esc leaves the field";
    }
    match app.screen {
        Screen::Positions if app.position.is_some() => {
            "↑↓ notice · r reduce · o paid offline · p plan · d debtor · c cancel · R restore"
        }
        Screen::Positions => "/ search · ↑↓ · Enter open · 1-9 screens · ? keys · q back",
        Screen::Traffic if app.exchange.is_some() => "↑↓ PgUp PgDn scroll · q back",
        Screen::Traffic => "/ filter · ↑↓ · Enter messages · ? keys · q back",
        Screen::Statement => "/ fiscal code · ? keys · q back",
        Screen::Jobs => "g refresh · ? keys · q back",
        Screen::Audit => "/ operator · g refresh · ? keys · q back",
        Screen::Worklist if app.is_operator() => {
            "/ filter · e entity · ↑↓ · l link · f refund · a accept · t flow · v recovery · x dismiss · u undo"
        }
        Screen::Worklist => "/ filter · e entity · ↑↓ · g refresh · ? keys · q back",
        Screen::Flows if app.records.open.is_some() => "↑↓ PgUp PgDn rows · q back",
        Screen::Flows => "e entity · ↑↓ · Enter rows · g refresh · ? keys · q back",
        Screen::Treasury => "e entity · ↑↓ · g refresh · ? keys · q back",
        Screen::Dashboard => "1-9 or Tab screens · / search · ? keys · q quit",
    }
}

/// The latest daily run: its day, when and why it ran, the anomalies it counted, trouble.
fn run_line(run: Option<&RunRecord>, theme: Theme) -> Line<'static> {
    let Some(r) = run else {
        return Line::styled("daily run: none yet", theme.dim());
    };
    let settled = ["reconciled", "waiting-for-report", "waiting-for-credit"];
    let anomalies: u64 = r
        .classes
        .iter()
        .filter(|(c, _)| !settled.contains(&c.as_str()))
        .map(|(_, n)| n)
        .sum();
    let mut spans = vec![
        Span::raw(format!(
            "run {} · {} {} · ",
            r.day,
            r.trigger,
            format::clock(r.started)
        )),
        Span::styled(
            format!("{anomalies} anomalies"),
            theme.judged(anomalies > 0),
        ),
        Span::raw(format!(" / {} rows · {} new flows", r.rows, r.flows_new)),
    ];
    if let Some(e) = &r.error {
        spans.push(Span::styled(format!(" · FAILED: {e}"), theme.bad()));
    } else if !r.node_errors.is_empty() {
        spans.push(Span::styled(
            format!(" · node: {} error(s)", r.node_errors.len()),
            theme.bad(),
        ));
    }
    Line::from(spans)
}

fn block(title: &str) -> Block<'_> {
    Block::default().borders(Borders::ALL).title(title)
}

fn dashboard(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let Some(s) = &app.status else {
        frame.render_widget(
            Paragraph::new("waiting for the daemon…").block(block("Dashboard")),
            area,
        );
        return;
    };
    let [head, spark, table] = Layout::vertical([
        Constraint::Length(8),
        Constraint::Length(5),
        Constraint::Min(3),
    ])
    .areas(area);
    let last = s
        .traffic
        .iter()
        .rev()
        .skip(1)
        .find(|t| !t.counts.is_empty());
    let minute: u64 = s
        .traffic
        .iter()
        .rev()
        .take(60)
        .flat_map(|t| t.counts.iter().map(|(_, _, n)| n))
        .sum();
    let faults: u64 = s.traffic.iter().rev().take(60).map(|t| t.faults).sum();
    let health = match &s.problem {
        None => Span::styled("healthy", theme.good()),
        Some(p) => Span::styled(format!("UNHEALTHY: {p}"), theme.bad()),
    };
    let lines = vec![
        Line::from(vec![
            Span::styled(format!("mpayd {}  ", s.version), theme.title()),
            health,
            Span::raw(match s.started_at {
                Some(t) => format!("  up since {}", format::when(t)),
                None => String::new(),
            }),
        ]),
        Line::from(format!(
            "store: {} positions · disk {} · memory {}",
            s.positions,
            format::bytes(s.disk_bytes),
            format::bytes(s.rss_bytes)
        )),
        Line::from(format!(
            "durable commits {} · fsyncs {} ({:.1} commits per fsync)",
            s.commits,
            s.flushes,
            s.commits as f64 / s.flushes.max(1) as f64
        )),
        Line::from(format!(
            "last minute: {minute} exchanges · {faults} faults · last second p50 {} µs p99 {} µs",
            last.map_or(0, |t| t.p50_us),
            last.map_or(0, |t| t.p99_us)
        )),
        Line::from(vec![
            Span::raw(format!(
                "receipts since start {} · ",
                s.receipts_since_start
            )),
            Span::styled(
                format!("double payments {}", s.double_payments_since_start),
                if s.double_payments_since_start > 0 {
                    theme.bad()
                } else {
                    Style::default()
                },
            ),
            Span::raw(format!(" · bulk jobs running {}", s.jobs_running)),
        ]),
        run_line(s.last_run.as_ref(), theme),
    ];
    frame.render_widget(Paragraph::new(lines).block(block("Dashboard")), head);
    let per_second: Vec<u64> = s
        .traffic
        .iter()
        .map(|t| t.counts.iter().map(|(_, _, n)| n).sum())
        .collect();
    let width = spark.width.saturating_sub(2) as usize;
    let shown = &per_second[per_second.len().saturating_sub(width)..];
    let peak = shown.iter().copied().max().unwrap_or(0);
    frame.render_widget(
        Sparkline::default()
            .block(block(&format!("Exchanges per second (peak {peak})")))
            .data(shown)
            .style(theme.fg(Color::Cyan)),
        spark,
    );
    // Per operation and outcome over the last minute.
    let mut by_op: Vec<(String, String, u64)> = Vec::new();
    for t in s.traffic.iter().rev().take(60) {
        for (op, out, n) in &t.counts {
            match by_op.iter_mut().find(|(o, u, _)| o == op && u == out) {
                Some((_, _, m)) => *m += n,
                None => by_op.push((op.clone(), out.clone(), *n)),
            }
        }
    }
    by_op.sort();
    let rows = by_op.into_iter().map(|(op, out, n)| {
        let style = if out == "OK" {
            theme.good()
        } else {
            theme.bad()
        };
        Row::new(vec![
            Span::raw(op),
            Span::styled(out, style),
            Span::raw(format!("{n:>8}")),
            Span::raw(format!("{:>8.1}", n as f64 / 60.0)),
        ])
    });
    frame.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(26),
                Constraint::Length(8),
                Constraint::Length(10),
                Constraint::Length(10),
            ],
        )
        .header(Row::new(vec!["operation", "outcome", "last 60s", "per s"]).style(theme.title()))
        .block(block("Station")),
        table,
    );
}

fn input_line<'a>(label: &'a str, value: &'a str, focused: bool, theme: Theme) -> Paragraph<'a> {
    let cursor = if focused { "█" } else { "" };
    let style = if focused {
        theme.title()
    } else {
        Style::default()
    };
    Paragraph::new(Line::from(vec![
        Span::styled(label, style),
        Span::raw(value),
        Span::raw(cursor),
    ]))
}

fn traffic(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let [filter, list] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(area);
    frame.render_widget(
        input_line(
            "filter (entity= op= outcome= nav=): ",
            &app.traffic_filter,
            app.focus == Focus::Input,
            theme,
        ),
        filter,
    );
    let visible = app.visible_traffic();
    let wide = list.width >= 100;
    let height = list.height.saturating_sub(3) as usize;
    let first = app
        .traffic_selected
        .saturating_sub(height.saturating_sub(1));
    let rows = visible
        .iter()
        .enumerate()
        .skip(first)
        .take(height.max(1))
        .map(|(i, e)| {
            let outcome = if e.outcome == "OK" {
                theme.good()
            } else {
                theme.bad()
            };
            let mut cells = vec![
                Span::raw(format::clock(e.at)),
                Span::raw(e.operation.clone()),
                Span::raw(e.nav.clone().unwrap_or_default()),
                Span::styled(e.outcome.clone(), outcome),
                Span::raw(e.fault_code.clone().unwrap_or_default()),
                Span::raw(format!("{:>7}", e.latency_us)),
            ];
            if wide {
                cells.insert(2, Span::raw(e.entity.clone().unwrap_or_default()));
            }
            let row = Row::new(cells);
            if i == app.traffic_selected {
                row.style(theme.selected())
            } else {
                row
            }
        });
    let mut widths = vec![
        Constraint::Length(8),
        Constraint::Length(22),
        Constraint::Length(18),
        Constraint::Length(3),
        Constraint::Min(10),
        Constraint::Length(7),
    ];
    let mut header = vec!["time", "operation", "nav", "out", "fault", "µs"];
    if wide {
        widths.insert(2, Constraint::Length(11));
        header.insert(2, "entity");
    }
    frame.render_widget(
        Table::new(rows, widths)
            .header(Row::new(header).style(theme.title()))
            .block(block(&format!("Traffic ({} shown)", visible.len()))),
        list,
    );
}

/// XML laid out one element per line, indented, for reading.
pub fn pretty_xml(xml: &str) -> String {
    let mut out = String::new();
    let mut depth: usize = 0;
    let mut rest = xml.trim();
    while let Some(start) = rest.find('<') {
        let text = rest[..start].trim();
        if !text.is_empty() {
            out.push_str(&"  ".repeat(depth));
            out.push_str(text);
            out.push('\n');
        }
        let Some(end) = rest[start..].find('>') else {
            break;
        };
        let tag = &rest[start..start + end + 1];
        let closing = tag.starts_with("</");
        let selfclosing = tag.ends_with("/>") || tag.starts_with("<?") || tag.starts_with("<!");
        if closing {
            depth = depth.saturating_sub(1);
        }
        // An element with only text inside stays on one line.
        let after = &rest[start + end + 1..];
        if !closing
            && !selfclosing
            && let Some(lt) = after.find('<')
            && after[lt..].starts_with("</")
            && !after[..lt].contains('>')
        {
            let close_end = after[lt..].find('>').map_or(after.len(), |e| lt + e + 1);
            out.push_str(&"  ".repeat(depth));
            out.push_str(tag);
            out.push_str(after[..lt].trim());
            out.push_str(&after[lt..close_end]);
            out.push('\n');
            rest = &after[close_end..];
            continue;
        }
        out.push_str(&"  ".repeat(depth));
        out.push_str(tag);
        out.push('\n');
        if !closing && !selfclosing {
            depth += 1;
        }
        rest = after;
    }
    out
}

fn exchange(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let Some(d) = &app.exchange else { return };
    let e = &d.exchange;
    let mut text = format!(
        "#{} {} {} entity {} nav {} → {} {} in {} µs from {}\n\nREQUEST\n",
        e.seq,
        format::when(e.at),
        e.operation,
        e.entity.as_deref().unwrap_or("-"),
        e.nav.as_deref().unwrap_or("-"),
        e.outcome,
        e.fault_code.as_deref().unwrap_or(""),
        e.latency_us,
        e.remote.as_deref().unwrap_or("-")
    );
    match &d.request {
        Some(r) => text.push_str(&pretty_xml(r)),
        None => text.push_str("(the messages of that day were pruned)\n"),
    }
    text.push_str("\nRESPONSE\n");
    if let Some(r) = &d.response {
        text.push_str(&pretty_xml(r));
    }
    let _ = theme;
    frame.render_widget(
        Paragraph::new(text)
            .block(block("Exchange"))
            .wrap(Wrap { trim: false })
            .scroll((app.exchange_scroll, 0)),
        area,
    );
}

fn positions(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let [input, list] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(area);
    frame.render_widget(
        input_line(
            "search (NAV, IUV, iupd, fiscal code, name): ",
            &app.search,
            app.focus == Focus::Input,
            theme,
        ),
        input,
    );
    let wide = list.width >= 120;
    let height = list.height.saturating_sub(3) as usize;
    let first = app.row_selected.saturating_sub(height.saturating_sub(1));
    let rows = app
        .rows
        .iter()
        .enumerate()
        .skip(first)
        .take(height.max(1))
        .map(|(i, r)| {
            let mut cells = vec![
                r.iupd.to_string(),
                r.debtor_name.clone(),
                format!("{:?}", r.status),
                format!("{:>10}", r.open_amount.to_string()),
            ];
            if wide {
                cells.insert(0, r.entity.to_string());
                cells.push(r.debtor_code.to_string());
                cells.push(r.navs.first().map(ToString::to_string).unwrap_or_default());
            }
            let row = Row::new(cells);
            if i == app.row_selected {
                row.style(theme.selected())
            } else {
                row
            }
        });
    let mut widths = vec![
        Constraint::Length(26),
        Constraint::Min(12),
        Constraint::Length(13),
        Constraint::Length(10),
    ];
    let mut header = vec!["iupd", "debtor", "status", "open"];
    if wide {
        widths.insert(0, Constraint::Length(11));
        widths.push(Constraint::Length(16));
        widths.push(Constraint::Length(18));
        header.insert(0, "entity");
        header.push("fiscal code");
        header.push("first notice");
    }
    frame.render_widget(
        Table::new(rows, widths)
            .header(Row::new(header).style(theme.title()))
            .block(block(&format!("Positions ({})", app.rows.len()))),
        list,
    );
}

fn position(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let Some(v) = &app.position else { return };
    let p = &v.position;
    let status = p.status(app.today);
    let mut lines = vec![
        Line::from(vec![
            Span::styled(format!("{}/{}", p.entity, p.iupd), theme.title()),
            Span::raw(format!("  {}  {:?}", p.kind, status)),
        ]),
        Line::from(p.description.clone()),
        Line::from(format!(
            "debtor {} {}  ·  open {}",
            p.debtor.code,
            p.debtor.name,
            format::euro(p.open_amount())
        )),
        Line::from(""),
    ];
    let mut n = 0;
    for (o, opt) in p.options.iter().enumerate() {
        lines.push(Line::styled(
            format!("option {} ({:?})", o + 1, opt.kind),
            theme.title(),
        ));
        for i in &opt.instalments {
            let state = p.instalment_status(i, app.today);
            let transfers: Vec<String> = i
                .terms
                .transfers
                .iter()
                .map(|t| format!("{} {}", t.beneficiary, t.amount))
                .collect();
            let line = format!(
                "  {}  due {}  {:>10}  still due {:>10}  {:?}  [{}]",
                i.terms.nav,
                i.terms.due,
                i.terms.amount,
                p.due(i),
                state,
                transfers.join(", ")
            );
            let style = if n == app.notice_selected {
                theme.selected()
            } else {
                Style::default()
            };
            lines.push(Line::styled(line, style));
            n += 1;
        }
    }
    for (nav, d) in p.double_payments() {
        lines.push(Line::styled(
            format!(
                "double payment: {nav} {} — {} ({:?})",
                d.receipt_id().unwrap_or("offline"),
                d.amount,
                d.arrival
            ),
            theme.bad(),
        ));
    }
    for r in p.refunds() {
        lines.push(Line::styled(
            format!(
                "refund due: {} transfer {} to {} — {}",
                r.nav, r.transfer, r.beneficiary, r.amount
            ),
            theme.bad(),
        ));
    }
    lines.push(Line::from(""));
    lines.push(Line::styled(
        format!("ledger ({} events)", v.ledger.len()),
        theme.title(),
    ));
    for e in &v.ledger {
        lines.push(Line::from(format!("  {}", format::event(&e.event))));
    }
    frame.render_widget(
        Paragraph::new(lines)
            .block(block("Position"))
            .wrap(Wrap { trim: false })
            .scroll((app.position_scroll, 0)),
        area,
    );
}

fn statement(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let [input, body] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(area);
    frame.render_widget(
        input_line(
            "fiscal code: ",
            &app.statement_input,
            app.focus == Focus::Input,
            theme,
        ),
        input,
    );
    let Some(s) = &app.statement else {
        frame.render_widget(
            Paragraph::new(
                "type / then a fiscal code: every position of that citizen, across entities",
            )
            .block(block("Statement")),
            body,
        );
        return;
    };
    let mut lines = vec![
        Line::styled(
            format!("{} — {} position(s)", s.debtor, s.totals.positions),
            theme.title(),
        ),
        Line::from(format!(
            "open {} € · paid via pagoPA {} € · paid offline {} € · refunds due {} €",
            s.totals.open_amount.text,
            s.totals.paid_pagopa.text,
            s.totals.paid_offline.text,
            s.totals.refunds_due.text
        )),
        Line::from(""),
    ];
    for p in &s.positions {
        lines.push(Line::from(format!(
            "{} {:<20} {:<14} open {:>10} €  {}",
            p.entity.fiscal_code,
            p.iupd,
            format!("{:?}", p.status),
            p.open_amount.text,
            p.description
        )));
    }
    if s.truncated {
        lines.push(Line::styled(
            "(more positions than a statement lists)",
            theme.bad(),
        ));
    }
    frame.render_widget(
        Paragraph::new(lines)
            .block(block("Statement"))
            .wrap(Wrap { trim: false }),
        body,
    );
}

fn jobs(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let rows = app.jobs.iter().map(|j| {
        let status = if j.file_error.is_some() {
            theme.bad()
        } else if j.status == "done" {
            theme.good()
        } else {
            Style::default()
        };
        Row::new(vec![
            Span::raw(format!("{:>5}", j.id)),
            Span::raw(j.entity.clone()),
            Span::raw(j.file.clone()),
            Span::styled(j.status.clone(), status),
            Span::raw(format!("{}/{}", j.rows_done, j.rows_total)),
            Span::raw(format!("{}", j.created + j.replaced)),
            Span::raw(format!("{}", j.rejected_rows)),
        ])
    });
    frame.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(5),
                Constraint::Length(11),
                Constraint::Min(10),
                Constraint::Length(11),
                Constraint::Length(15),
                Constraint::Length(8),
                Constraint::Length(8),
            ],
        )
        .header(
            Row::new(vec![
                "id", "entity", "file", "status", "rows", "loaded", "rejected",
            ])
            .style(theme.title()),
        )
        .block(block("Bulk jobs")),
        area,
    );
}

fn audit(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let [input, area] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(area);
    frame.render_widget(
        input_line(
            "operator (empty: all): ",
            &app.audit_operator,
            app.focus == Focus::Input,
            theme,
        ),
        input,
    );
    let rows = app.audit.iter().map(|r| {
        let outcome = if r.outcome == "ok" {
            theme.good()
        } else {
            theme.bad()
        };
        Row::new(vec![
            Span::raw(format::when(r.at)),
            Span::raw(format::actor(&r.actor)),
            Span::raw(r.action.clone()),
            Span::raw(r.target.clone()),
            Span::styled(r.outcome.clone(), outcome),
            Span::raw(r.reason.clone()),
        ])
    });
    frame.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(19),
                Constraint::Length(16),
                Constraint::Length(11),
                Constraint::Length(24),
                Constraint::Length(12),
                Constraint::Min(10),
            ],
        )
        .header(
            Row::new(vec!["when", "who", "action", "on", "outcome", "reason"]).style(theme.title()),
        )
        .block(block("Audit")),
        area,
    );
}

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

fn form(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let Some(f) = &app.form else { return };
    let mut lines = Vec::new();
    if let Some((nav, now)) = &f.nav {
        lines.push(Line::from(format!("notice {nav}, now {now}")));
        lines.push(Line::from(""));
    }
    if f.confirming {
        lines.push(Line::styled("Apply this change?", theme.title()));
        for s in f.summary() {
            lines.push(Line::from(format!("  {s}")));
        }
        lines.push(Line::from(format!(
            "  reason: {}",
            f.fields
                .iter()
                .find(|x| x.label == "reason")
                .map(|x| x.value.as_str())
                .unwrap_or("")
        )));
        lines.push(Line::from(""));
        lines.push(Line::styled("y apply · any other key back", theme.title()));
    } else {
        let fields = f.fields.iter().map(|x| (x.label, x.value.as_str()));
        field_lines(&mut lines, fields, f.focus, |i| f.problem(i), theme);
    }
    let area = centered(area, 76, (lines.len() as u16) + 2);
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(lines)
            .block(block(f.kind.title()))
            .wrap(Wrap { trim: false }),
        area,
    );
}

/// A form's fields, the focused one with the cursor, each followed by its problem once typed in.
fn field_lines<'a>(
    lines: &mut Vec<Line<'a>>,
    fields: impl Iterator<Item = (&'a str, &'a str)>,
    focus: usize,
    problem: impl Fn(usize) -> Option<String>,
    theme: Theme,
) {
    for (i, (label, value)) in fields.enumerate() {
        let focused = i == focus;
        let style = if focused {
            theme.title()
        } else {
            Style::default()
        };
        let mut spans = vec![
            Span::styled(format!("{label:>11}: "), style),
            Span::raw(value),
        ];
        if focused {
            spans.push(Span::raw("█"));
        }
        lines.push(Line::from(spans));
        if let Some(p) = problem(i).filter(|_| !value.is_empty() || focused) {
            lines.push(Line::styled(format!("             {p}"), theme.bad()));
        }
    }
}

fn worklist(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let w = &app.worklist;
    let [input, area] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(area);
    frame.render_widget(
        input_line(
            "filter (class=… min=€ age=days state=open|resolved|all): ",
            &w.filter,
            app.focus == Focus::Input,
            theme,
        ),
        input,
    );
    let rows = w
        .items
        .iter()
        .map(|item| {
            let fix = match &item.resolution {
                Some(r) => Span::styled(
                    format!("{} {} ({})", r.id, r.fix.name(), format::actor(&r.actor)),
                    theme.good(),
                ),
                None => Span::styled("open", theme.bad()),
            };
            Row::new(vec![
                Span::raw(item.class.clone()),
                Span::raw(format!("{:>12}", format::euro(Cents(item.amount)))),
                Span::raw(item.date.map(|d| d.to_string()).unwrap_or_default()),
                Span::raw(item.subject.clone()),
                Span::raw(
                    item.nav
                        .clone()
                        .or_else(|| item.flow_id.clone())
                        .or_else(|| item.reference.clone())
                        .unwrap_or_default(),
                ),
                fix,
                Span::raw(item.detail.clone()),
            ])
        })
        .collect();
    let columns = [
        ("class", 20),
        ("amount", 12),
        ("date", 10),
        ("subject", 9),
        ("notice/flow/ref", 24),
        ("fix", 22),
        ("detail", 0),
    ];
    let title = entity_title(app, "Worklist", w.items.len());
    let table = list_table(rows, w.selected, &columns, &title, area.height, theme);
    frame.render_widget(table, area);
}

/// A list's table: `columns` are (header, width; 0: the rest), the row `selected` highlighted
/// and kept in view.
fn list_table<'a>(
    rows: Vec<Row<'a>>,
    selected: usize,
    columns: &[(&'a str, u16)],
    title: &'a str,
    height: u16,
    theme: Theme,
) -> Table<'a> {
    let widths = columns.iter().map(|(_, w)| match w {
        0 => Constraint::Min(10),
        w => Constraint::Length(*w),
    });
    let header = Row::new(columns.iter().map(|(h, _)| *h)).style(theme.title());
    Table::new(selectable(rows, selected, height, theme), widths)
        .header(header)
        .block(block(title))
}

/// The entity the worklist, flows and treasury screens show, for their titles.
fn entity_title(app: &App, what: &str, count: usize) -> String {
    let w = &app.worklist;
    match w.entities.get(w.entity) {
        Some((cf, name)) => format!("{what} — {name} ({cf}) — {count}"),
        None => format!("{what} — no entity known yet"),
    }
}

/// A table's rows with `selected` highlighted and kept in view.
fn selectable<'a>(
    rows: Vec<Row<'a>>,
    selected: usize,
    height: u16,
    theme: Theme,
) -> impl Iterator<Item = Row<'a>> {
    let shown = usize::from(height.saturating_sub(3)).max(1);
    let skip = (selected + 1).saturating_sub(shown);
    rows.into_iter().enumerate().skip(skip).map(move |(i, r)| {
        if i == selected {
            r.style(theme.selected())
        } else {
            r
        }
    })
}

fn flows(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let r = &app.records;
    // Narrow: the flow, its rows, its total and its state.
    let wide = area.width >= 120;
    let rows = r
        .flows
        .iter()
        .map(|f| {
            let state = if let Some(e) = &f.error {
                Span::styled(format!("unreadable: {e}"), theme.bad())
            } else if !f.totals_agree {
                Span::styled("totals disagree", theme.bad())
            } else if f.anomalies > 0 {
                Span::styled(format!("{} anomalies", f.anomalies), theme.bad())
            } else {
                Span::styled("reconciled", theme.good())
            };
            let rows: usize = f.classes.values().sum();
            let mut cells = vec![
                Span::raw(f.flow_id.clone()),
                Span::raw(format!("{rows}/{}", f.declared_rows)),
                Span::raw(format!("{:>12}", format::euro(f.declared_total))),
            ];
            if wide {
                cells.extend([
                    Span::raw(f.time.clone()),
                    Span::raw(f.psp.clone().unwrap_or_default()),
                    Span::raw(if f.superseded { "revised" } else { "" }),
                    Span::raw(f.source.clone()),
                ]);
            }
            cells.push(state);
            Row::new(cells)
        })
        .collect();
    let columns: &[(&str, u16)] = if wide {
        &[
            ("flow", 26),
            ("rows", 9),
            ("total", 12),
            ("time", 20),
            ("psp", 10),
            ("", 7),
            ("source", 14),
            ("state", 0),
        ]
    } else {
        &[("flow", 26), ("rows", 9), ("total", 12), ("state", 0)]
    };
    let title = entity_title(app, "Reporting flows", r.flows.len());
    let table = list_table(rows, r.flow_selected, columns, &title, area.height, theme);
    frame.render_widget(table, area);
}

fn flow(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let r = &app.records;
    let Some(f) = r.open_flow() else { return };
    let revisions = r.open.as_ref().map_or(0, Vec::len);
    let [head, table] = Layout::vertical([Constraint::Length(5), Constraint::Min(3)]).areas(area);
    let classes: Vec<String> = f.classes.iter().map(|(c, n)| format!("{c} {n}")).collect();
    let lines = vec![
        Line::from(format!(
            "{}  {}  revision {revisions} of {revisions}  from {}  PSP {}",
            f.flow_id,
            f.time,
            f.source,
            f.psp.clone().unwrap_or_default()
        )),
        Line::from(vec![
            Span::raw(format!(
                "declared {} rows for {} · the rows say {} · ",
                f.declared_rows,
                format::euro(f.declared_total),
                format::euro(f.rows_total)
            )),
            if f.totals_agree {
                Span::styled("totals agree", theme.good())
            } else {
                Span::styled("totals disagree", theme.bad())
            },
        ]),
        Line::from(format!(
            "{}{}",
            classes.join(" · "),
            if f.bad_rows.is_empty() {
                String::new()
            } else {
                format!(" · {} rows unreadable", f.bad_rows.len())
            }
        )),
    ];
    frame.render_widget(Paragraph::new(lines).block(block("Flow")), head);
    let rows = f
        .rows
        .iter()
        .map(|row| {
            let style = theme.judged(row.class.is_anomaly());
            Row::new(vec![
                Span::raw(row.row.iuv.clone()),
                Span::raw(row.row.iur.clone()),
                Span::raw(row.row.transfer.to_string()),
                Span::raw(format!("{:>12}", format::euro(row.row.amount))),
                Span::raw(format!("{:?}", row.row.outcome)),
                Span::styled(row.class.name(), style),
                Span::raw(
                    row.iupd
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                ),
            ])
        })
        .collect();
    let columns = [
        ("IUV", 17),
        ("receipt (IUR)", 20),
        ("t", 2),
        ("amount", 12),
        ("outcome", 16),
        ("class", 24),
        ("position", 0),
    ];
    let title = format!("Rows ({})", f.rows.len());
    let rows = list_table(rows, r.row_selected, &columns, &title, table.height, theme);
    frame.render_widget(rows, table);
}

fn treasury(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let r = &app.records;
    let rows = r
        .movements
        .iter()
        .map(|m| {
            let style = theme.judged(m.class.is_anomaly());
            Row::new(vec![
                Span::raw(m.movement.booked.to_string()),
                Span::raw(format!("{:>12}", format::euro(Cents(m.movement.amount)))),
                Span::styled(m.class.name(), style),
                Span::raw(m.movement.reference.clone()),
                Span::raw(m.movement.remittance.clone()),
            ])
        })
        .collect();
    let columns = [
        ("booked", 10),
        ("amount", 12),
        ("class", 19),
        ("reference", 22),
        ("remittance", 0),
    ];
    let title = entity_title(app, "Treasury movements", r.movements.len());
    let table = list_table(
        rows,
        r.movement_selected,
        &columns,
        &title,
        area.height,
        theme,
    );
    frame.render_widget(table, area);
}

fn fix_form(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let Some(f) = &app.worklist.form else { return };
    let mut lines = vec![
        Line::from(format!(
            "{} {} — {}",
            f.item.class,
            format::euro(Cents(f.item.amount)),
            f.item.detail
        )),
        Line::styled(f.item.key.clone(), theme.dim()),
    ];
    if let Some(r) = &f.item.resolution {
        lines.push(Line::from(format!(
            "fix {} in force: {} by {} — {}",
            r.id,
            r.fix.name(),
            format::actor(&r.actor),
            r.reason
        )));
    }
    lines.push(Line::from(""));
    if f.confirming {
        lines.push(Line::styled(format!("{}?", f.kind.title()), theme.title()));
        for (label, value) in &f.fields {
            lines.push(Line::from(format!("  {label}: {}", value.trim())));
        }
        lines.push(Line::from(""));
        lines.push(Line::styled("y apply · any other key back", theme.title()));
    } else {
        let fields = f.fields.iter().map(|(l, v)| (*l, v.as_str()));
        field_lines(&mut lines, fields, f.focus, |i| f.problem(i), theme);
    }
    let area = centered(area, 86, (lines.len() as u16) + 2);
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(lines)
            .block(block(f.kind.title()))
            .wrap(Wrap { trim: false }),
        area,
    );
}

fn help(frame: &mut Frame, area: Rect, app: &App) {
    let mut lines: Vec<Line> = vec![
        Line::from("1-9, Tab   screens"),
        Line::from("/          search (positions, statement, traffic filter)"),
        Line::from("q, Esc     back; quit from the dashboard"),
        Line::from("?          these keys"),
        Line::from("Ctrl-C     quit"),
        Line::from(""),
    ];
    let role = match &app.connection {
        Connection::Connected(h) => Some(h.role),
        _ => None,
    };
    match app.screen {
        Screen::Positions => {
            lines.push(Line::from("↑↓ Enter   choose and open a position"));
            if role >= Some(Role::Operator) {
                lines.push(Line::from(
                    "r          reduce the selected notice (sgravio)",
                ));
                lines.push(Line::from("o          record an offline payment for it"));
                lines.push(Line::from(
                    "p          reschedule it into monthly instalments",
                ));
                lines.push(Line::from("d          correct the debtor's data"));
                lines.push(Line::from("c / R      cancel / restore the position"));
            } else {
                lines.push(Line::from("(adjustments need the operator role)"));
            }
            lines.push(Line::from("PgUp PgDn  scroll the ledger"));
        }
        Screen::Traffic => {
            lines.push(Line::from(
                "↑↓ Enter   choose an exchange, read its messages",
            ));
            lines.push(Line::from(
                "/          filter: entity=CF op=paSendRTV2 outcome=KO nav=N",
            ));
        }
        Screen::Jobs | Screen::Audit => lines.push(Line::from("g          refresh")),
        Screen::Flows | Screen::Treasury => {
            lines.push(Line::from("e          next entity · g refresh"));
            lines.push(Line::from(
                "↑↓ Enter   choose a flow, read its rows and their classes",
            ));
        }
        Screen::Worklist => {
            lines.push(Line::from(
                "/          filter: class=unknown-iuv min=10 age=3 state=all",
            ));
            lines.push(Line::from("e          next entity · g refresh"));
            if role >= Some(Role::Operator) {
                lines.push(Line::from("l          link the item to an instalment"));
                lines.push(Line::from("f / a      refund due / accept the difference"));
                lines.push(Line::from("t          attach a credit to a flow"));
                lines.push(Line::from("v          receipt recovery asked for"));
                lines.push(Line::from("x          dismiss with a note"));
                lines.push(Line::from("u          undo the fix in force"));
            } else {
                lines.push(Line::from("(fixes need the operator role)"));
            }
        }
        _ => {}
    }
    let area = centered(area, 66, lines.len() as u16 + 2);
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(lines).block(block(&format!("Keys — {}", app.screen.title()))),
        area,
    );
}
