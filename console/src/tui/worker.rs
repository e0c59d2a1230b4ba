//! The console's connection, off the drawing thread: it connects (and reconnects by itself
//! when the daemon restarts), follows the live feed by long polling from its cursor (kept
//! across reconnections, so nothing is lost or repeated), asks for the status every second,
//! and runs the screen's requests. Answers go back to the drawing loop as `Reply`s.

use std::sync::mpsc::Sender;
use std::time::Duration;

use mpay_common::console::rpc::ConsoleClient;
use mpay_common::console::{Cursor, TrafficFilter};
use mpay_common::worklist::Worklist;
use tokio::sync::mpsc::UnboundedReceiver;

use super::app::{Reply, Request};
use crate::client::{self, Target, deadline};

/// Runs until the drawing loop drops its end of `requests`.
pub async fn run(target: Target, mut requests: UnboundedReceiver<Request>, replies: Sender<Reply>) {
    let mut cursor: Option<Cursor> = None;
    loop {
        let connection = match client::connect_to(&target).await {
            Ok(c) => c,
            Err(e) => {
                if replies.send(Reply::Lost(format!("{e:#}"))).is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let client = connection.client;
        if replies.send(Reply::Connected(connection.hello)).is_err() {
            return;
        }
        // The newest traffic to start the screen with.
        spawn_call(
            &client,
            &replies,
            Request::Traffic(TrafficFilter::default()),
        );
        spawn_call(&client, &replies, Request::Entities);
        let (lost_tx, mut lost) = tokio::sync::mpsc::channel::<String>(1);
        let follower = tokio::spawn(follow(
            client.clone(),
            replies.clone(),
            cursor,
            lost_tx.clone(),
        ));
        let poller = tokio::spawn(poll_status(client.clone(), replies.clone(), lost_tx));
        let why = loop {
            tokio::select! {
                r = requests.recv() => match r {
                    Some(request) => spawn_call(&client, &replies, request),
                    None => {
                        follower.abort();
                        poller.abort();
                        return;
                    }
                },
                Some(why) = lost.recv() => break why,
            }
        };
        poller.abort();
        cursor = follower.await.ok().flatten().or(cursor);
        if replies.send(Reply::Lost(why)).is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Events a screen takes at a time, and how often it asks.
const FEED_PAGE: u32 = 100;
const FEED_PACE: Duration = Duration::from_millis(100);

/// Long-polls the live feed; returns the cursor reached when the connection fails.
async fn follow(
    client: ConsoleClient,
    replies: Sender<Reply>,
    cursor: Option<Cursor>,
    lost: tokio::sync::mpsc::Sender<String>,
) -> Option<Cursor> {
    let mut cursor = match cursor {
        Some(c) => c,
        None => match client.status(deadline(10)).await {
            Ok(Ok(s)) => s.cursor,
            Ok(Err(e)) => {
                let _ = lost.send(e.message).await;
                return None;
            }
            Err(e) => {
                let _ = lost.send(format!("mpayd did not answer: {e}")).await;
                return None;
            }
        },
    };
    loop {
        // A screen shows the newest exchanges: ask for the tail, at most ten times a second,
        // so that a console costs the station little however busy it is.
        let asked = tokio::time::Instant::now();
        match client
            .events(deadline(10), cursor, FEED_PAGE, 5000, true)
            .await
        {
            Ok(Ok(page)) => {
                tokio::time::sleep_until(asked + FEED_PACE).await;
                cursor = page.next;
                if !page.events.is_empty() && replies.send(Reply::Events(page.events)).is_err() {
                    return Some(cursor);
                }
            }
            Ok(Err(e)) => {
                let _ = lost.send(e.message).await;
                return Some(cursor);
            }
            Err(e) => {
                let _ = lost.send(format!("connection lost: {e}")).await;
                return Some(cursor);
            }
        }
    }
}

async fn poll_status(
    client: ConsoleClient,
    replies: Sender<Reply>,
    lost: tokio::sync::mpsc::Sender<String>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        match client.status(deadline(5)).await {
            Ok(Ok(s)) => {
                if replies.send(Reply::Status(Box::new(s))).is_err() {
                    return;
                }
            }
            Ok(Err(e)) => {
                let _ = lost.send(e.message).await;
                return;
            }
            Err(e) => {
                let _ = lost.send(format!("connection lost: {e}")).await;
                return;
            }
        }
    }
}

fn spawn_call(client: &ConsoleClient, replies: &Sender<Reply>, request: Request) {
    let (client, replies) = (client.clone(), replies.clone());
    tokio::spawn(async move {
        let reply = call(&client, request).await;
        let _ = replies.send(reply);
    });
}

async fn call(c: &ConsoleClient, request: Request) -> Reply {
    let what = match &request {
        Request::Search(_) => "search",
        Request::Position(_) => "position",
        Request::Adjust(_, a) => a.action(),
        Request::Statement(_) => "statement",
        Request::Jobs => "jobs",
        Request::Audit(_) => "audit",
        Request::Exchange(_) => "exchange",
        Request::Traffic(_) => "traffic",
        Request::Entities => "entities",
        Request::Worklist(..) => "worklist",
        Request::Resolve(_, _, f, _) => f.name(),
        Request::Flows(_) | Request::Flow(..) => "flows",
        Request::Movements(_) => "treasury",
    };
    let refused = |e: mpay_common::console::RpcError| Reply::Refused(what.into(), e);
    let failed = |e: tarpc::client::RpcError| {
        Reply::Refused(
            what.into(),
            mpay_common::console::RpcError::new("UNREACHABLE", format!("no answer: {e}")),
        )
    };
    macro_rules! answer {
        ($call:expr, $ok:expr) => {
            match $call.await {
                Ok(Ok(v)) => $ok(v),
                Ok(Err(e)) => refused(e),
                Err(e) => failed(e),
            }
        };
    }
    match request {
        Request::Search(s) => answer!(c.search(deadline(10), s), Reply::Rows),
        Request::Position(k) => answer!(c.position(deadline(10), k), |v| Reply::Position(
            Box::new(v)
        )),
        Request::Adjust(k, a) => answer!(c.adjust(deadline(30), k, a), |v| Reply::Adjusted(
            Box::new(v)
        )),
        Request::Statement(cf) => answer!(c.statement(deadline(10), cf, None), |s| {
            Reply::Statement(Box::new(s))
        }),
        Request::Jobs => answer!(c.jobs(deadline(10), 200), Reply::Jobs),
        Request::Audit(operator) => {
            answer!(c.audit(deadline(10), operator, None, 500), Reply::Audit)
        }
        Request::Exchange(seq) => answer!(c.exchange(deadline(10), seq), |d| Reply::Exchange(
            Box::new(d)
        )),
        Request::Traffic(f) => answer!(c.traffic(deadline(10), f, None, 500), Reply::Traffic),
        Request::Entities => answer!(c.entities(deadline(10)), Reply::Entities),
        Request::Worklist(cf, q) => answer!(c.worklist(deadline(30), cf, q), |w: Worklist| {
            Reply::Worklist(w.items)
        }),
        Request::Flows(cf) => answer!(c.flows(deadline(30), cf), Reply::Flows),
        Request::Flow(cf, id) => answer!(c.flow(deadline(30), cf, id), Reply::Flow),
        Request::Movements(cf) => answer!(c.movements(deadline(30), cf), Reply::Movements),
        Request::Resolve(cf, key, fix, reason) => {
            answer!(c.resolve(deadline(30), cf, key, fix, reason), |r| {
                Reply::Resolved(Box::new(r))
            })
        }
    }
}
