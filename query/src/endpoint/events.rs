//! New results of one endpoint call as a stream, for clients that would rather listen than
//! poll (server-sent events over HTTP).
//!
//! The stream sends the current result at once, then waits for a commit of this process,
//! other news (another process's commit, a definition, a change of rights) or the end of a
//! live source's time bucket, waits out the debounce pause, and sends the new result if it
//! differs from the last one sent. It ends when the hub shuts down or when the caller may
//! no longer call the endpoint.

use std::sync::Arc;
use std::time::Duration;

use cityhub_catalog::Principal;
use futures::Stream;
use tokio::sync::watch;

use super::EndpointError;
use super::service::{Call, Endpoints};

/// What a listener receives.
#[derive(Debug)]
pub enum EndpointEvent {
    /// A new result: `id` is its key (the `ETag` without quotes and format), `json` the
    /// JSON result.
    Result { id: String, json: String },
    /// The result could not be computed (the stream stays for the next change), or the
    /// endpoint went away or is no longer shared (the stream ends after it).
    Error(EndpointError),
}

impl Endpoints {
    /// The results of `name` called with `query` by `caller`, as they change. The call is
    /// checked first, so that its mistakes are errors here rather than events. A client
    /// reconnecting with the id it saw last (`last_seen`) gets nothing until it changes.
    pub async fn listen(
        self: &Arc<Self>,
        caller: Principal,
        name: String,
        query: Vec<(String, String)>,
        last_seen: Option<String>,
    ) -> Result<impl Stream<Item = EndpointEvent> + Send + use<>, EndpointError> {
        let loaded = self.callable(&caller, &name).await?;
        self.call(loaded, &query, &caller)?;
        let (mut commits, mut news) = self.subscribe();
        commits.mark_unchanged();
        news.mark_unchanged();
        let listener = Listener {
            closing: self.closing(),
            endpoints: self.clone(),
            caller,
            name,
            query,
            commits,
            news,
            last_tag: last_seen,
            last_content: None,
            live_until: None,
            first: true,
            ended: false,
            _open: OpenStream::open("cityhub_endpoint_streams"),
        };
        Ok(futures::stream::unfold(
            listener,
            |mut listener| async move {
                let event = listener.next_event().await?;
                Some((event, listener))
            },
        ))
    }
}

/// Counts a stream in the gauge it names while it is open (a stream and this with it are
/// dropped when the client goes away).
pub struct OpenStream(&'static str);

impl OpenStream {
    pub fn open(gauge: &'static str) -> Self {
        metrics::gauge!(gauge).increment(1.0);
        OpenStream(gauge)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        metrics::gauge!(self.0).decrement(1.0);
    }
}

struct Listener {
    endpoints: Arc<Endpoints>,
    caller: Principal,
    name: String,
    query: Vec<(String, String)>,
    commits: watch::Receiver<u64>,
    news: watch::Receiver<u64>,
    closing: watch::Receiver<bool>,
    last_tag: Option<String>,
    last_content: Option<u64>,
    live_until: Option<i64>,
    first: bool,
    ended: bool,
    _open: OpenStream,
}

impl Listener {
    /// Waits for the next result worth sending (or an error to report); `None` ends the
    /// stream.
    async fn next_event(&mut self) -> Option<EndpointEvent> {
        if self.ended || *self.closing.borrow() {
            return None;
        }
        loop {
            if !self.first && !self.wait_for_change().await {
                return None;
            }
            self.first = false;
            let call = match self.call().await {
                Ok(call) => call,
                Err(err) => {
                    // The endpoint went away or is no longer shared: say so and stop.
                    self.ended = true;
                    return Some(EndpointEvent::Error(err));
                }
            };
            self.live_until = call.live_until;
            if self.last_tag.as_deref() == Some(call.tag.as_str()) {
                continue;
            }
            match self.endpoints.fresh(&call).await {
                Ok(result) => {
                    self.last_tag = Some(call.tag.clone());
                    if self.last_content == Some(result.content_hash) {
                        continue;
                    }
                    self.last_content = Some(result.content_hash);
                    self.endpoints.audit_delivery(&self.caller, &call, &result);
                    let json = String::from_utf8_lossy(result.json()).into_owned();
                    return Some(EndpointEvent::Result { id: call.tag, json });
                }
                // A failed computation is reported; the stream stays for the next change.
                Err(err) => return Some(EndpointEvent::Error(err)),
            }
        }
    }

    async fn call(&self) -> Result<Call, EndpointError> {
        let loaded = self.endpoints.callable(&self.caller, &self.name).await?;
        self.endpoints.call(loaded, &self.query, &self.caller)
    }

    /// Waits for a commit, other news, or the end of a live source's time bucket, then for
    /// the debounce pause. `false` when the hub is shutting down.
    async fn wait_for_change(&mut self) -> bool {
        let live = async {
            match self.live_until {
                Some(until) => {
                    let wait = until
                        .saturating_sub(cityhub_catalog::camera::now_ms())
                        .max(0);
                    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = self.commits.changed() => if changed.is_err() { return false },
            changed = self.news.changed() => if changed.is_err() { return false },
            _ = self.closing.wait_for(|closing| *closing) => return false,
            _ = live => {}
        }
        let pause = Duration::from_millis(self.endpoints.config().debounce_ms);
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        self.commits.mark_unchanged();
        self.news.mark_unchanged();
        true
    }
}
