//! The audit writer: callers hand over events without waiting for the database, one task
//! writes them in batches (one transaction per batch), and [`AuditLog::flush`] waits until
//! everything handed over so far is stored: readers of the log flush first, and so does a
//! shutting-down server, so no handed-over event is lost by a clean stop.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::Catalog;
use crate::sharing::AuditEvent;

/// At most this many events go into one transaction.
const BATCH: usize = 1024;

enum Message {
    Event(Box<AuditEvent>),
    Flush(oneshot::Sender<()>),
}

/// A handle on the audit writer; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    sender: mpsc::UnboundedSender<Message>,
}

impl AuditLog {
    /// Starts the writer task on the current tokio runtime.
    pub fn start(catalog: Catalog) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(catalog, receiver));
        Self { sender }
    }

    /// Hands an event to the writer.
    pub fn record(&self, event: AuditEvent) {
        metrics::counter!("cityhub_audit_events_total", "action" => event.action.clone())
            .increment(1);
        if self.sender.send(Message::Event(Box::new(event))).is_err() {
            tracing::error!("The audit writer has stopped; an audit event was not recorded.");
        }
    }

    /// Waits until every event recorded before this call is stored.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.sender.send(Message::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

async fn write_loop(catalog: Catalog, mut receiver: mpsc::UnboundedReceiver<Message>) {
    let mut events = Vec::new();
    let mut flushes = Vec::new();
    while let Some(first) = receiver.recv().await {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Event(event) => events.push(*event),
                Message::Flush(done) => flushes.push(done),
            }
            if events.len() < BATCH {
                next = receiver.try_recv().ok();
            }
        }
        store(&catalog, &mut events).await;
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Stores a batch, retrying until the catalog takes it: an audit event is never dropped
/// because the database was briefly locked or unavailable.
async fn store(catalog: &Catalog, events: &mut Vec<AuditEvent>) {
    if events.is_empty() {
        return;
    }
    let mut delay = Duration::from_millis(50);
    loop {
        match catalog.append_audit(events.clone()).await {
            Ok(()) => {
                events.clear();
                return;
            }
            Err(err) => {
                tracing::error!(
                    error = %err,
                    pending = events.len(),
                    "Could not write audit events; retrying."
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
